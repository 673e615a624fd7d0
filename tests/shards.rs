//! Sharded runs (`run --shard I/N`): three shard processes started at once load one lake — a
//! local folder and a Garage S3 prefix — and the lake equals a single-process load of the same
//! bucket, exactly; a shard killed mid-run and run again leaves it exact; the lock of one shard
//! never blocks another, while a whole-lake run and a shard exclude each other, and so do
//! shards of two splits (`I/2` beside `J/3`).

mod common;

use std::path::Path;
use std::process::{Child, Command};

use billpipe::generate::{object_name, write_focus_csv, GenerateOptions};
use common::*;

const MONTHS: [&str; 3] = ["2025-09", "2025-10", "2025-11"];

/// 60 accounts × 3 months of monthly FOCUS files.
fn bucket() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for a in 0..60u64 {
        let account = format!("9100{a:08}");
        for (m, month) in MONTHS.iter().enumerate() {
            let opts = GenerateOptions {
                account: account.clone(),
                month: (*month).into(),
                through_day: None,
                rows_per_day: 1,
                seed: a * 3 + m as u64,
                bad_rows: vec![],
                restated: false,
                gaps: false,
            };
            let mut csv = Vec::new();
            write_focus_csv(&opts, &mut csv).unwrap();
            let name = object_name(&account, month, None).unwrap();
            std::fs::write(dir.path().join(name), csv).unwrap();
        }
    }
    dir
}

fn shard_run(src: &str, dest: &str, shard: &str, extra: &[String], kill: Option<&str>) -> Child {
    let mut cmd = Command::new(bin());
    cmd.args([
        "run", "-q", "--source", src, "--dest", dest, "--shard", shard,
    ])
    .args(extra)
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if let Some(point) = kill {
        cmd.env("BILLPIPE_FAULT_KILL_AT", point);
    }
    cmd.spawn().unwrap()
}

/// Starts the three shards at once and returns their exit codes.
fn three_shards(src: &str, dest: &str, extra: &[String], kill_1: Option<&str>) -> Vec<i32> {
    let children: Vec<Child> = (0..3)
        .map(|i| {
            let kill = if i == 1 { kill_1 } else { None };
            shard_run(src, dest, &format!("{i}/3"), extra, kill)
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code().unwrap_or(-9))
        .collect()
}

fn single_load(src: &Path) -> Sums {
    let lake = tempfile::tempdir().unwrap();
    let (out, _) = run_job(src.to_str().unwrap(), lake.path().to_str().unwrap(), &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let sums = local_lake_sums(lake.path());
    assert_eq!(sums.len(), 180);
    sums
}

#[test]
fn three_shards_at_once_load_a_local_lake_as_one_process_does() {
    let src = bucket();
    let expected = single_load(src.path());
    let source = src.path().to_str().unwrap();

    let lake = tempfile::tempdir().unwrap();
    let dest = lake.path().to_str().unwrap();
    assert_eq!(three_shards(source, dest, &[], None), vec![0, 0, 0]);
    assert_eq!(local_lake_sums(lake.path()), expected);
    // `state` sees every shard's units; nothing is left to load.
    let out = billpipe(&["state", "--dest", dest, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let units = serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap();
    assert_eq!(units.as_object().map(|u| u.len()), Some(180), "{units}");
    let (out, report) = run_job(source, dest, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(report["totals"]["ingested"], 0, "{report}");
    assert_eq!(report["totals"]["replaced"], 0, "{report}");

    // Shard 1 killed as it publishes: its rerun leaves the lake exact.
    let lake = tempfile::tempdir().unwrap();
    let dest = lake.path().to_str().unwrap();
    let codes = three_shards(source, dest, &[], Some("publish"));
    assert_eq!((codes[0], codes[2]), (0, 0), "{codes:?}");
    assert_ne!(codes[1], 0, "shard 1 was killed");
    assert_ne!(
        local_lake_sums(lake.path()),
        expected,
        "shard 1's units are missing"
    );
    let rerun = shard_run(source, dest, "1/3", &[], None)
        .wait_with_output()
        .unwrap();
    assert_eq!(rerun.status.code(), Some(0));
    assert_eq!(local_lake_sums(lake.path()), expected);
}

#[test]
fn one_shards_lock_never_blocks_another_but_the_whole_lake_run_waits_for_them() {
    let src = bucket();
    let source = src.path().to_str().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let dest = lake.path().to_str().unwrap();
    // A live lock of shard 1 (this test process holds it: its pid is alive).
    let locks = lake.path().join("_billpipe/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let held = serde_json::json!({
        "owner": "test-holder",
        "host": billpipe::state::lock::hostname(),
        "pid": std::process::id(),
        "command": "run",
        "started_at": now,
        "heartbeat_at": now,
        "pid_namespace": billpipe::state::lock::pid_namespace(),
    });
    std::fs::write(locks.join("shard-1-of-3.json"), held.to_string()).unwrap();
    let other = shard_run(source, dest, "2/3", &[], None)
        .wait_with_output()
        .unwrap();
    assert_eq!(
        other.status.code(),
        Some(0),
        "shard 2 is not blocked by shard 1"
    );
    let same = shard_run(source, dest, "1/3", &[], None)
        .wait_with_output()
        .unwrap();
    assert_eq!(
        same.status.code(),
        Some(4),
        "shard 1 is locked by its live holder"
    );
    // Nor does a shard of another split: `0/2` and `1/3` share units.
    let split = billpipe(&["run", "--source", source, "--dest", dest, "--shard", "0/2"]);
    assert_eq!(split.code, 4, "another split waits: {}", split.stderr);
    assert!(
        split.stderr.contains("another split than shard-0-of-2"),
        "{}",
        split.stderr
    );
    // A whole-lake run does not load beside a live shard.
    let out = billpipe(&["run", "--source", source, "--dest", dest]);
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("a sharded run test-holder") && out.stderr.contains("shard-1-of-3"),
        "{}",
        out.stderr
    );
}

#[test]
fn three_shards_at_once_load_an_s3_lake_as_one_process_does() {
    let src = bucket();
    let expected = single_load(src.path());
    let ctx = s3_context();
    let bucket = s3_bucket(&ctx, "shards");
    let dest = format!("s3://{bucket}/lake");
    let args = s3_args();
    let source = src.path().to_str().unwrap();
    assert_eq!(three_shards(source, &dest, &args, None), vec![0, 0, 0]);
    assert_eq!(s3_lake_sums(&ctx, &bucket, "lake/"), expected);
    // Killed and rerun on S3 too.
    let bucket = s3_bucket(&ctx, "shardskill");
    let dest = format!("s3://{bucket}/lake");
    let codes = three_shards(source, &dest, &args, Some("publish"));
    assert_ne!(codes[1], 0, "{codes:?}");
    let rerun = shard_run(source, &dest, "1/3", &args, None)
        .wait_with_output()
        .unwrap();
    assert_eq!(rerun.status.code(), Some(0));
    assert_eq!(s3_lake_sums(&ctx, &bucket, "lake/"), expected);
}
