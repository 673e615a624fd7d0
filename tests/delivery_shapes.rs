//! Delivery shapes that used to lose or double money (issue 10): among finals the newest
//! delivery wins, a file's rows must be of the account and month its name gives (under every
//! profile), an unreadable or much smaller file never replaces a good snapshot, and a sum that
//! overflows rejects only its object. After every step the incremental lake equals a fresh load
//! of the same folder.

mod common;

use std::path::Path;
use std::time::Duration;

use billpipe::generate::{object_name, write_detail_csv, write_focus_csv, GenerateOptions};
use common::*;
use rust_decimal::Decimal;

const A: &str = "200020002001";
const B: &str = "200020002002";

fn options(account: &str, month: &str, through: Option<u32>, seed: u64) -> GenerateOptions {
    GenerateOptions {
        account: account.into(),
        month: month.into(),
        through_day: through,
        rows_per_day: 6,
        seed,
        bad_rows: vec![],
        restated: false,
        gaps: true,
    }
}

/// Writes a FOCUS file under its Tencent name; returns its path.
fn focus(dir: &Path, opts: &GenerateOptions) -> std::path::PathBuf {
    let path = dir.join(object_name(&opts.account, &opts.month, opts.through_day).unwrap());
    write_focus_csv(opts, std::fs::File::create(&path).unwrap()).unwrap();
    path
}

/// A zipped native detail bill of November 2025 and its (rows, BilledCost).
fn detail_zip(account: &str, seed: u64) -> (Vec<u8>, (u64, Decimal)) {
    let mut csv = Vec::new();
    let stats =
        write_detail_csv(&options(account, "2025-11", None, seed), false, &mut csv).unwrap();
    let billed = Decimal::from_i128_with_scale(stats.billed_cost_e8, 8);
    (
        zip_of(&[("bill.csv", &csv)]),
        (stats.rows, billed.normalize()),
    )
}

/// Runs `billpipe run` on `src` into `lake`, then checks the incremental lake against a fresh
/// load of the same folder. Returns the run's output and report.
fn step(src: &Path, lake: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let (out, report) = run_job(src.to_str().unwrap(), lake.to_str().unwrap(), extra);
    assert!(
        out.code == 0 || out.code == 3,
        "{}{}",
        out.stdout,
        out.stderr
    );
    let fresh = tempfile::tempdir().unwrap();
    run_job(src.to_str().unwrap(), fresh.path().to_str().unwrap(), extra);
    assert_eq!(
        normalized_sums(lake),
        normalized_sums(fresh.path()),
        "incremental lake != fresh load of the same bucket\n{}",
        out.stdout
    );
    (out, report)
}

/// An object's outcome and reason: listed in `objects`, or (skipped) among the examples of the
/// report's skip summary.
fn outcome<'a>(report: &'a serde_json::Value, key: &str) -> (&'a str, &'a str) {
    if let Some(o) = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"] == key)
    {
        return (
            o["outcome"].as_str().unwrap(),
            o["reason"].as_str().unwrap(),
        );
    }
    let skipped = report["skipped"]["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["examples"].as_array().unwrap())
        .find(|e| e["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {report:#}"));
    ("skip", skipped["reason"].as_str().unwrap())
}

#[test]
fn among_finals_the_newest_delivery_wins() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let key = |what: &str| format!("{A}-202511-by_used_time-{what}.zip");
    let nov = ("2025-11".to_string(), A.to_string());
    // The detail monthly is loaded.
    let (monthly, monthly_sum) = detail_zip(A, 1);
    put_at(src.path(), &key("bill_details"), &monthly, 100);
    step(src.path(), lake.path(), &[]);
    assert_eq!(normalized_sums(lake.path())[&nov], monthly_sum);
    // A bill pack for the same month arrives later with restated rows: it replaces the monthly.
    let (pack, pack_sum) = detail_zip(A, 2);
    assert_ne!(pack_sum, monthly_sum);
    put_at(src.path(), &key("bill_pack"), &pack, 200);
    let (_, report) = step(src.path(), lake.path(), &[]);
    assert_eq!(outcome(&report, &key("bill_pack")).0, "replace");
    assert_eq!(normalized_sums(lake.path())[&nov], pack_sum);
    // Re-pushed under the same key with other rows: replaces its own load.
    let (repushed, repushed_sum) = detail_zip(A, 3);
    put_at(src.path(), &key("bill_pack"), &repushed, 300);
    let (_, report) = step(src.path(), lake.path(), &[]);
    assert_eq!(outcome(&report, &key("bill_pack")).0, "replace");
    assert_eq!(normalized_sums(lake.path())[&nov], repushed_sum);
    // An older restated monthly under another prefix does not roll the month back.
    let old_key = format!("restated/{}", key("bill_details"));
    put_at(src.path(), &old_key, &detail_zip(A, 4).0, 250);
    let (_, report) = step(src.path(), lake.path(), &[]);
    assert_eq!(outcome(&report, &old_key).0, "skip");
    assert_eq!(normalized_sums(lake.path())[&nov], repushed_sum);
    // ...but a newer one does replace it.
    let (newest, newest_sum) = detail_zip(A, 5);
    put_at(src.path(), &old_key, &newest, 400);
    step(src.path(), lake.path(), &[]);
    assert_eq!(normalized_sums(lake.path())[&nov], newest_sum);
}

#[test]
fn rows_of_another_account_reject_the_object() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let b_file = focus(src.path(), &options(B, "2025-12", Some(5), 1));
    // A file named for A whose rows carry B's account (B's own bill, under A's name).
    let a_name = object_name(A, "2025-12", Some(5)).unwrap();
    std::fs::copy(&b_file, src.path().join(&a_name)).unwrap();
    let (out, report) = step(src.path(), lake.path(), &[]);
    assert_eq!(out.code, 3, "{}", out.stdout);
    let (what, why) = outcome(&report, &a_name);
    assert_eq!(what, "reject");
    assert!(
        why.contains(&format!(
            "the row is of account \"{B}\", but the name says the file is account {A}'s"
        )),
        "{why}"
    );
    let sums = normalized_sums(lake.path());
    let t = csv_totals(&b_file);
    assert_eq!(sums.len(), 1);
    assert_eq!(
        sums[&("2025-12".to_string(), B.to_string())],
        (t.rows, t.billed.normalize()),
        "B counted once"
    );
}

#[test]
fn a_row_of_another_month_is_held_out_under_every_profile() {
    for profile in ["tencent", "off"] {
        let src = tempfile::tempdir().unwrap();
        let lake = tempfile::tempdir().unwrap();
        let november = focus(src.path(), &options(A, "2025-11", None, 1));
        let december = focus(src.path(), &options(A, "2025-12", Some(5), 2));
        // Three November rows slip into the December daily.
        let text = std::fs::read_to_string(&december).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        for l in lines.iter_mut().skip(1).take(3) {
            *l = l.replace("2025-11-30T16:00:00Z", "2025-10-31T16:00:00Z");
        }
        std::fs::write(&december, lines.join("\r\n") + "\r\n").unwrap();
        let (out, report) = step(src.path(), lake.path(), &["--profile", profile]);
        assert_eq!(out.code, 3, "{profile}: {}", out.stdout);
        let key = december.file_name().unwrap().to_str().unwrap();
        let o = report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["key"] == key)
            .unwrap();
        assert_eq!(o["reconciliation"]["rows_held_out"], 3, "{profile}");
        let sums = normalized_sums(lake.path());
        let t = csv_totals(&november);
        assert_eq!(
            sums[&("2025-11".to_string(), A.to_string())],
            (t.rows, t.billed.normalize()),
            "{profile}: November holds its monthly and nothing else"
        );
    }
}

#[test]
fn an_unreadable_or_much_smaller_file_never_replaces_a_good_snapshot() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let dec = ("2025-12".to_string(), A.to_string());
    let day9 = focus(src.path(), &options(A, "2025-12", Some(9), 1));
    let t9 = csv_totals(&day9);
    step(src.path(), lake.path(), &[]);
    assert_eq!(
        normalized_sums(lake.path())[&dec],
        (t9.rows, t9.billed.normalize())
    );

    // Day 10 with a trailing comma on every line: no row lines up with the header.
    let day10 = focus(src.path(), &options(A, "2025-12", Some(10), 1));
    let text = std::fs::read_to_string(&day10).unwrap();
    std::fs::write(&day10, misaligned(&text, ",")).unwrap();
    let (out, report) = step(src.path(), lake.path(), &[]);
    assert_eq!(out.code, 3);
    let key10 = day10.file_name().unwrap().to_str().unwrap().to_string();
    let (what, why) = outcome(&report, &key10);
    assert_eq!(what, "reject", "{why}");
    assert!(why.contains("no row of its"), "{why}");
    assert_eq!(
        normalized_sums(lake.path())[&dec],
        (t9.rows, t9.billed.normalize())
    );

    // Day 10 cut to a handful of rows: under half of what it would replace.
    let text = std::fs::read_to_string(&day9).unwrap();
    let short: Vec<&str> = text.lines().take(6).collect();
    std::fs::write(&day10, short.join("\r\n") + "\r\n").unwrap();
    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 3);
    let (what, why) = outcome(&report, &key10);
    assert_eq!(what, "reject", "{why}");
    assert!(why.contains("under half of the"), "{why}");
    assert_eq!(
        normalized_sums(lake.path())[&dec],
        (t9.rows, t9.billed.normalize())
    );
    // Accepted on purpose after `state reset`.
    let reset = billpipe(&[
        "state",
        "reset",
        "--dest",
        lake.path().to_str().unwrap(),
        "--account",
        A,
        "--month",
        "2025-12",
    ]);
    assert_eq!(reset.code, 0, "{}{}", reset.stdout, reset.stderr);
    let (out, _) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    let t10 = csv_totals(&day10);
    assert_eq!(
        normalized_sums(lake.path())[&dec],
        (t10.rows, t10.billed.normalize())
    );
}

#[test]
fn a_sum_beyond_decimal128_rejects_only_its_object() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let good = focus(src.path(), &options(B, "2025-12", Some(3), 1));
    let huge = focus(src.path(), &options(A, "2025-12", Some(3), 2));
    let mut reader = csv::Reader::from_path(&huge).unwrap();
    let headers = reader.headers().unwrap().clone();
    let at = headers.iter().position(|h| h == "BilledCost").unwrap();
    let mut rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    for r in rows.iter_mut().take(2) {
        let mut f: Vec<String> = r.iter().map(String::from).collect();
        f[at] = "99999999999999999999.9".into();
        *r = csv::StringRecord::from(f);
    }
    let mut w = csv::Writer::from_path(&huge).unwrap();
    w.write_record(&headers).unwrap();
    for r in &rows {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();
    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let (what, why) = outcome(&report, huge.file_name().unwrap().to_str().unwrap());
    assert_eq!(what, "reject");
    assert!(
        why.contains("beyond what a Decimal128(38) can hold"),
        "{why}"
    );
    let t = csv_totals(&good);
    assert_eq!(
        normalized_sums(lake.path())[&("2025-12".to_string(), B.to_string())],
        (t.rows, t.billed.normalize())
    );
}

/// Items 1–4 against the real S3 server: deliveries PUT one after another (the server sets
/// LastModified), loaded from `s3://` after each, and checked against a fresh load each time.
#[test]
fn delivery_shapes_from_s3() {
    let ctx = s3_context();
    let bucket = s3_bucket(&ctx, "shapes");
    let uri = format!("s3://{bucket}");
    let args = s3_args();
    let mut extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let lake = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let (out, report) = run_job(&uri, lake.path().to_str().unwrap(), extra);
        let fresh = tempfile::tempdir().unwrap();
        run_job(&uri, fresh.path().to_str().unwrap(), extra);
        assert_eq!(
            normalized_sums(lake.path()),
            normalized_sums(fresh.path()),
            "incremental != fresh\n{}{}",
            out.stdout,
            out.stderr
        );
        (out, report)
    };
    let put = |key: &str, body: Vec<u8>| {
        // LastModified has one-second resolution on some servers: keep deliveries apart.
        std::thread::sleep(Duration::from_millis(1100));
        s3_put(&ctx, &bucket, key, body);
    };
    let nov = ("2025-11".to_string(), A.to_string());
    let key = |what: &str| format!("{A}-202511-by_used_time-{what}.zip");
    // 1. Two finals: the later bill pack replaces the monthly; a re-push replaces the pack.
    let (monthly, _) = detail_zip(A, 1);
    put(&key("bill_details"), monthly);
    run(&extra);
    let (pack, pack_sum) = detail_zip(A, 2);
    put(&key("bill_pack"), pack);
    let (_, report) = run(&extra);
    assert_eq!(outcome(&report, &key("bill_pack")).0, "replace");
    assert_eq!(normalized_sums(lake.path())[&nov], pack_sum);
    let (repushed, repushed_sum) = detail_zip(A, 3);
    put(&key("bill_pack"), repushed);
    run(&extra);
    assert_eq!(normalized_sums(lake.path())[&nov], repushed_sum);
    // 3. A newer final whose rows are all unreadable does not replace it.
    let restated = format!("restated/{}", key("bill_details"));
    let bad = b"Payer Account ID,Total Cost (Including Tax),Transaction Type\r\n1,x,Purchase\r\n";
    put(&restated, zip_of(&[("bill.csv", bad.as_slice())]));
    let (out, report) = run(&extra);
    assert_eq!(out.code, 3, "{}", out.stdout);
    assert_eq!(outcome(&report, &restated).0, "reject");
    assert_eq!(normalized_sums(lake.path())[&nov], repushed_sum);
    // 4. A file named for A holding B's rows is rejected; B's own file counts once.
    let dir = tempfile::tempdir().unwrap();
    let b_file = focus(dir.path(), &options(B, "2025-12", Some(5), 7));
    let body = std::fs::read(&b_file).unwrap();
    put(b_file.file_name().unwrap().to_str().unwrap(), body.clone());
    let forged = object_name(A, "2025-12", Some(5)).unwrap();
    put(&forged, body);
    // 2 (month): an older December daily of A with a November row, under the `off` profile:
    // the fallback once the forged (newer) daily is rejected.
    let a_file = focus(dir.path(), &options(A, "2025-12", Some(4), 8));
    let text = std::fs::read_to_string(&a_file).unwrap();
    let moved = text.replacen("2025-11-30T16:00:00Z", "2025-10-31T16:00:00Z", 1);
    put(
        a_file.file_name().unwrap().to_str().unwrap(),
        moved.into_bytes(),
    );
    extra.extend(["--profile", "off"]);
    let (out, report) = run(&extra);
    assert_eq!(out.code, 3, "{}", out.stdout);
    assert_eq!(outcome(&report, &forged).0, "reject");
    let t = csv_totals(&b_file);
    let sums = normalized_sums(lake.path());
    assert_eq!(
        sums[&("2025-12".to_string(), B.to_string())],
        (t.rows, t.billed.normalize())
    );
    let a_dec = &sums[&("2025-12".to_string(), A.to_string())];
    let ta = csv_totals(&a_file);
    assert_eq!(a_dec.0, ta.rows - 1, "the November row is held out");
    assert_eq!(sums[&nov], repushed_sum, "November untouched");
}

/// A run that fails before it starts still writes its `--report`, with the error and the exit
/// code; an endpoint URL carrying credentials is refused without echoing them.
#[test]
fn failed_runs_write_their_report_and_endpoints_keep_no_secrets() {
    let lake = tempfile::tempdir().unwrap();
    let report = lake.path().join("report.json");
    let out = billpipe(&[
        "run",
        "--source",
        "/no/such/folder",
        "--dest",
        lake.path().join("lake").to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["exit_code"], 1);
    assert!(
        json["error"].as_str().unwrap().contains("/no/such/folder"),
        "{json}"
    );
    let out = billpipe(&[
        "run",
        "--source",
        "s3://bills",
        "--dest",
        lake.path().join("lake").to_str().unwrap(),
        "--endpoint",
        "https://AKIDEXAMPLE:topsecret@cos.ap-guangzhou.myqcloud.com",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("--endpoint carries credentials in the URL"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("topsecret") && !out.stdout.contains("topsecret"));
    let report_text = std::fs::read_to_string(&report).unwrap();
    assert!(!report_text.contains("topsecret"), "{report_text}");
}

/// A native detail bill of `account` for 2025-11, with its rows and BilledCost.
fn detail_bill(account: &str, seed: u64) -> (Vec<u8>, (u64, Decimal)) {
    let mut csv = Vec::new();
    let s = write_detail_csv(&options(account, "2025-11", None, seed), false, &mut csv).unwrap();
    let sum = Decimal::from_i128_with_scale(s.billed_cost_e8, 8).normalize();
    (csv, (s.rows, sum))
}

/// Two detail bills as one consolidated bill: `a` and then `b`'s rows under `a`'s header.
fn consolidated_of(a: &[u8], b: &[u8]) -> Vec<u8> {
    let header_end = b.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let mut both = a.to_vec();
    both.extend_from_slice(&b[header_end..]);
    both
}

/// A reseller's consolidated bill and a customer's own bill for the same month are two units
/// writing one partition: the second to arrive is rejected, naming the first, so the
/// customer's money is never counted twice.
#[test]
fn a_consolidated_bill_and_a_customers_own_bill_never_double_count() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let (c1, c2) = ("300000000001", "300000000002");
    let (a, a_sum) = detail_bill(c1, 1);
    let (b, b_sum) = detail_bill(c2, 2);
    let both = consolidated_of(&a, &b);
    put_at(
        src.path(),
        "500000000009-2025-11--by_used_time-bill-details-consolidated_bill-abc123.zip",
        &zip_of(&[("all.csv", &both)]),
        100,
    );
    let (out, _) = step(src.path(), lake.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    // C1's own bill arrives too.
    let own = format!("{c1}-202511-by_used_time-bill_details.zip");
    put_at(src.path(), &own, &zip_of(&[("bill.csv", &a)]), 200);
    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 3, "{}", out.stdout);
    let (what, why) = outcome(&report, &own);
    assert_eq!(what, "reject");
    assert!(why.contains("would count that money twice"), "{why}");
    let sums = normalized_sums(lake.path());
    assert_eq!(
        sums[&("2025-11".to_string(), c1.to_string())],
        a_sum,
        "C1 once"
    );
    assert_eq!(sums[&("2025-11".to_string(), c2.to_string())], b_sum);
}

/// The same two units committed at once (`--jobs 2`, each pausing a second after its check
/// that the partition holds no other unit): both pass that check, and the check after
/// publishing makes the later take its files back, so the customer's money is never in the
/// lake twice. (Two shards racing are the same two commits in two processes.)
#[test]
fn two_units_committing_into_one_partition_at_once_never_double_count() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let (c1, c2) = ("300000000001", "300000000002");
    let (a, a_sum) = detail_bill(c1, 1);
    let (b, _) = detail_bill(c2, 2);
    let both = consolidated_of(&a, &b);
    let consolidated =
        "500000000009-2025-11--by_used_time-bill-details-consolidated_bill-abc123.zip";
    put_at(
        src.path(),
        consolidated,
        &zip_of(&[("all.csv", &both)]),
        100,
    );
    let own = format!("{c1}-202511-by_used_time-bill_details.zip");
    put_at(src.path(), &own, &zip_of(&[("bill.csv", &a)]), 200);
    let out = billpipe_env(
        &[
            "run",
            "--source",
            src.path().to_str().unwrap(),
            "--dest",
            lake.path().to_str().unwrap(),
            "--jobs",
            "2",
        ],
        &[("BILLPIPE_FAULT_PAUSE_AT", "checked")],
    );
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("would count that money twice"),
        "{}",
        out.stdout
    );
    let folder = lake
        .path()
        .join(format!("billing_period=2025-11/billing_account_id={c1}"));
    let files = std::fs::read_dir(&folder).map_or(0, |d| d.count());
    assert!(files <= 1, "{files} files in {}", folder.display());
    let sums = normalized_sums(lake.path());
    let c1_sum = sums.get(&("2025-11".to_string(), c1.to_string()));
    assert!(c1_sum.is_none() || c1_sum == Some(&a_sum), "{c1_sum:?}");
}

/// Money does not hide behind a member's name: a zip member holding bill rows under another
/// name is read; one that cannot be read (a zip inside the zip, an .xlsx) rejects the object;
/// a README is skipped.
#[test]
fn zip_members_are_read_by_content_not_name() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let mut csv = Vec::new();
    let s = write_detail_csv(&options(A, "2025-11", None, 3), false, &mut csv).unwrap();
    let parts = split_csv(&csv, 2);
    let key = format!("{A}-202511-by_used_time-bill_details.zip");
    put_at(
        src.path(),
        &key,
        &zip_of(&[
            ("bill.csv", &parts[0]),
            ("part2.txt", &parts[1]),
            ("README", b"Tencent Cloud bill export.\n".as_slice()),
        ]),
        100,
    );
    let (out, report) = step(src.path(), lake.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let want = (
        s.rows,
        Decimal::from_i128_with_scale(s.billed_cost_e8, 8).normalize(),
    );
    assert_eq!(
        normalized_sums(lake.path())[&("2025-11".to_string(), A.to_string())],
        want,
        "both members, whatever their names"
    );
    let notes = report["objects"][0]["notes"].to_string();
    assert!(
        notes.contains("part2.txt") && notes.contains("README"),
        "{notes}"
    );
    // A nested zip: rejected, the lake keeps what it had.
    let inner = zip_of(&[("bill.csv", &parts[1])]);
    put_at(
        src.path(),
        &key,
        &zip_of(&[("bill.csv", &parts[0]), ("more.zip", &inner)]),
        200,
    );
    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 3, "{}", out.stdout);
    let (what, why) = outcome(&report, &key);
    assert_eq!(what, "reject");
    assert!(why.contains("is itself a zip archive"), "{why}");
    assert_eq!(
        normalized_sums(lake.path())[&("2025-11".to_string(), A.to_string())],
        want
    );
}

/// A unit whose every object has left the bucket (a lifecycle rule) stays in the lake as loaded
/// — the lake keeps the history the bucket drops — and the run counts it (`retained`) instead
/// of keeping quiet; a month range that leaves it out does not count it.
#[test]
fn units_whose_objects_left_the_bucket_are_kept_and_counted() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let a = focus(src.path(), &options(A, "2025-11", None, 1));
    focus(src.path(), &options(B, "2025-11", None, 2));
    let (s, l) = (src.path().to_str().unwrap(), lake.path().to_str().unwrap());
    let (out, report) = run_job(s, l, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(report["retained"]["count"], 0, "{report}");
    let loaded = local_lake_sums(lake.path());

    std::fs::remove_file(&a).unwrap();
    let (out, report) = run_job(s, l, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(report["retained"]["count"], 1, "{report}");
    assert_eq!(
        report["retained"]["examples"][0],
        format!("tencent/{A}/2025-11"),
        "{report}"
    );
    assert!(
        out.stdout
            .contains("1 unit(s) in the lake have no object in the bucket any more"),
        "{}",
        out.stdout
    );
    assert_eq!(local_lake_sums(lake.path()), loaded, "kept as loaded");

    let (out, report) = run_job(s, l, &["--from", "2025-12"]);
    assert!(
        out.code == 0 || out.code == 3,
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(report["retained"]["count"], 0, "{report}");
}
