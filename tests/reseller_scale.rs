//! A reseller's consolidated bill with hundreds of customers interleaved (issue 12): every
//! customer's partition is exact to the cent against the generator's totals, through run files
//! (a tiny write budget makes the writer spill many times), and a re-delivery of the month
//! without 10 customers leaves exactly those 10 partitions gone and replaces all the others.

mod common;

use std::path::Path;

use billpipe::generate::{
    consolidated_object_name, customer_ids, write_consolidated_zip, GenerateOptions,
};
use common::*;
use rust_decimal::Decimal;

const RESELLER: &str = "500000000009";
const MONTH: &str = "2025-11";

/// Spill every 64 KB, two open writers: nearly every customer goes through run files.
const SMALL: &[(&str, &str)] = &[
    ("BILLPIPE_WRITE_BUDGET", "65536"),
    ("BILLPIPE_WRITE_OPEN", "2"),
];

/// Writes a consolidated bill of `customers` into `src`, delivered `seconds` after the first;
/// returns what the lake must hold: (rows, BilledCost) per partition.
fn deliver(src: &Path, seed: u64, customers: &[String], seconds: u64) -> Sums {
    let opts = GenerateOptions {
        account: RESELLER.into(),
        month: MONTH.into(),
        through_day: None,
        rows_per_day: 1,
        seed,
        bad_rows: vec![],
        restated: false,
        gaps: false,
    };
    let name = consolidated_object_name(RESELLER, MONTH, seed).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(&name);
    let stats = write_consolidated_zip(&opts, customers, &path).unwrap();
    put_at(src, &name, &std::fs::read(&path).unwrap(), seconds);
    stats
        .customers
        .iter()
        .map(|(c, s)| {
            let cost = Decimal::from_i128_with_scale(s.billed_cost_e8, 8).normalize();
            ((MONTH.to_string(), c.clone()), (s.rows, cost))
        })
        .collect()
}

/// `billpipe run` with the small write budget; the run must succeed.
fn run(source: &str, dest: &str, extra: &[&str]) {
    let mut args = vec!["run", "--source", source, "--dest", dest];
    args.extend_from_slice(extra);
    let out = billpipe_env(&args, SMALL);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
}

/// Files under `dir` whose name starts with `prefix`.
fn files_named(dir: &Path, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                stack.push(e.path());
            } else if name.starts_with(prefix) {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

fn check_redelivery(before: &Sums, after: &Sums, expected: &Sums, gone: &[String]) {
    assert_eq!(
        after, expected,
        "the lake is the re-delivered bill, exactly"
    );
    let vanished: Vec<&String> = before
        .keys()
        .filter(|k| !after.contains_key(*k))
        .map(|k| &k.1)
        .collect();
    assert_eq!(vanished, gone.iter().collect::<Vec<_>>());
    for (key, sums) in after {
        assert_ne!(before.get(key), Some(sums), "{key:?} was replaced");
    }
}

#[test]
fn three_hundred_customers_exact_and_replaced_as_one_snapshot() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let (src_s, lake_s) = (src.path().to_str().unwrap(), lake.path().to_str().unwrap());
    let customers = customer_ids(300);
    let first = deliver(src.path(), 1, &customers, 100);
    assert_eq!(first.len(), 300);
    run(src_s, lake_s, &[]);
    let before = normalized_sums(lake.path());
    assert_eq!(before, first, "every customer exact to the cent");
    // The month again, without the first 10 customers, other numbers (another seed).
    let second = deliver(src.path(), 2, &customers[10..], 200);
    run(src_s, lake_s, &[]);
    let after = normalized_sums(lake.path());
    check_redelivery(&before, &after, &second, &customers[..10]);
    // The 290 files the commit replaced were set aside, not freed (`store::set_aside`); the
    // next run frees them, whether it has anything to load or not, and the lake stays as it is.
    let replaced = lake.path().join("_billpipe/replaced");
    assert_eq!(files_named(&replaced, "").len(), 290);
    run(src_s, lake_s, &[]);
    assert_eq!(files_named(&replaced, ""), Vec::<String>::new());
    assert_eq!(normalized_sums(lake.path()), after);
    // What a fresh load of the same bucket gives, and no run file left anywhere.
    let fresh = tempfile::tempdir().unwrap();
    run(src_s, fresh.path().to_str().unwrap(), &[]);
    assert_eq!(normalized_sums(fresh.path()), after);
    assert_eq!(files_named(lake.path(), "run-"), Vec::<String>::new());
    assert_eq!(files_named(fresh.path(), "run-"), Vec::<String>::new());
}

/// The same through the S3 test server: source and lake in buckets.
#[test]
fn three_hundred_customers_through_an_s3_lake() {
    let ctx = s3_context();
    let src = tempfile::tempdir().unwrap();
    let customers = customer_ids(300);
    let first = deliver(src.path(), 1, &customers, 100);
    let source = s3_mirror(src.path(), "reseller-src");
    let lake_bucket = s3_bucket(&ctx, "reseller-lake");
    let dest = format!("s3://{lake_bucket}/lake");
    let args = s3_args();
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&source, &dest, &extra);
    let normalized = |sums: Sums| -> Sums {
        sums.into_iter()
            .map(|(k, (rows, cost))| (k, (rows, cost.normalize())))
            .collect()
    };
    let before = normalized(s3_lake_sums(&ctx, &lake_bucket, "lake/"));
    assert_eq!(before, first);
    let second_dir = tempfile::tempdir().unwrap();
    let second = deliver(second_dir.path(), 2, &customers[10..], 200);
    let name = consolidated_object_name(RESELLER, MONTH, 2).unwrap();
    let bucket = source.trim_start_matches("s3://");
    s3_put(
        &ctx,
        bucket,
        &name,
        std::fs::read(second_dir.path().join(&name)).unwrap(),
    );
    run(&source, &dest, &extra);
    let after = normalized(s3_lake_sums(&ctx, &lake_bucket, "lake/"));
    check_redelivery(&before, &after, &second, &customers[..10]);
}
