//! Snapshots delivered in several objects (issue 10, item 2): AWS-style `…-00001.csv.gz`
//! parts and Huawei-style `…_1.csv` parts are one snapshot, loaded and replaced together; a part
//! that changes, appears or disappears reloads the whole snapshot; Tencent's numbered L3
//! downloads are parts too. After every step the incremental lake equals a fresh load.

mod common;

use std::path::Path;

use billpipe::generate::{write_detail_csv, write_focus_csv, GenerateOptions};
use common::*;
use rust_decimal::Decimal;

const A: &str = "400000000001";

/// The Tencent pipeline plus two families whose snapshots come in parts.
fn parts_pipeline(dir: &Path) -> String {
    pipeline_with(
        dir,
        r#"
[[family]]
name = "focus-monthly-parts"
unit = "tencent"
pattern = 'FOCUS-bill_details-(?P<account>\d+)-(?P<month>\d{6})-(?P<part>\d{5})\.csv\.gz'
snapshot = "final"

[[family]]
name = "focus-monthly-numbered"
unit = "tencent"
pattern = 'FOCUS-bill_details-(?P<account>\d+)-(?P<month>\d{6})_(?P<part>\d+)\.csv'
snapshot = "final"
"#,
    )
}

fn month(seed: u64) -> (Vec<u8>, (u64, Decimal)) {
    let opts = GenerateOptions {
        account: A.into(),
        month: "2025-11".into(),
        through_day: None,
        rows_per_day: 5,
        seed,
        bad_rows: vec![],
        restated: false,
        gaps: true,
    };
    let mut out = Vec::new();
    let s = write_focus_csv(&opts, &mut out).unwrap();
    (
        out,
        (
            s.rows,
            Decimal::from_i128_with_scale(s.billed_cost_e8, 8).normalize(),
        ),
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn totals(parts: &[Vec<u8>]) -> (u64, Decimal) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = (0, Decimal::ZERO);
    for (i, p) in parts.iter().enumerate() {
        let f = dir.path().join(format!("{i}.csv"));
        std::fs::write(&f, p).unwrap();
        let t = csv_totals(&f);
        all.0 += t.rows;
        all.1 += t.billed;
    }
    (all.0, all.1.normalize())
}

fn nov(lake: &Path) -> (u64, Decimal) {
    let sums = local_lake_sums(lake);
    let (rows, cost) = sums[&("2025-11".to_string(), A.to_string())];
    (rows, cost.normalize())
}

/// `billpipe run` into `lake`, and a fresh load of the same folder must agree.
fn step(src: &Path, lake: &Path, pipeline: &str) -> serde_json::Value {
    let args = ["--pipeline", pipeline];
    let (out, report) = run_job(src.to_str().unwrap(), lake.to_str().unwrap(), &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let fresh = tempfile::tempdir().unwrap();
    run_job(src.to_str().unwrap(), fresh.path().to_str().unwrap(), &args);
    assert_eq!(
        nov(lake),
        nov(fresh.path()),
        "incremental != fresh\n{}",
        out.stdout
    );
    report
}

#[test]
fn a_month_in_parts_is_one_snapshot() {
    let conf = tempfile::tempdir().unwrap();
    let pipeline = parts_pipeline(conf.path());
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let (whole, whole_totals) = month(1);
    let parts = split_csv(&whole, 3);
    let key = |n: usize| format!("FOCUS-bill_details-{A}-202511-{n:05}.csv.gz");
    for (i, p) in parts.iter().enumerate() {
        std::fs::write(src.path().join(key(i + 1)), gzip(p)).unwrap();
    }
    let report = step(src.path(), lake.path(), &pipeline);
    assert_eq!(nov(lake.path()), whole_totals, "all three parts, once");
    let outcomes: Vec<&str> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ingest", "ingest", "ingest"], "{report:#}");
    // Nothing changed: nothing reloaded.
    let report = step(src.path(), lake.path(), &pipeline);
    assert_eq!(report["totals"]["ingested"], 0);
    assert_eq!(report["totals"]["replaced"], 0);

    // Part 2 restated: the whole snapshot is reloaded from the three current parts.
    let (other, _) = month(2);
    let restated = split_csv(&other, 3);
    std::fs::write(src.path().join(key(2)), gzip(&restated[1])).unwrap();
    let report = step(src.path(), lake.path(), &pipeline);
    assert_eq!(report["totals"]["replaced"], 3, "{report:#}");
    let now = [parts[0].clone(), restated[1].clone(), parts[2].clone()];
    assert_eq!(nov(lake.path()), totals(&now));

    // A fourth part appears: reloaded with it.
    let extra = split_csv(&month(3).0, 4).remove(3);
    std::fs::write(src.path().join(key(4)), gzip(&extra)).unwrap();
    step(src.path(), lake.path(), &pipeline);
    let now = [now[0].clone(), now[1].clone(), now[2].clone(), extra];
    assert_eq!(nov(lake.path()), totals(&now));
}

#[test]
fn numbered_parts_and_split_l3_downloads_load_together() {
    let conf = tempfile::tempdir().unwrap();
    let pipeline = parts_pipeline(conf.path());
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let (whole, whole_totals) = month(4);
    for (i, p) in split_csv(&whole, 2).iter().enumerate() {
        let name = format!("FOCUS-bill_details-{A}-202511_{}.csv", i + 1);
        std::fs::write(src.path().join(name), p).unwrap();
    }
    step(src.path(), lake.path(), &pipeline);
    assert_eq!(nov(lake.path()), whole_totals);

    // Tencent L3 downloads of one customer and month, numbered: one snapshot.
    let l3 = "800000000042";
    let opts = GenerateOptions {
        account: l3.into(),
        month: "2025-11".into(),
        through_day: None,
        rows_per_day: 4,
        seed: 5,
        bad_rows: vec![],
        restated: false,
        gaps: false,
    };
    let mut csv = Vec::new();
    let s = write_detail_csv(&opts, false, &mut csv).unwrap();
    for (i, p) in split_csv(&csv, 3).iter().enumerate() {
        let name = format!("L3-bill_details-{l3}-202511-{:04}-download.csv", i + 1);
        std::fs::write(src.path().join(name), p).unwrap();
    }
    let (out, _) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &["--pipeline", &pipeline],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let sums = local_lake_sums(lake.path());
    assert_eq!(
        sums[&("2025-11".to_string(), l3.to_string())],
        (s.rows, Decimal::from_i128_with_scale(s.billed_cost_e8, 8)),
        "{}",
        out.stdout
    );
}

/// The same against the real S3 server: parts PUT one by one, a restated part re-PUT.
#[test]
fn parts_from_s3() {
    let conf = tempfile::tempdir().unwrap();
    let pipeline = parts_pipeline(conf.path());
    let ctx = s3_context();
    let bucket = s3_bucket(&ctx, "parts");
    let uri = format!("s3://{bucket}");
    let mut args: Vec<String> = s3_args();
    args.extend(["--pipeline".to_string(), pipeline]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lake = tempfile::tempdir().unwrap();
    let key = |n: usize| format!("exports/FOCUS-bill_details-{A}-202511-{n:05}.csv.gz");
    let (whole, whole_totals) = month(6);
    let parts = split_csv(&whole, 3);
    for (i, p) in parts.iter().enumerate() {
        s3_put(&ctx, &bucket, &key(i + 1), gzip(p));
    }
    let (out, _) = run_job(&uri, lake.path().to_str().unwrap(), &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(nov(lake.path()), whole_totals);
    let restated = split_csv(&month(7).0, 3);
    s3_put(&ctx, &bucket, &key(3), gzip(&restated[2]));
    let (out, report) = run_job(&uri, lake.path().to_str().unwrap(), &args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(report["totals"]["replaced"], 3);
    let fresh = tempfile::tempdir().unwrap();
    run_job(&uri, fresh.path().to_str().unwrap(), &args);
    let now = [parts[0].clone(), parts[1].clone(), restated[2].clone()];
    assert_eq!(nov(lake.path()), totals(&now));
    assert_eq!(nov(fresh.path()), totals(&now));
}
