//! End to end against a real S3 server (Garage on 127.0.0.1, started by scripts/test.sh or
//! scripts/s3-server.sh): s3:// → s3:// and s3:// → local, snapshot replacement with exact
//! totals, idempotence, and listings longer than one page.

mod common;

use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use billpipe::generate::{object_name, write_focus_csv, GenerateOptions};
use billpipe::store::s3::S3Context;
use common::*;

/// Rows per day that make a Parquet file over 5 MiB (about 40 MB of CSV).
const ROWS_FOR_MULTIPART: u64 = 2600;

/// Generates a snapshot locally (to know its exact totals) and uploads it.
fn deliver(
    ctx: &S3Context,
    bucket: &str,
    work: &Path,
    account: &str,
    month: &str,
    through: Option<u32>,
    restated: bool,
) -> CsvTotals {
    let name = object_name(account, month, through).unwrap();
    let path = work.join(&name);
    let opts = GenerateOptions {
        account: account.into(),
        month: month.into(),
        through_day: through,
        rows_per_day: 9,
        seed: 7,
        bad_rows: vec![],
        restated,
        gaps: false,
    };
    write_focus_csv(&opts, std::fs::File::create(&path).unwrap()).unwrap();
    s3_put(
        ctx,
        bucket,
        &format!("cos-bills/{name}"),
        std::fs::read(&path).unwrap(),
    );
    csv_totals(&path)
}

fn job(source: &str, dest: &str) -> serde_json::Value {
    let args = s3_args();
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, report) = run_job(source, dest, &extra);
    assert!(
        out.code == 0,
        "exit {}\n{}\n{}",
        out.code,
        out.stdout,
        out.stderr
    );
    report
}

fn assert_sums(sums: &Sums, expected: &[(&str, &str, &CsvTotals)]) {
    assert_eq!(sums.len(), expected.len(), "{sums:?}");
    for (period, account, t) in expected {
        let got = &sums[&(period.to_string(), account.to_string())];
        assert_eq!(got.0, t.rows, "{period}/{account} rows");
        assert_eq!(
            got.1.normalize(),
            t.billed.normalize(),
            "{period}/{account} BilledCost"
        );
    }
}

#[test]
fn s3_to_s3_and_to_local_follow_snapshots_exactly() {
    let ctx = s3_context();
    let src = s3_bucket(&ctx, "bills");
    let dst = s3_bucket(&ctx, "lake");
    let work = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let source = format!("s3://{src}/cos-bills");
    let dest = format!("s3://{dst}/lake");
    let local_dest = local.path().to_str().unwrap().to_string();
    let (a, b) = ("100000000001", "100000000002");

    let check = |expected: &[(&str, &str, &CsvTotals)]| {
        assert_sums(&s3_lake_sums(&ctx, &dst, "lake/"), expected);
        assert_sums(&local_lake_sums(local.path()), expected);
    };

    // Several dailies: only the newest of each account counts.
    deliver(&ctx, &src, work.path(), a, "2025-11", Some(4), false);
    let a_d8 = deliver(&ctx, &src, work.path(), a, "2025-11", Some(8), false);
    let b_d8 = deliver(&ctx, &src, work.path(), b, "2025-11", Some(8), false);
    job(&source, &dest);
    job(&source, &local_dest);
    check(&[("2025-11", a, &a_d8), ("2025-11", b, &b_d8)]);

    // The monthly replaces the dailies.
    let a_m = deliver(&ctx, &src, work.path(), a, "2025-11", None, false);
    let r = job(&source, &dest);
    assert_eq!(r["totals"]["replaced"], 1);
    job(&source, &local_dest);
    check(&[("2025-11", a, &a_m), ("2025-11", b, &b_d8)]);

    // A late, older daily changes nothing.
    deliver(&ctx, &src, work.path(), a, "2025-11", Some(20), false);
    let r = job(&source, &dest);
    assert_eq!(r["totals"]["replaced"], 0);
    job(&source, &local_dest);
    check(&[("2025-11", a, &a_m), ("2025-11", b, &b_d8)]);

    // A re-delivered object with changed content replaces its own load.
    let b_d8_new = deliver(&ctx, &src, work.path(), b, "2025-11", Some(8), true);
    assert_ne!(b_d8_new.billed, b_d8.billed);
    let r = job(&source, &dest);
    assert_eq!(r["totals"]["replaced"], 1);
    job(&source, &local_dest);
    check(&[("2025-11", a, &a_m), ("2025-11", b, &b_d8_new)]);

    // Nothing new: no lake object is rewritten (same ETags and modification times).
    let before = s3_list(&ctx, &dst, "lake/");
    let r = job(&source, &dest);
    assert_eq!(r["totals"]["ingested"], 0);
    assert_eq!(r["totals"]["replaced"], 0);
    assert_eq!(s3_list(&ctx, &dst, "lake/"), before);
    assert!(before.contains_key("lake/_billpipe/ledger.json"));
}

#[test]
fn listings_longer_than_one_page_find_every_bill_file() {
    let ctx = s3_context();
    let src = s3_bucket(&ctx, "many");
    let work = tempfile::tempdir().unwrap();
    // 1,030 other objects interleaved with 24 bill files, so bill files sit on both pages.
    let keys: Vec<String> = (0..1030)
        .map(|i| format!("bills/{:04}-other.txt", i))
        .collect();
    ctx.runtime.block_on(async {
        for chunk in keys.chunks(64) {
            let puts = chunk.iter().map(|k| {
                ctx.client
                    .put_object()
                    .bucket(&src)
                    .key(k)
                    .body(ByteStream::from_static(b"x"))
                    .send()
            });
            for r in futures_join(puts).await {
                r.unwrap();
            }
        }
    });
    let mut expected = Vec::new();
    for i in 0..24u32 {
        let account = format!("9000000{:05}", i * 37);
        let name = object_name(&account, "2025-12", Some(2)).unwrap();
        let opts = GenerateOptions {
            account: account.clone(),
            month: "2025-12".into(),
            through_day: Some(2),
            rows_per_day: 1,
            seed: 3,
            bad_rows: vec![],
            restated: false,
            gaps: false,
        };
        let path = work.path().join(&name);
        write_focus_csv(&opts, std::fs::File::create(&path).unwrap()).unwrap();
        // A folder named after a neighbouring "other" object, so the bills sort among them.
        let key = format!("bills/{:04}-day/{name}", i * 43);
        s3_put(&ctx, &src, &key, std::fs::read(&path).unwrap());
        expected.push(key);
    }
    for v2 in [false, true] {
        let lake = tempfile::tempdir().unwrap();
        let mut args = s3_args();
        if v2 {
            args.push("--list-v2".into());
        }
        let extra: Vec<&str> = args.iter().map(String::as_str).collect();
        let (out, report) = run_job(
            &format!("s3://{src}/bills"),
            lake.path().to_str().unwrap(),
            &extra,
        );
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert_eq!(report["totals"]["objects"], 1054, "v2={v2}");
        let ingested: Vec<String> = report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["outcome"] == "ingest")
            .map(|o| o["key"].as_str().unwrap().to_string())
            .collect();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(ingested, want, "v2={v2}");
        assert_eq!(local_lake_sums(lake.path()).len(), 24);
    }
}

/// Awaits futures concurrently without pulling in the futures crate.
async fn futures_join<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[test]
fn large_lake_files_go_up_as_multipart_uploads() {
    let ctx = s3_context();
    let src = s3_bucket(&ctx, "big");
    let dst = s3_bucket(&ctx, "biglake");
    let work = tempfile::tempdir().unwrap();
    let account = "100000000009";
    let name = object_name(account, "2025-10", None).unwrap();
    let path = work.path().join(&name);
    let opts = GenerateOptions {
        account: account.into(),
        month: "2025-10".into(),
        through_day: None,
        rows_per_day: ROWS_FOR_MULTIPART,
        seed: 5,
        bad_rows: vec![],
        restated: false,
        gaps: false,
    };
    write_focus_csv(&opts, std::fs::File::create(&path).unwrap()).unwrap();
    s3_put(&ctx, &src, &name, std::fs::read(&path).unwrap());
    let mut args = s3_args();
    args.extend(["--part-mb".to_string(), "5".to_string()]);
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, _) = run_job(&format!("s3://{src}"), &format!("s3://{dst}"), &extra);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let objects = s3_list(&ctx, &dst, "billing_period=");
    assert_eq!(objects.len(), 1, "{objects:?}");
    let (key, (etag, _)) = objects.iter().next().unwrap();
    let size = ctx
        .runtime
        .block_on(ctx.client.head_object().bucket(&dst).key(key).send())
        .unwrap()
        .content_length()
        .unwrap();
    assert!(
        size > 5 << 20,
        "the Parquet file ({size} bytes) must exceed one part"
    );
    assert!(etag.contains('-'), "multipart ETag expected, got {etag}");
    assert_sums(
        &s3_lake_sums(&ctx, &dst, ""),
        &[("2025-10", account, &csv_totals(&path))],
    );
}

#[test]
fn the_lock_and_state_work_on_an_s3_lake() {
    let ctx = s3_context();
    let src = s3_bucket(&ctx, "lsrc");
    let dst = s3_bucket(&ctx, "llake");
    let work = tempfile::tempdir().unwrap();
    let a_d5 = deliver(
        &ctx,
        &src,
        work.path(),
        "100000000005",
        "2025-12",
        Some(5),
        false,
    );
    let source = format!("s3://{src}/cos-bills");
    let dest = format!("s3://{dst}/lake");

    // A live run elsewhere holds the lock: refused with exit 4, nothing written.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let held = serde_json::json!({"owner": "other-run", "host": "other-host", "pid": 1, "command": "run",
        "started_at": now, "heartbeat_at": now});
    s3_put(
        &ctx,
        &dst,
        "lake/_billpipe/lock.json",
        held.to_string().into_bytes(),
    );
    let args = s3_args();
    let mut run_args = vec!["run", "--source", &source, "--dest", &dest];
    run_args.extend(args.iter().map(String::as_str));
    let out = billpipe(&run_args);
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("locked by another billpipe run other-run on host other-host"),
        "{}",
        out.stderr
    );
    assert!(!s3_list(&ctx, &dst, "lake/")
        .keys()
        .any(|k| k.ends_with(".parquet")));

    // The same lock, its heartbeat long stale: taken over, the run loads, the lock is released.
    let stale = serde_json::json!({"owner": "other-run", "host": "other-host", "pid": 1, "command": "run",
        "started_at": now - 3600, "heartbeat_at": now - 3600});
    s3_put(
        &ctx,
        &dst,
        "lake/_billpipe/lock.json",
        stale.to_string().into_bytes(),
    );
    let out = billpipe(&run_args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("taking over a stale lock"),
        "{}",
        out.stderr
    );
    assert!(!s3_list(&ctx, &dst, "lake/").contains_key("lake/_billpipe/lock.json"));
    assert_sums(
        &s3_lake_sums(&ctx, &dst, "lake/"),
        &[("2025-12", "100000000005", &a_d5)],
    );

    // state reads the S3 ledger.
    let mut state_args = vec!["state", "--dest", &dest, "--json"];
    state_args.extend(args.iter().map(String::as_str));
    let out = billpipe(&state_args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let state: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let unit = &state["tencent/100000000005/2025-12"];
    assert_eq!(unit["rows_loaded"], a_d5.rows);
    assert_eq!(
        unit["billed_cost"]
            .as_str()
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap(),
        a_d5.billed.normalize()
    );
}

#[test]
fn a_missing_bucket_bad_credentials_or_no_endpoint_fail_in_one_line_writing_nothing() {
    let ctx = s3_context();
    let src = s3_bucket(&ctx, "errs");
    s3_put(&ctx, &src, "x.txt", b"x".to_vec());
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("lake");
    let dest_s = dest.to_str().unwrap();
    let ep = s3_endpoint();
    // (what, arguments, environment, expected in the error line)
    type Case<'a> = (&'a str, Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "missing source bucket",
            vec![
                "--source".into(),
                "s3://no-such-bucket-billpipe".into(),
                "--dest".into(),
                dest_s.into(),
            ],
            vec![],
            "NoSuchBucket (HTTP 404)",
        ),
        (
            "wrong secret",
            vec![
                "--source".into(),
                format!("s3://{src}"),
                "--dest".into(),
                dest_s.into(),
            ],
            vec![(
                "AWS_SECRET_ACCESS_KEY",
                "0000000000000000000000000000000000000000000000000000000000000000",
            )],
            "check the credentials",
        ),
        (
            "unreachable endpoint",
            vec![
                "--source".into(),
                format!("s3://{src}"),
                "--dest".into(),
                dest_s.into(),
                "--endpoint".into(),
                "http://127.0.0.1:9".into(),
            ],
            vec![],
            "cannot reach the endpoint",
        ),
        (
            "missing lake bucket",
            vec![
                "--source".into(),
                format!("s3://{src}"),
                "--dest".into(),
                "s3://no-such-lake-billpipe/x".into(),
            ],
            vec![],
            "NoSuchBucket (HTTP 404)",
        ),
    ];
    for (what, args, env, expected) in cases {
        let mut all: Vec<&str> = vec!["run"];
        all.extend(args.iter().map(String::as_str));
        all.extend(["--region", "garage", "--path-style"]);
        if !args.iter().any(|a| a == "--endpoint") {
            all.extend(["--endpoint", &ep]);
        }
        let out = billpipe_env(&all, &env);
        assert_eq!(out.code, 1, "{what}: {}{}", out.stdout, out.stderr);
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("billpipe: error"))
            .collect();
        assert_eq!(errors.len(), 1, "{what}: {}", out.stderr);
        assert!(
            errors[0].contains(expected),
            "{what}: {:?} lacks {expected:?}",
            errors[0]
        );
        assert!(!dest.exists(), "{what}: the lake folder was created");
    }
}

#[test]
fn validate_reads_s3_objects_compressed_or_not() {
    let ctx = s3_context();
    let bucket = s3_bucket(&ctx, "validate");
    let work = tempfile::tempdir().unwrap();
    deliver(
        &ctx,
        &bucket,
        work.path(),
        "100000000007",
        "2025-12",
        Some(4),
        false,
    );
    let name = object_name("100000000007", "2025-12", Some(4)).unwrap();
    let plain = std::fs::read(work.path().join(&name)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    s3_put(&ctx, &bucket, "gz/bill.CSV", gz.finish().unwrap());
    let args = s3_args();
    let plain_uri = format!("s3://{bucket}/cos-bills/{name}");
    let gz_uri = format!("s3://{bucket}/gz/bill.CSV");
    let mut all = vec![
        "validate",
        "--profile",
        "tencent",
        "--json",
        plain_uri.as_str(),
        gz_uri.as_str(),
    ];
    all.extend(args.iter().map(String::as_str));
    let out = billpipe(&all);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for f in v["files"].as_array().unwrap() {
        assert_eq!(f["rows"], 36, "{f}");
        assert_eq!(f["rules"]["NotNull.EffectiveCost"]["severity"], "warning");
    }
    // The strict profile fails the same object on Tencent's gaps...
    let mut strict = vec!["validate", "--profile", "strict", plain_uri.as_str()];
    strict.extend(args.iter().map(String::as_str));
    assert_eq!(billpipe(&strict).code, 3);
    // ...and without --profile a key a family takes is judged with its pipeline's profile, as
    // `run` would load it.
    let mut family = vec!["validate", plain_uri.as_str()];
    family.extend(args.iter().map(String::as_str));
    assert_eq!(billpipe(&family).code, 0);
}
