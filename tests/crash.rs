//! Crash safety: billpipe is SIGKILLed at every step of replacing a snapshot (during the
//! download, while writing, after publishing the first partition, before removing replaced files,
//! before the ledger update) and at random moments. After every kill, a reader globbing
//! `billing_period=*/**/*.parquet` must see each partition wholly old or wholly new - one whole,
//! readable file, never two, never a half - and the next run must end with exact totals.

mod common;

use std::path::Path;
use std::process::Command;

use billpipe::generate::{object_name, write_focus_csv, GenerateOptions};
use common::*;
use rust_decimal::Decimal;

const A: &str = "700000000001";
const B: &str = "700000000002";

/// The Tencent pipeline with its FOCUS families declared `accounts = "many"`, so a file of
/// unit (A, month) may carry rows of account B (a group bill, as a reseller's consolidated bill
/// does): one replacement then touches two partitions.
fn group_pipeline() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/tencent.toml"),
        )
        .unwrap()
        .replace(
            "name = \"focus-daily\"\n",
            "name = \"focus-daily\"\naccounts = \"many\"\n",
        )
        .replace(
            "name = \"focus-monthly\"\n",
            "name = \"focus-monthly\"\naccounts = \"many\"\n",
        );
        let declared = text.matches("accounts = \"many\"").count();
        assert!(declared >= 4, "both FOCUS families declared: {declared}");
        let path =
            std::env::temp_dir().join(format!("billpipe-crash-group-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    })
}

/// `billpipe run` with the group pipeline, `src` into `lake`.
fn run_group(src: &Path, lake: &Path) -> Output {
    run_group_with(src, lake, &[])
}

fn run_group_with(src: &Path, lake: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--pipeline",
        group_pipeline(),
        "--source",
        src.to_str().unwrap(),
        "--dest",
        lake.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    billpipe(&args)
}

/// A snapshot of unit (A, 2025-12) holding rows of accounts A and B (a group bill), so one
/// replacement touches two partitions. Returns the expected sums per partition.
fn deliver(src: &Path, through: Option<u32>, with_b: bool, rows_per_day: u64) -> Sums {
    let gen = |account: &str| {
        let mut out = Vec::new();
        let opts = GenerateOptions {
            account: account.into(),
            month: "2025-12".into(),
            through_day: through,
            rows_per_day,
            seed: 99,
            bad_rows: vec![],
            restated: false,
            gaps: false,
        };
        write_focus_csv(&opts, &mut out).unwrap();
        out
    };
    let mut file = gen(A);
    if with_b {
        let b = gen(B);
        let header_end = b.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        file.extend_from_slice(&b[header_end..]);
    }
    // Earlier snapshots of the unit stay in the bucket, as they do in real buckets.
    let name = object_name(A, "2025-12", through).unwrap();
    std::fs::write(src.join(&name), &file).unwrap();
    let lake = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(&name), &file).unwrap();
    let out = run_group(dir.path(), lake.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    local_lake_sums(lake.path())
}

fn killed_run(src: &Path, lake: &Path, point: &str) {
    let status = Command::new(bin())
        .args([
            "run",
            "--pipeline",
            group_pipeline(),
            "--source",
            src.to_str().unwrap(),
            "--dest",
            lake.to_str().unwrap(),
        ])
        .env("BILLPIPE_FAULT_KILL_AT", point)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
        .status;
    assert_eq!(
        status.code(),
        None,
        "the run must have been killed at {point}"
    );
}

/// What a reader sees: each partition's file must be whole, alone, and either `old` or `new`.
fn assert_consistent(lake: &Path, old: &Sums, new: &Sums, context: &str) {
    let files = lake_files(lake);
    let mut seen = std::collections::BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(lake).unwrap().to_string_lossy().into_owned();
        let dir = rel.rsplit_once('/').unwrap().0.to_string();
        assert!(seen.insert(dir.clone()), "{context}: two files in {dir}");
    }
    let sums = local_lake_sums(lake); // panics on a half-written Parquet file
    for (partition, got) in &sums {
        let ok = old.get(partition) == Some(got) || new.get(partition) == Some(got);
        assert!(
            ok,
            "{context}: {partition:?} = {got:?} is neither old {:?} nor new {:?}",
            old.get(partition),
            new.get(partition)
        );
    }
    // A partition may be missing only where one side has none (wholly old or wholly new).
    for partition in old.keys().filter(|p| new.contains_key(*p)) {
        assert!(
            sums.contains_key(partition),
            "{context}: {partition:?} vanished"
        );
    }
}

fn finish_and_check(src: &Path, lake: &Path, expected: &Sums, context: &str) -> String {
    let out = run_group(src, lake);
    assert_eq!(out.code, 0, "{context}: {}{}", out.stdout, out.stderr);
    assert_eq!(
        &local_lake_sums(lake),
        expected,
        "{context}: totals after the next run"
    );
    assert_eq!(
        std::fs::read_dir(lake.join("_billpipe/staging"))
            .unwrap()
            .count(),
        0,
        "{context}: staging left behind"
    );
    assert!(!lake.join("_billpipe/lock.json").exists());
    out.stdout
}

#[test]
fn a_kill_at_any_step_of_a_replacement_leaves_whole_snapshots() {
    for point in ["fetch", "write", "publish", "cleanup", "ledger"] {
        let src = tempfile::tempdir().unwrap();
        let lake = tempfile::tempdir().unwrap();
        let s1 = deliver(src.path(), Some(3), true, 40);
        finish_and_check(src.path(), lake.path(), &s1, "first load");

        // Daily 6 replaces daily 3 in both partitions.
        let s2 = deliver(src.path(), Some(6), true, 40);
        assert_ne!(s1, s2);
        killed_run(src.path(), lake.path(), point);
        assert_consistent(
            lake.path(),
            &s1,
            &s2,
            &format!("kill at {point}, daily->daily"),
        );
        finish_and_check(
            src.path(),
            lake.path(),
            &s2,
            &format!("after kill at {point}"),
        );

        // The monthly has only account A: B's partition must go, but never before A is new.
        let s3 = deliver(src.path(), None, false, 40);
        killed_run(src.path(), lake.path(), point);
        assert_consistent(
            lake.path(),
            &s2,
            &s3,
            &format!("kill at {point}, daily->monthly"),
        );
        finish_and_check(
            src.path(),
            lake.path(),
            &s3,
            &format!("after kill at {point} (monthly)"),
        );
    }
}

/// A first load killed after publishing (no ledger entry yet), then a bucket whose best
/// snapshot of the unit no longer has account B: the next run loads that one, and B's file from
/// the killed run — which no ledger entry names — goes, so the lake equals a fresh load.
#[test]
fn files_of_a_killed_first_load_go_when_another_snapshot_replaces_it() {
    for point in ["publish", "cleanup", "ledger"] {
        let src = tempfile::tempdir().unwrap();
        let lake = tempfile::tempdir().unwrap();
        deliver(src.path(), Some(3), true, 40);
        killed_run(src.path(), lake.path(), point);
        let monthly = deliver(src.path(), None, false, 40);
        finish_and_check(
            src.path(),
            lake.path(),
            &monthly,
            &format!("kill at {point}, then the monthly without B"),
        );
    }
}

/// A replacement killed after publishing, and then the bill that was being loaded leaves the
/// bucket: the unit's ledger entry names the old snapshot, the unit's best object is that old
/// one, unchanged — and still the next run reloads it, because the killed commit's intent says
/// the lake may hold something else. A first load killed so, whose bill then leaves the bucket,
/// leaves nothing behind.
#[test]
fn a_killed_commit_is_undone_even_when_its_bill_leaves_the_bucket() {
    for point in ["publish", "cleanup", "ledger"] {
        let src = tempfile::tempdir().unwrap();
        let lake = tempfile::tempdir().unwrap();
        let s1 = deliver(src.path(), Some(3), true, 40);
        finish_and_check(src.path(), lake.path(), &s1, "first load");
        deliver(src.path(), Some(6), false, 40);
        killed_run(src.path(), lake.path(), point);
        std::fs::remove_file(src.path().join(object_name(A, "2025-12", Some(6)).unwrap())).unwrap();
        let said = finish_and_check(
            src.path(),
            lake.path(),
            &s1,
            &format!("kill at {point}, then day 6 withdrawn"),
        );
        // The report says what was found and done (also in the JSON, `repairs`).
        assert!(
            said.contains("REPAIRED: ")
                && said.contains("is reloaded, even if its bill did not change"),
            "{point}: {said}"
        );

        let src = tempfile::tempdir().unwrap();
        let lake = tempfile::tempdir().unwrap();
        deliver(src.path(), Some(3), true, 40);
        killed_run(src.path(), lake.path(), point);
        std::fs::remove_file(src.path().join(object_name(A, "2025-12", Some(3)).unwrap())).unwrap();
        let said = finish_and_check(
            src.path(),
            lake.path(),
            &Sums::new(),
            &format!("first load killed at {point}, then withdrawn"),
        );
        assert!(
            said.contains("REPAIRED: ")
                && said.contains(
                    "its bill is no longer in the bucket, or outside --from/--to); removed"
                ),
            "{point}: {said}"
        );
    }
}

/// The same first load, interrupted and withdrawn, then the lake loaded by two shards one after
/// the other: the shard the unit belongs to removes the files (its intent names the unit), the
/// other leaves them alone.
#[test]
fn a_shard_removes_its_own_interrupted_first_load_only() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    deliver(src.path(), Some(3), true, 40);
    killed_run(src.path(), lake.path(), "cleanup");
    std::fs::remove_file(src.path().join(object_name(A, "2025-12", Some(3)).unwrap())).unwrap();
    let published = lake_files(lake.path()).len();
    assert_eq!(published, 2, "the killed commit published both partitions");
    let mut removed_by = Vec::new();
    for shard in ["0/2", "1/2"] {
        let before = lake_files(lake.path()).len();
        let out = run_group_with(src.path(), lake.path(), &["--shard", shard]);
        assert_eq!(out.code, 0, "{shard}: {}{}", out.stdout, out.stderr);
        let after = lake_files(lake.path()).len();
        if out
            .stdout
            .contains("its bill is no longer in the bucket, or outside --from/--to); removed")
        {
            assert_eq!(after, 0, "{shard}: {}", out.stdout);
            removed_by.push(shard);
        } else {
            assert_eq!(
                after, before,
                "{shard} removed another shard's files: {}",
                out.stdout
            );
        }
    }
    assert_eq!(removed_by.len(), 1, "exactly one shard owns the unit");
    assert_eq!(local_lake_sums(lake.path()), Sums::new());
    assert_eq!(
        std::fs::read_dir(lake.path().join("_billpipe/publishing"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "the intent goes with the files"
    );
}

/// A first load killed after publishing, and then the unit's only bill in the bucket is one
/// that is rejected: a fresh load has nothing of the unit, so the killed load's files go at the
/// end of the run that tried (they were kept while it might load the unit).
#[test]
fn files_of_a_killed_first_load_go_when_every_later_snapshot_is_rejected() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    deliver(src.path(), Some(3), true, 40);
    killed_run(src.path(), lake.path(), "cleanup");
    assert_eq!(lake_files(lake.path()).len(), 2);
    std::fs::remove_file(src.path().join(object_name(A, "2025-12", Some(3)).unwrap())).unwrap();
    std::fs::write(
        src.path().join(object_name(A, "2025-12", Some(6)).unwrap()),
        "this is not a FOCUS file\n",
    )
    .unwrap();
    let out = run_group(src.path(), lake.path());
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("every snapshot of the unit this run tried was rejected; removed"),
        "{}",
        out.stdout
    );
    assert_eq!(local_lake_sums(lake.path()), Sums::new());
    assert_eq!(lake_files(lake.path()), Vec::<std::path::PathBuf>::new());
}

/// An intent object that names a file not of its unit (damaged, or edited by hand: here one
/// outside the lake) makes that unit's commit refuse, and deletes nothing — not even the
/// unit's own files it lists beside it.
#[test]
fn an_intent_naming_other_files_deletes_nothing() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let s1 = deliver(src.path(), Some(3), true, 40);
    finish_and_check(src.path(), lake.path(), &s1, "first load");
    let victim = lake
        .path()
        .parent()
        .unwrap()
        .join(format!("billpipe-victim-{}.txt", std::process::id()));
    std::fs::write(&victim, "keep me").unwrap();
    let other = lake_files(lake.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains(B))
        .unwrap();
    let other_rel = other
        .strip_prefix(lake.path())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let intents = lake.path().join("_billpipe/publishing");
    std::fs::create_dir_all(&intents).unwrap();
    let unit_stem = other.file_stem().unwrap().to_str().unwrap().to_string();
    let bad = serde_json::json!([
        other_rel,
        format!("../{}", victim.file_name().unwrap().to_str().unwrap())
    ]);
    std::fs::write(intents.join(format!("{unit_stem}.json")), bad.to_string()).unwrap();
    deliver(src.path(), Some(6), true, 40);
    let out = run_group(src.path(), lake.path());
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("is not one of this unit's files"),
        "{}",
        out.stdout
    );
    assert!(victim.exists(), "a file outside the lake was deleted");
    assert!(other.exists(), "a partition file was deleted");
    std::fs::remove_file(&victim).unwrap();
}

#[test]
fn kills_at_random_moments_never_leave_a_mixed_lake() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let s1 = deliver(src.path(), Some(2), true, 3000);
    finish_and_check(src.path(), lake.path(), &s1, "first load");
    let s2 = deliver(src.path(), Some(9), true, 3000);
    // Delays spread over a debug-build run of this size (about a second or two).
    for (i, delay_ms) in [5u64, 40, 90, 150, 250, 400, 600, 900]
        .into_iter()
        .enumerate()
    {
        let mut child = Command::new(bin())
            .args([
                "run",
                "--pipeline",
                group_pipeline(),
                "--source",
                src.path().to_str().unwrap(),
                "--dest",
                lake.path().to_str().unwrap(),
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        assert_consistent(
            lake.path(),
            &s1,
            &s2,
            &format!("random kill #{i} after {delay_ms} ms"),
        );
    }
    finish_and_check(src.path(), lake.path(), &s2, "after random kills");
    let total: Decimal = s2.values().map(|v| v.1).sum();
    assert!(total > Decimal::ZERO);
}

/// The same kills with the lake on the S3 server: each partition object is replaced by one PUT,
/// so a reader listing the lake sees old or new objects, never a mix within a partition.
#[test]
fn a_kill_at_any_step_leaves_an_s3_lake_whole() {
    let ctx = s3_context();
    let args = s3_args();
    for point in ["fetch", "publish", "cleanup", "ledger"] {
        let bucket = s3_bucket(&ctx, "crashlake");
        let dest = format!("s3://{bucket}/lake");
        let src = tempfile::tempdir().unwrap();
        let run = |kill: Option<&str>| {
            let mut cmd = Command::new(bin());
            cmd.args([
                "run",
                "--pipeline",
                group_pipeline(),
                "--source",
                src.path().to_str().unwrap(),
                "--dest",
                &dest,
            ])
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
            if let Some(p) = kill {
                cmd.env("BILLPIPE_FAULT_KILL_AT", p);
            }
            cmd.output().unwrap()
        };
        let consistent = |old: &Sums, new: &Sums, context: &str| {
            let sums = s3_lake_sums(&ctx, &bucket, "lake/");
            let mut dirs = std::collections::BTreeSet::new();
            for key in s3_list(&ctx, &bucket, "lake/billing_period=").keys() {
                let dir = key.rsplit_once('/').unwrap().0.to_string();
                assert!(dirs.insert(dir.clone()), "{context}: two objects in {dir}");
            }
            for (partition, got) in &sums {
                assert!(
                    old.get(partition) == Some(got) || new.get(partition) == Some(got),
                    "{context}: {partition:?} is neither old nor new"
                );
            }
            for partition in old.keys().filter(|p| new.contains_key(*p)) {
                assert!(
                    sums.contains_key(partition),
                    "{context}: {partition:?} vanished"
                );
            }
        };
        let s1 = deliver(src.path(), Some(3), true, 30);
        assert_eq!(run(None).status.code(), Some(0));
        let s2 = deliver(src.path(), None, false, 30);
        let killed = run(Some(point));
        assert_eq!(killed.status.code(), None, "not killed at {point}");
        consistent(&s1, &s2, &format!("S3 lake, kill at {point}"));
        let out = run(None);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            s3_lake_sums(&ctx, &bucket, "lake/"),
            s2,
            "after the kill at {point}"
        );
        assert!(!s3_list(&ctx, &bucket, "lake/_billpipe/").contains_key("lake/_billpipe/lock.json"));
    }
}
