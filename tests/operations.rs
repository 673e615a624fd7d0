//! Operating billpipe: backfill ranges, forced reloads, state and state reset, the lake lock
//! (live, stale, dead, skewed, taken over, raced by a second run and a `state reset` while a
//! large file loads — on a local lake and on the S3 test server), partition values that do not
//! fit a file name, per-object failures that reject one object, parallel jobs.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use arrow_array::{Array, Decimal128Array, StringArray};
use billpipe::generate::{write_detail_csv, GenerateOptions};
use billpipe::partition::{partition_value, CAPPED_MARK, MAX_PARTITION_VALUE_BYTES};
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rust_decimal::Decimal;

fn example_lake() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn outcomes(report: &serde_json::Value, outcome: &str) -> Vec<String> {
    report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["outcome"] == outcome)
        .map(|o| o["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn from_to_restricts_a_run_to_billing_months() {
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap();
    let (_, report) = run_job(
        "testdata/bucket",
        dest,
        &["--from", "2025-12", "--to", "2025-12"],
    );
    let loaded = outcomes(&report, "ingest");
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    assert!(loaded.iter().all(|k| k.ends_with("20251206.CSV")));
    // Skipped objects are counted by reason in the report (listed with --report-skipped).
    let out_of_range = report["skipped"]["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "out of range")
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(
        out_of_range["count"], 8,
        "all November files are out of range"
    );
    assert!(out_of_range["examples"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["reason"].as_str().unwrap().starts_with("out of range")));
    let sums = local_lake_sums(lake.path());
    assert!(sums.keys().all(|(period, _)| period == "2025-12"));
    // A later backfill of November adds it without touching December.
    let (_, report) = run_job(
        "testdata/bucket",
        dest,
        &["--from", "2025-11", "--to", "2025-11"],
    );
    assert_eq!(outcomes(&report, "ingest").len(), 2);
    assert_eq!(local_lake_sums(lake.path()).len(), 4);
}

#[test]
fn force_reloads_and_equals_a_fresh_load() {
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap();
    run_job("testdata/bucket", dest, &[]);
    let fresh = local_lake_sums(lake.path());
    let (_, report) = run_job("testdata/bucket", dest, &["--force"]);
    assert_eq!(report["totals"]["replaced"], 4);
    assert_eq!(local_lake_sums(lake.path()), fresh);
    assert_eq!(lake_files(lake.path()).len(), 4);
}

#[test]
fn state_shows_the_ledger_and_reset_makes_the_next_run_reload() {
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap();
    run_job("testdata/bucket", dest, &[]);
    let out = billpipe(&["state", "--dest", dest, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let state: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let unit = &state["tencent/200020002002/2025-12"];
    assert_eq!(unit["rows_loaded"], 19);
    assert_eq!(unit["rows_quarantined"], 1);
    assert_eq!(unit["billed_cost"], "1210.1626119");
    assert_eq!(
        unit["source"]["key"],
        "billing/focus/FOCUS-bill_details-200020002002-20251206.CSV"
    );
    let table = billpipe(&["state", "--dest", dest]);
    assert!(
        table.stdout.contains("200020002002   2025-12"),
        "{}",
        table.stdout
    );

    let reset = billpipe(&[
        "state",
        "reset",
        "--dest",
        dest,
        "--account",
        "200020002002",
        "--month",
        "2025-12",
    ]);
    assert_eq!(reset.code, 0, "{}", reset.stderr);
    assert!(
        reset.stdout.contains("resetting 1 unit(s)"),
        "{}",
        reset.stdout
    );
    assert!(
        reset.stdout.contains("tencent/200020002002/2025-12"),
        "{}",
        reset.stdout
    );
    let before = local_lake_sums(lake.path());
    let (_, report) = run_job("testdata/bucket", dest, &[]);
    assert_eq!(
        outcomes(&report, "replace"),
        vec!["billing/focus/FOCUS-bill_details-200020002002-20251206.CSV"]
    );
    assert_eq!(local_lake_sums(lake.path()), before);
    let (_, report) = run_job("testdata/bucket", dest, &[]);
    assert_eq!(report["totals"]["replaced"], 0, "the reset is done once");
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A lock of another owner whose heartbeat is `heartbeat_offset` seconds from now (negative:
/// in the past), written atomically as a store would.
fn lock_json(owner: &str, pid: u32, heartbeat_offset: i64, ns: Option<&str>) -> String {
    let at = unix_now() + heartbeat_offset;
    let mut lock = serde_json::json!({
        "owner": owner, "host": "some-host", "pid": pid, "command": "run",
        "started_at": at, "heartbeat_at": at,
    });
    if let Some(ns) = ns {
        lock["pid_namespace"] = ns.into();
    }
    lock.to_string()
}

fn put_lock(lake: &Path, json: &str) {
    std::fs::create_dir_all(lake.join("_billpipe")).unwrap();
    let tmp = lake.join("_billpipe/test-lock.json.part");
    std::fs::write(&tmp, json).unwrap();
    std::fs::rename(tmp, lake.join("_billpipe/lock.json")).unwrap();
}

fn write_lock(lake: &Path, pid: u32, heartbeat_offset: i64, ns: Option<&str>) {
    put_lock(lake, &lock_json("someone-else", pid, heartbeat_offset, ns));
}

/// This process's boot id and pid namespace, as billpipe records them in its lock.
fn this_pid_namespace() -> String {
    billpipe::state::lock::pid_namespace().expect("/proc on the test machine")
}

/// The example bucket's lake, exactly (README quickstart): rows and BilledCost per partition.
fn example_sums() -> Sums {
    [
        ("2025-11", "200020002001", 120, "8879.35130079"),
        ("2025-11", "200020002002", 120, "10746.68177258"),
        ("2025-12", "200020002001", 20, "1106.28422641"),
        ("2025-12", "200020002002", 19, "1210.1626119"),
    ]
    .into_iter()
    .map(|(p, a, rows, cost)| {
        (
            (p.to_string(), a.to_string()),
            (rows, Decimal::from_str(cost).unwrap()),
        )
    })
    .collect()
}

/// Nothing of a refused run is in the lake: no partition, no ledger, no staging folder.
fn assert_untouched(lake: &Path) {
    assert!(lake_files(lake).is_empty());
    assert!(!lake.join("_billpipe/ledger.json").exists());
    assert!(!lake.join("_billpipe/staging").exists());
}

#[test]
fn a_live_lock_stops_a_second_run_and_a_stale_one_is_taken_over() {
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap();
    // Held by a live process (this test) with a fresh heartbeat: refused, exit 4, untouched.
    write_lock(
        lake.path(),
        std::process::id(),
        0,
        Some(&this_pid_namespace()),
    );
    let out = billpipe(&["run", "--source", "testdata/bucket", "--dest", dest]);
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("is locked by another billpipe run someone-else"),
        "{}",
        out.stderr
    );
    assert_untouched(lake.path());

    // A dead pid says nothing without the owner's pid namespace (another OS, a container, an
    // older billpipe): the fresh heartbeat keeps the lock.
    write_lock(lake.path(), 999_999_999, 0, None);
    let out = billpipe(&["run", "--source", "testdata/bucket", "--dest", dest]);
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    write_lock(
        lake.path(),
        999_999_999,
        0,
        Some("another-boot/pid:[4026531836]"),
    );
    let out = billpipe(&["run", "--source", "testdata/bucket", "--dest", dest]);
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert_untouched(lake.path());

    // Heartbeat older than the timeout and nobody refreshing it while watched: taken over.
    write_lock(lake.path(), 1, -600, None);
    let started = Instant::now();
    let (out, _) = run_job("testdata/bucket", dest, &["--lock-timeout", "5"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(started.elapsed() >= Duration::from_secs(5), "watched first");
    assert!(
        out.stderr.contains("taking over a stale lock"),
        "{}",
        out.stderr
    );
    assert!(
        !lake.path().join("_billpipe/lock.json").exists(),
        "released at the end"
    );
    assert_eq!(local_lake_sums(lake.path()), example_sums());

    // Same pid namespace, but the owner process is gone (a killed run): taken over at once.
    write_lock(lake.path(), 999_999_999, 0, Some(&this_pid_namespace()));
    let started = Instant::now();
    let (out, _) = run_job("testdata/bucket", dest, &["--force"]);
    // 3, not 1 or 4: the run went through; the example's held-out row still lacks in the lake.
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(out.stdout.contains("LAKE SHORT"), "{}", out.stdout);
    assert_eq!(local_lake_sums(lake.path()), example_sums());
}

#[test]
fn a_heartbeat_from_a_clock_ahead_is_bounded_and_a_live_skewed_lock_is_kept() {
    // Left by a dead run whose clock was a day ahead: without a bound it would never turn
    // stale. It does not change while watched: taken over.
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap();
    write_lock(lake.path(), 1, 86_400, None);
    let started = Instant::now();
    let (out, _) = run_job("testdata/bucket", dest, &["--lock-timeout", "3"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(
        out.stderr.contains("taking over a stale lock"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("FUTURE"), "{}", out.stderr);
    assert_eq!(local_lake_sums(lake.path()), example_sums());

    // A live holder whose clock is a day ahead keeps heartbeating: its lock is respected.
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap().to_string();
    let holder_lake = lake.path().to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                write_lock(&holder_lake, 1, 86_400, None);
                std::thread::sleep(Duration::from_millis(700));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(1200)); // a second apart: the heartbeat changed
    let out = billpipe(&[
        "run",
        "--source",
        "testdata/bucket",
        "--dest",
        &dest,
        "--lock-timeout",
        "3",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    holder.join().unwrap();
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("FUTURE"), "{}", out.stderr);
    assert_untouched(lake.path());
}

/// Polls `cond` every 20 ms until it holds; panics after `secs`.
fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_ending(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out
}

/// A bill source for the race tests: a small monthly of `SMALL` (loaded first, so `state reset`
/// has a unit to reset) and, added later, a ~30 MB monthly of `BIG` that takes seconds to load.
struct RaceSource {
    dir: tempfile::TempDir,
    small: CsvTotals,
}

const SMALL: &str = "300030003002";
const BIG: &str = "300030003001";

impl RaceSource {
    fn new() -> RaceSource {
        let dir = tempfile::tempdir().unwrap();
        let small = generate(dir.path(), SMALL, &["--rows-per-day", "5"]);
        RaceSource { dir, small }
    }

    fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn add_big(&self) -> CsvTotals {
        generate(self.dir.path(), BIG, &["--target-mb", "30"])
    }

    fn expected(&self, big: &CsvTotals) -> Sums {
        let mut s = Sums::new();
        s.insert(
            ("2025-11".into(), SMALL.into()),
            (self.small.rows, self.small.billed),
        );
        s.insert(("2025-11".into(), BIG.into()), (big.rows, big.billed));
        s
    }
}

/// `billpipe generate` a November monthly for `account` into `dir`; its exact totals.
fn generate(dir: &Path, account: &str, extra: &[&str]) -> CsvTotals {
    let out_dir = dir.to_str().unwrap();
    let mut args = vec![
        "generate",
        "--month",
        "2025-11",
        "--account",
        account,
        "--out-dir",
        out_dir,
    ];
    args.extend_from_slice(extra);
    let out = billpipe(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let t = csv_totals(&dir.join(format!("FOCUS-bill_details-{account}-202511.CSV")));
    assert_eq!(t.bad_rows, 0);
    t
}

fn spawn_run(source: &str, dest: &str, extra: &[String]) -> Child {
    Command::new(bin())
        .args(["run", "-q", "--source", source, "--dest", dest])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGKILLs `child` as soon as `cond` holds (it must still be running then).
fn kill_while(mut child: Child, what: &str, cond: impl FnMut() -> bool) {
    wait_until(120, what, cond);
    assert!(
        child.try_wait().unwrap().is_none(),
        "it ended before {what}"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed");
}

fn finish(child: Child) -> Output {
    let out = child.wait_with_output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// While `first` is loading (it holds the lock and is staging), a second `run` and a
/// `state reset` are started `rounds` times: each must exit 4 without touching what the first
/// run stages, which `staged` lists. Returns how many attempts were made while it still ran.
fn race(
    first: &mut Child,
    dest: &str,
    source: &str,
    extra: &[String],
    staged: &dyn Fn() -> Vec<PathBuf>,
) -> usize {
    let mut attempts = 0;
    for _ in 0..3 {
        if first.try_wait().unwrap().is_some() {
            break;
        }
        let before = staged();
        let mut second: Vec<&str> = vec!["run", "--source", source, "--dest", dest];
        second.extend(extra.iter().map(String::as_str));
        let mut reset: Vec<&str> = vec!["state", "reset", "--dest", dest, "--account", SMALL];
        reset.extend(extra.iter().map(String::as_str));
        for args in [second, reset] {
            let out = billpipe(&args);
            assert_eq!(
                out.code, 4,
                "{args:?} while a run loads\n{}{}",
                out.stdout, out.stderr
            );
            assert!(out.stderr.contains("is locked by another billpipe run"));
            // The first run's staged files are all still there (it may have added more).
            let after = staged();
            for f in &before {
                assert!(
                    after.contains(f) || first.try_wait().unwrap().is_some(),
                    "{} vanished while the lake was locked",
                    f.display()
                );
            }
            attempts += 1;
        }
    }
    attempts
}

#[test]
fn a_second_run_and_a_reset_during_a_load_exit_4_and_leave_its_staging_alone() {
    let src = RaceSource::new();
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap();
    let (out, _) = run_job(src.path(), dest, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let big = src.add_big();

    let staging = lake.path().join("_billpipe/staging");
    let mut first = spawn_run(src.path(), dest, &[]);
    wait_until(120, "the first run to stage a Parquet file", || {
        !files_ending(&staging, ".parquet.tmp").is_empty()
    });
    let staged = || files_ending(&staging, "");
    let attempts = race(&mut first, dest, src.path(), &[], &staged);
    let out = finish(first);
    assert_eq!(out.code, 0, "first run: {}{}", out.stdout, out.stderr);
    assert!(attempts >= 2, "the first run ended before the race");
    assert_eq!(local_lake_sums(lake.path()), src.expected(&big));
    // Its staging folder went with it, and so did the lock.
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    assert!(!lake.path().join("_billpipe/lock.json").exists());

    // The reset that was refused can be done now; the next run reloads that unit only.
    let out = billpipe(&["state", "reset", "--dest", dest, "--account", SMALL]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (out, report) = run_job(src.path(), dest, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(report["totals"]["replaced"], 1);
    assert_eq!(local_lake_sums(lake.path()), src.expected(&big));
}

#[test]
fn leftovers_of_killed_runs_are_cleared_by_the_next_lock_holder_only() {
    let src = RaceSource::new();
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap();
    let big = src.add_big();
    let staging = lake.path().join("_billpipe/staging");
    let killed = spawn_run(src.path(), dest, &[]);
    kill_while(killed, "staging a Parquet file", || {
        !files_ending(&staging, ".parquet.tmp").is_empty()
    });
    assert!(
        !files_ending(&staging, ".parquet.tmp").is_empty(),
        "the killed run left staged files"
    );
    // Left by the killed run, so it is still locked by a dead pid of this namespace; an older
    // billpipe's loose staging file is there too.
    std::fs::write(staging.join("x.0.123.parquet.tmp"), b"old").unwrap();
    let (out, _) = run_job(src.path(), dest, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("taking over a stale lock"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    assert_eq!(local_lake_sums(lake.path()), src.expected(&big));
}

#[test]
fn a_run_whose_lock_is_taken_over_stops_writing_and_keeps_the_new_owners_lock() {
    // Only the big file: nothing is published before the lock is taken over.
    let src = tempfile::tempdir().unwrap();
    let big = generate(src.path(), BIG, &["--target-mb", "30"]);
    let mut expected = Sums::new();
    expected.insert(("2025-11".into(), BIG.into()), (big.rows, big.billed));
    let src = src.path().to_str().unwrap();
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap();
    let staging = lake.path().join("_billpipe/staging");
    let mut run = spawn_run(src, dest, &["--lock-timeout".into(), "2".into()]);
    wait_until(120, "the run to stage a Parquet file", || {
        !files_ending(&staging, ".parquet.tmp").is_empty()
    });
    // Another run takes the lake over (as after a long pause of this one).
    let theirs = lock_json("the-new-owner", std::process::id(), 0, None);
    put_lock(lake.path(), &theirs);
    assert!(run.try_wait().unwrap().is_none(), "the load was too quick");
    let out = finish(run);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("lost the lake's lock"),
        "{}",
        out.stderr
    );
    // Its heartbeat never overwrote the new owner's lock, nor did its release remove it, and
    // nothing of it was published.
    assert_eq!(
        std::fs::read_to_string(lake.path().join("_billpipe/lock.json")).unwrap(),
        theirs
    );
    assert!(lake_files(lake.path()).is_empty());
    assert!(!lake.path().join("_billpipe/ledger.json").exists());
    // Once the new owner is done, the next run loads everything.
    std::fs::remove_file(lake.path().join("_billpipe/lock.json")).unwrap();
    let (out, _) = run_job(src, dest, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(local_lake_sums(lake.path()), expected);
}

/// The same race against the S3 test server: the lake is `s3://<bucket>/lake`, staging is in
/// the temp dir under the lake's own prefix, and a killed run's staging folder is cleared by
/// the next run of that lake.
#[test]
fn s3_lake_a_second_run_and_a_reset_during_a_load_exit_4_and_kills_leave_no_temp_files() {
    let ctx = s3_context();
    let bucket = s3_bucket(&ctx, "race");
    let dest = format!("s3://{bucket}/lake");
    let location = billpipe::store::s3::S3Location::parse(&dest).unwrap();
    let prefix = format!(
        "billpipe-staging-{:016x}-",
        billpipe::partition::stable_hash(location.uri().as_bytes()) as u64
    );
    let temp = std::env::temp_dir();
    let ours = |suffix: &str| -> Vec<PathBuf> {
        std::fs::read_dir(&temp)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .flat_map(|e| {
                let mut v = files_ending(&e.path(), suffix);
                v.push(e.path());
                v
            })
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .collect()
    };
    let args = s3_args();
    let s3: Vec<&str> = args.iter().map(String::as_str).collect();
    let src = RaceSource::new();
    let (out, _) = run_job(src.path(), &dest, &s3);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let big = src.add_big();

    let mut first = spawn_run(src.path(), &dest, &args);
    wait_until(120, "the first run to stage a Parquet file", || {
        !ours(".parquet.tmp").is_empty()
    });
    let staged = || ours("");
    let attempts = race(&mut first, &dest, src.path(), &args, &staged);
    let out = finish(first);
    assert_eq!(out.code, 0, "first run: {}{}", out.stdout, out.stderr);
    assert!(attempts >= 2, "the first run ended before the race");
    assert_eq!(s3_lake_sums(&ctx, &bucket, "lake/"), src.expected(&big));
    assert!(ours("").is_empty(), "staging left in {}", temp.display());
    assert!(!s3_list(&ctx, &bucket, "lake/_billpipe/").contains_key("lake/_billpipe/lock.json"));

    // A run killed while writing leaves its staging folder (and its lock); the next run of
    // this lake takes the lock over and clears the folder.
    let mut kill_args = args.clone();
    kill_args.push("--force".into());
    let killed = spawn_run(src.path(), &dest, &kill_args);
    kill_while(killed, "staging a Parquet file", || {
        !ours(".parquet.tmp").is_empty()
    });
    assert!(
        !ours(".parquet.tmp").is_empty(),
        "the killed run left staged files"
    );
    let (out, _) = run_job(src.path(), &dest, &s3);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        ours("").is_empty(),
        "the killed run's staging was not cleared"
    );
    assert_eq!(s3_lake_sums(&ctx, &bucket, "lake/"), src.expected(&big));
}

/// (rows, BilledCost) per (billing_period, BillingAccountId as the rows hold it), checking
/// that every file sits in the folder `partition_value` names for its rows' account.
fn sums_by_account_column(lake: &Path) -> Sums {
    let mut sums = Sums::new();
    for f in lake_files(lake) {
        let rel = f.strip_prefix(lake).unwrap().to_string_lossy().into_owned();
        let mut segs = rel.split('/');
        let period = segs
            .next()
            .unwrap()
            .strip_prefix("billing_period=")
            .unwrap();
        let dir = segs
            .next()
            .unwrap()
            .strip_prefix("billing_account_id=")
            .unwrap();
        assert!(dir.len() <= MAX_PARTITION_VALUE_BYTES, "{dir}");
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let cost = col::<Decimal128Array>(&batch, "BilledCost");
            let accounts = col::<StringArray>(&batch, "BillingAccountId");
            for i in 0..batch.num_rows() {
                let account = accounts.value(i);
                assert_eq!(partition_value(account), dir, "{rel}");
                let e = sums
                    .entry((period.to_string(), account.to_string()))
                    .or_insert((0, Decimal::ZERO));
                e.0 += 1;
                if cost.is_valid(i) {
                    e.1 += Decimal::from_i128_with_scale(cost.value(i), 18);
                }
            }
        }
    }
    sums
}

/// A reseller's consolidated zip for November holding one customer per account (rows decide
/// partitions in this family), and the expected sums per account.
fn consolidated(accounts: &[&str]) -> (Vec<u8>, Sums) {
    let mut csv = Vec::new();
    let mut expected = Sums::new();
    for (i, account) in accounts.iter().enumerate() {
        let opts = GenerateOptions {
            account: account.to_string(),
            month: "2025-11".into(),
            through_day: None,
            rows_per_day: 3,
            seed: 20 + i as u64,
            bad_rows: vec![],
            restated: false,
            gaps: false,
        };
        let mut rows = Vec::new();
        let stats = write_detail_csv(&opts, false, &mut rows).unwrap();
        if i == 0 {
            csv.extend_from_slice(&rows);
        } else {
            let body = rows.splitn(2, |x| *x == b'\n').nth(1).unwrap();
            csv.extend_from_slice(body);
        }
        expected.insert(
            ("2025-11".into(), account.to_string()),
            (
                stats.rows,
                Decimal::from_i128_with_scale(stats.billed_cost_e8, 8),
            ),
        );
    }
    (zip_of(&[("all.csv", &csv)]), expected)
}

const CONSOLIDATED: &str =
    "900000000099-2025-11--by_used_time-bill-details-consolidated_bill-5eed.zip";

#[test]
fn over_long_partition_values_get_safe_capped_folders_and_keep_the_full_value_in_the_rows() {
    let long_ascii = "7".repeat(300);
    let long_cjk = "账".repeat(90);
    let accounts = ["910000000001", long_ascii.as_str(), long_cjk.as_str()];
    let (zip, mut expected) = consolidated(&accounts);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join(CONSOLIDATED), zip).unwrap();
    let other = generate(src.path(), "300030003005", &["--rows-per-day", "4"]);
    expected.insert(
        ("2025-11".into(), "300030003005".into()),
        (other.rows, other.billed),
    );
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap();
    let (out, report) = run_job(src.path().to_str().unwrap(), dest, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(report["totals"]["ingested"], 2);
    assert_eq!(sums_by_account_column(lake.path()), expected);
    // Normal values keep today's folders; long ones are capped with a hash suffix.
    let dirs: BTreeSet<String> = lake_files(lake.path())
        .iter()
        .map(|f| {
            let dir = f.parent().unwrap().file_name().unwrap().to_string_lossy();
            dir.strip_prefix("billing_account_id=").unwrap().to_string()
        })
        .collect();
    assert!(dirs.contains("910000000001"), "{dirs:?}");
    assert_eq!(
        dirs.iter().filter(|d| d.contains(CAPPED_MARK)).count(),
        2,
        "{dirs:?}"
    );
    // `totals` reads the capped folders and shows their full account (from the rows) with the
    // same sums.
    let out = billpipe(&["totals", "--dest", dest, "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let rows = json.as_array().unwrap_or_else(|| panic!("{json}"));
    assert_eq!(rows.len(), 4);
    for full in [&long_ascii, &long_cjk] {
        let r = rows
            .iter()
            .find(|r| r["billing_account_id"].as_str() == Some(full.as_str()))
            .unwrap_or_else(|| panic!("{full} not shown whole: {json}"));
        let want = &expected[&("2025-11".to_string(), full.to_string())];
        assert_eq!(r["rows"].as_u64(), Some(want.0), "{r}");
        let billed = Decimal::from_str(r["billed_cost"].as_str().unwrap()).unwrap();
        assert_eq!(billed, want.1, "{r}");
    }
    // --account takes the full id of a capped folder too.
    let out = billpipe(&["totals", "--dest", dest, "--json", "--account", &long_cjk]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{json}");
    // A second run finds nothing new.
    let (out, report) = run_job(src.path().to_str().unwrap(), dest, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(report["totals"]["ingested"], 0);
    assert_eq!(sums_by_account_column(lake.path()), expected);
}

#[test]
fn a_failure_publishing_one_object_rejects_it_whole_and_the_run_goes_on() {
    let accounts = ["910000000001", "910000000002", "910000000003"];
    let (zip, mut expected) = consolidated(&accounts);
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join(CONSOLIDATED), zip).unwrap();
    let other = generate(src.path(), "300030003005", &["--rows-per-day", "4"]);
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap();
    // The last customer's partition folder cannot be made (a file is in the way): the first
    // two are published before that fails.
    let obstacle = lake
        .path()
        .join("billing_period=2025-11/billing_account_id=910000000003");
    std::fs::create_dir_all(obstacle.parent().unwrap()).unwrap();
    std::fs::write(&obstacle, b"in the way").unwrap();
    let (out, report) = run_job(src.path().to_str().unwrap(), dest, &[]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(report["error"].is_null(), "{}", report["error"]);
    let rejected = outcomes(&report, "reject");
    assert_eq!(rejected, vec![CONSOLIDATED.to_string()]);
    let reason = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["outcome"] == "reject")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("the lake is unchanged"), "{reason}");
    // The later object loaded; nothing of the rejected one is published or in the ledger.
    let mut only_other = Sums::new();
    only_other.insert(
        ("2025-11".into(), "300030003005".into()),
        (other.rows, other.billed),
    );
    assert_eq!(sums_by_account_column(lake.path()), only_other);
    // The whole ledger: its manifest, base and journal.
    let mut ledger = std::fs::read_to_string(lake.path().join("_billpipe/ledger.json")).unwrap();
    for dir in ["_billpipe/ledger", "_billpipe/ledger/journal"] {
        for f in std::fs::read_dir(lake.path().join(dir)).unwrap() {
            let path = f.unwrap().path();
            if path.is_file() {
                ledger.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    assert!(ledger.contains("300030003005"), "{ledger}");
    assert!(!ledger.contains("900000000099"), "{ledger}");
    // Out of the way, the next run loads it whole.
    std::fs::remove_file(&obstacle).unwrap();
    let (out, _) = run_job(src.path().to_str().unwrap(), dest, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    expected.extend(only_other);
    assert_eq!(sums_by_account_column(lake.path()), expected);
}

#[test]
fn wait_waits_for_the_lock_to_be_released() {
    let lake = example_lake();
    let dest = lake.path().to_str().unwrap().to_string();
    write_lock(
        lake.path(),
        std::process::id(),
        0,
        Some(&this_pid_namespace()),
    );
    let lock_path = lake.path().join("_billpipe/lock.json");
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(3));
        std::fs::remove_file(lock_path).unwrap();
    });
    let started = std::time::Instant::now();
    let (out, report) = run_job("testdata/bucket", &dest, &["--wait"]);
    releaser.join().unwrap();
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    assert_eq!(report["totals"]["ingested"], 4);
}

#[test]
fn parallel_jobs_load_the_same_lake() {
    let one = example_lake();
    let two = example_lake();
    run_job("testdata/bucket", one.path().to_str().unwrap(), &[]);
    let (out, report) = run_job(
        "testdata/bucket",
        two.path().to_str().unwrap(),
        &["--jobs", "3"],
    );
    assert_eq!(out.code, 3);
    assert_eq!(report["totals"]["ingested"], 4);
    assert_eq!(local_lake_sums(one.path()), local_lake_sums(two.path()));
    // Per-stage timings are in the report.
    let loaded = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["outcome"] == "ingest")
        .unwrap();
    assert!(loaded["stages"]["decode"].as_f64().unwrap() >= 0.0);
    assert!(loaded["stages"]["commit"].as_f64().unwrap() > 0.0);
}
