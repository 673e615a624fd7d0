//! End to end on a local folder source and a local lake (no server needed): the example
//! bucket, snapshot replacement, idempotence, quarantine, decoding edge cases.

mod common;

use std::path::Path;

use billpipe::generate::{write_focus_csv, GenerateOptions};
use common::*;
use rust_decimal::Decimal;

const A: &str = "200020002001";
const B: &str = "200020002002";

fn gen(
    dir: &Path,
    account: &str,
    month: &str,
    through: Option<u32>,
    restated: bool,
) -> std::path::PathBuf {
    let name = billpipe::generate::object_name(account, month, through).unwrap();
    let path = dir.join(name);
    let opts = GenerateOptions {
        account: account.into(),
        month: month.into(),
        through_day: through,
        rows_per_day: 7,
        seed: 42,
        bad_rows: vec![],
        restated,
        gaps: false,
    };
    write_focus_csv(&opts, std::fs::File::create(&path).unwrap()).unwrap();
    path
}

fn expect_partition(sums: &Sums, period: &str, account: &str, authoritative: &Path) {
    let t = csv_totals(authoritative);
    let got = sums
        .get(&(period.to_string(), account.to_string()))
        .unwrap_or_else(|| panic!("no partition {period}/{account} in {sums:?}"));
    assert_eq!(
        got.0,
        t.rows,
        "rows of {period}/{account} vs {}",
        authoritative.display()
    );
    assert_eq!(
        got.1.normalize(),
        t.billed.normalize(),
        "BilledCost of {period}/{account}"
    );
}

#[test]
fn example_bucket_loads_with_exact_totals() {
    let lake = tempfile::tempdir().unwrap();
    let dest = lake.path().to_str().unwrap();
    let (out, report) = run_job("testdata/bucket", dest, &[]);
    assert_eq!(
        out.code, 3,
        "one bad row => exit 3\n{}{}",
        out.stdout, out.stderr
    );
    let sums = local_lake_sums(lake.path());
    let dir = Path::new("testdata/bucket/billing/focus");
    let file =
        |acct: &str, suffix: &str| dir.join(format!("FOCUS-bill_details-{acct}-{suffix}.CSV"));
    // November: the monthly finals; December: the newest dailies.
    expect_partition(&sums, "2025-11", A, &file(A, "202511"));
    expect_partition(&sums, "2025-11", B, &file(B, "202511"));
    expect_partition(&sums, "2025-12", A, &file(A, "20251206"));
    expect_partition(&sums, "2025-12", B, &file(B, "20251206"));
    assert_eq!(sums.len(), 4);
    assert_eq!(lake_files(lake.path()).len(), 4, "one file per partition");

    // The bad row is quarantined with its line number; the other rows of its file loaded.
    let bad = csv_totals(&file(B, "20251206"));
    assert_eq!(bad.bad_rows, 1);
    let q = std::fs::read_to_string(
        lake.path()
            .join("_quarantine/tencent-200020002002-202512.csv"),
    )
    .unwrap();
    let mut lines = q.lines();
    assert_eq!(
        lines.next().unwrap(),
        "source_key,line,column,value,reason,row"
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(
            "billing/focus/FOCUS-bill_details-200020002002-20251206.CSV,9,BilledCost,12.34.56,"
        ) && row.ends_with(",held out"),
        "{row}"
    );
    assert_eq!(report["totals"]["rows_quarantined"], 1);
    assert_eq!(report["totals"]["ingested"], 4);
    assert_eq!(report["totals"]["rejected"], 0);
    // Dailies superseded by a newer file in the bucket, plus the README, are skipped.
    assert_eq!(report["totals"]["skipped"], 9);
    assert!(
        out.stdout.contains("held out: line 9, column BilledCost"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("THE LAKE LACKS 1 ROW(S) OF THIS FILE (1 whose BilledCost cannot be read)"),
        "{}",
        out.stdout
    );
}

#[test]
fn second_run_with_nothing_new_touches_nothing() {
    let lake = tempfile::tempdir().unwrap();
    let dest = lake.path().to_str().unwrap();
    run_job("testdata/bucket", dest, &[]);
    let before = snapshot_of_files(lake.path());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (out, report) = run_job("testdata/bucket", dest, &[]);
    // The row held out on the first run is still missing from the lake: exit 3 until a
    // corrected file replaces it, and the summary says which unit is short.
    assert_eq!(out.code, 3, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("LAKE SHORT: tencent/200020002002/2025-12 (from billing/focus/FOCUS-bill_details-200020002002-20251206.CSV) lacks 1 held-out row(s)"),
        "{}",
        out.stdout
    );
    assert_eq!(report["totals"]["ingested"], 0);
    assert_eq!(report["totals"]["replaced"], 0);
    assert_eq!(
        snapshot_of_files(lake.path()),
        before,
        "no file in the lake may change"
    );
}

#[test]
fn snapshots_replace_each_other_and_totals_stay_exact() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let (s, d) = (src.path().to_str().unwrap(), lake.path().to_str().unwrap());
    let check = |authoritative: &Path| {
        let sums = local_lake_sums(lake.path());
        assert_eq!(sums.len(), 1, "{sums:?}");
        expect_partition(&sums, "2025-12", A, authoritative);
        assert_eq!(lake_files(lake.path()).len(), 1);
    };

    let d3 = gen(src.path(), A, "2025-12", Some(3), false);
    run_job(s, d, &[]);
    check(&d3);

    let d9 = gen(src.path(), A, "2025-12", Some(9), false);
    let (_, r) = run_job(s, d, &[]);
    assert_eq!(r["totals"]["replaced"], 1);
    check(&d9);

    let monthly = gen(src.path(), A, "2025-12", None, false);
    run_job(s, d, &[]);
    check(&monthly);

    // A late, older daily (delivered after the monthly) is skipped: no roll-back.
    let late = gen(src.path(), A, "2025-12", Some(12), false);
    let (_, r) = run_job(s, d, &[]);
    assert_eq!(r["totals"]["ingested"], 0);
    assert_eq!(r["totals"]["replaced"], 0);
    let late_key = late.file_name().unwrap().to_str().unwrap();
    let entry = report_object(&r, late_key).unwrap();
    assert_eq!(entry["outcome"], "skip");
    assert!(
        entry["reason"].as_str().unwrap().contains("superseded"),
        "{entry}"
    );
    check(&monthly);

    // The monthly re-delivered with restated amounts replaces its own earlier load.
    let before = csv_totals(&monthly).billed;
    std::thread::sleep(std::time::Duration::from_millis(20));
    gen(src.path(), A, "2025-12", None, true);
    let (_, r) = run_job(s, d, &[]);
    assert_eq!(r["totals"]["replaced"], 1);
    check(&monthly);
    assert_ne!(
        csv_totals(&monthly).billed,
        before,
        "the restated bill differs"
    );
}

#[test]
fn decodes_real_world_csv_shapes() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    // Columns in another order, BOM, CRLF, quoted commas, quotes and newlines, NULL and -,
    // an x_ column and a non-FOCUS column, Chinese text.
    let mut header: Vec<&str> = billpipe::generate::HEADER.to_vec();
    header.reverse();
    header.push("x_CustomNote");
    let row = |cost: &str, name: &str, note: &str| -> String {
        let mut fields = Vec::new();
        for h in &header {
            let v = match *h {
                "BilledCost" => cost.to_string(),
                "BillingAccountId" => "300030003003".into(),
                "BillingCurrency" => "CNY".into(),
                "BillingPeriodStart" => "2025-11-30T16:00:00Z".into(),
                "BillingPeriodEnd" => "2025-12-31T15:59:59Z".into(),
                "ChargePeriodStart" => "2025-12-01T00:00:00Z".into(),
                "ChargePeriodEnd" => "2025-12-01T01:00:00Z".into(),
                "ChargeCategory" => "Usage".into(),
                "ResourceName" => name.to_string(),
                "EffectiveCost" => "NULL".into(),
                "ServiceCategory" => "-".into(),
                "ListCost" => "1.5".into(),
                "ContractedCost" => "1.25".into(),
                "ListUnitPrice" => "1.5".into(),
                "ContractedUnitPrice" => "1.25".into(),
                "PricingQuantity" | "ConsumedQuantity" => "1".into(),
                "PricingUnit" | "ConsumedUnit" => "Hours".into(),
                "PricingCategory" => "Standard".into(),
                "ResourceId" => "ins-1".into(),
                "x_CustomNote" => note.to_string(),
                "ServiceName" => "云服务器".into(),
                "ProviderName" | "PublisherName" | "InvoiceIssuerName" => "Tencent Cloud".into(),
                "ChargeFrequency" => "Usage-Based".into(),
                _ => String::new(),
            };
            fields.push(v);
        }
        fields.join(",")
    };
    let mut text = String::from("\u{feff}");
    text.push_str(&header.join(","));
    text.push_str("\r\n");
    text.push_str(&row(
        "0.12345678",
        "\"服务器, \"\"主\"\"\nline two\"",
        "备注",
    ));
    text.push_str("\r\n");
    text.push_str(&row("1e-2", "plain", ""));
    text.push_str("\r\n");
    text.push_str(&row("abc", "broken", "x"));
    text.push_str("\r\n");
    text.push_str(&row("-0.00000001", "neg", "y"));
    text.push_str("\r\n");
    let name = "FOCUS-bill_details-300030003003-202512.CSV";
    std::fs::write(src.path().join(name), text).unwrap();

    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 3, "{}", out.stdout);
    assert_eq!(
        report["totals"]["rows_loaded"], 3,
        "{}",
        report["objects"][0]
    );
    assert_eq!(report["totals"]["rows_quarantined"], 1);
    // The bad row starts on line 5: line 2 holds a field with an embedded newline.
    let problems = report["objects"][0]["problems"].as_array().unwrap();
    assert!(
        problems[0]
            .as_str()
            .unwrap()
            .starts_with("held out: line 5, column BilledCost"),
        "{problems:?}"
    );

    let files = lake_files(lake.path());
    assert_eq!(files.len(), 1);
    let data = bytes::Bytes::from(std::fs::read(&files[0]).unwrap());
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data).unwrap();
    let schema = reader.schema().clone();
    let batch = reader.build().unwrap().next().unwrap().unwrap();
    use arrow_array::{Array, Decimal128Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow_schema::DataType;
    assert_eq!(
        schema.field_with_name("BilledCost").unwrap().data_type(),
        &DataType::Decimal128(38, 18)
    );
    assert_eq!(
        schema
            .field_with_name("BillingAccountId")
            .unwrap()
            .data_type(),
        &DataType::Utf8
    );
    assert!(
        matches!(schema.field_with_name("ChargePeriodStart").unwrap().data_type(), DataType::Timestamp(_, Some(tz)) if tz.as_ref() == "UTC")
    );
    let names = col::<StringArray>(&batch, "ResourceName");
    assert_eq!(names.value(0), "服务器, \"主\"\nline two");
    let cost = col::<Decimal128Array>(&batch, "BilledCost");
    let total: i128 = cost.iter().flatten().sum();
    assert_eq!(
        Decimal::from_i128_with_scale(total, 18)
            .normalize()
            .to_string(),
        "0.13345677"
    );
    let eff = batch.column_by_name("EffectiveCost").unwrap();
    assert_eq!(eff.null_count(), 3, "NULL reads as null");
    assert_eq!(
        batch
            .column_by_name("ServiceCategory")
            .unwrap()
            .null_count(),
        3,
        "- reads as null"
    );
    let note = col::<StringArray>(&batch, "x_CustomNote");
    assert_eq!(note.value(0), "备注");
    let lines = col::<Int64Array>(&batch, "x_SourceLine");
    assert_eq!(lines.values().to_vec(), vec![2, 4, 6]);
    let keys = col::<StringArray>(&batch, "x_SourceKey");
    assert_eq!(keys.value(0), name);
    let start = col::<TimestampMicrosecondArray>(&batch, "ChargePeriodStart");
    assert_eq!(start.value(0), 1_764_547_200_000_000);
    // Partitioned by the Beijing-time month of BillingPeriodStart.
    assert!(files[0]
        .to_str()
        .unwrap()
        .contains("billing_period=2025-12/billing_account_id=300030003003/"));
}

#[test]
fn a_file_without_billed_cost_is_rejected_and_the_rest_loads() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let good = gen(src.path(), A, "2025-12", Some(3), false);
    let bad = src
        .path()
        .join("FOCUS-bill_details-200020002002-20251204.CSV");
    let text = std::fs::read_to_string(&good)
        .unwrap()
        .replacen("BilledCost", "BilledKost", 1);
    std::fs::write(&bad, text).unwrap();
    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 3);
    assert_eq!(report["totals"]["rejected"], 1);
    assert_eq!(report["totals"]["ingested"], 1);
    let rejected = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["outcome"] == "reject")
        .unwrap();
    let reason = rejected["reason"].as_str().unwrap();
    assert!(
        reason.contains("line 1: header lacks BilledCost; without it no row can be counted"),
        "{reason}"
    );
    assert!(
        out.stdout
            .contains("REJECT  FOCUS-bill_details-200020002002-20251204.CSV"),
        "{}",
        out.stdout
    );
    let sums = local_lake_sums(lake.path());
    assert_eq!(sums.len(), 1);
    expect_partition(&sums, "2025-12", A, &good);
}

/// A mandatory column the rows can be placed and counted without is judged, not a reason to
/// drop the file's money: the file loads and `Column.Mandatory` is counted.
#[test]
fn a_file_missing_another_mandatory_column_loads_and_is_judged() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let good = gen(src.path(), A, "2025-12", Some(3), false);
    let text =
        std::fs::read_to_string(&good)
            .unwrap()
            .replacen("ChargeCategory", "ChargeKategory", 1);
    std::fs::write(&good, text).unwrap();
    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let rules = &report["objects"][0]["rules"];
    assert_eq!(rules["Column.Mandatory"]["count"], 1, "{rules:#}");
    assert!(rules["Column.Mandatory"]["message"]
        .as_str()
        .unwrap()
        .contains("ChargeCategory"));
    let sums = local_lake_sums(lake.path());
    expect_partition(&sums, "2025-12", A, &good);
}

#[test]
fn plan_reports_and_changes_nothing() {
    let lake = tempfile::tempdir().unwrap();
    let dest = lake.path().to_str().unwrap();
    let out = billpipe(&["plan", "--source", "testdata/bucket", "--dest", dest]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("ingest  billing/focus/FOCUS-bill_details-200020002001-202511.CSV"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("superseded by the newer monthly final"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("skip    billing/README.txt  - not a bill file"),
        "{}",
        out.stdout
    );
    assert!(lake_files(lake.path()).is_empty());
    assert!(!lake.path().join("_billpipe/ledger.json").exists());
}

#[test]
fn the_native_examples_load() {
    let lake = tempfile::tempdir().unwrap();
    let (out, report) = run_job("testdata/native", lake.path().to_str().unwrap(), &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(report["totals"]["ingested"], 4);
    assert_eq!(report["totals"]["rejected"], 0);
    // The L3 CSV's BilledCost is its Total Cost (Including Tax) but on voucher rows.
    let mut r = csv::Reader::from_path(
        "testdata/native/L3-bill_details-800001608331-202511-0001-example.csv",
    )
    .unwrap();
    let h = r.headers().unwrap().clone();
    let (tt, tc) = (
        h.iter().position(|c| c == "Transaction Type").unwrap(),
        h.iter()
            .position(|c| c == "Total Cost (Including Tax)")
            .unwrap(),
    );
    let (mut rows, mut billed) = (0u64, Decimal::ZERO);
    for rec in r.records() {
        let rec = rec.unwrap();
        rows += 1;
        if &rec[tt] != "Voucher deduction" {
            billed += rec[tc].parse::<Decimal>().unwrap();
        }
    }
    let sums = local_lake_sums(lake.path());
    assert_eq!(
        sums[&("2025-11".to_string(), "800001608331".to_string())],
        (rows, billed)
    );
    assert_eq!(sums.len(), 4);
}

#[test]
fn skipped_objects_are_summarised_by_reason_in_a_bounded_report() {
    // 2,000 skipped objects: 1,200 that are no bill file, 800 bills outside --from.
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let notes = src.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    for i in 0..1200 {
        std::fs::write(notes.join(format!("readme-{i:04}.txt")), b"hello").unwrap();
    }
    for i in 0..800 {
        let name =
            billpipe::generate::object_name(&format!("{}", 800000000000u64 + i), "2024-01", None)
                .unwrap();
        std::fs::write(src.path().join(name), b"not read").unwrap();
    }
    let dest = lake.path().to_str().unwrap();
    let (out, report) = run_job(src.path().to_str().unwrap(), dest, &["--from", "2025-01"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(report["totals"]["objects"], 2000);
    assert_eq!(report["totals"]["skipped"], 2000);
    assert_eq!(report["objects"].as_array().unwrap().len(), 0);
    let skipped = &report["skipped"];
    assert_eq!(skipped["count"], 2000);
    assert_eq!(skipped["listed"], false);
    let by: Vec<(String, u64, usize)> = skipped["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_string(),
                r["count"].as_u64().unwrap(),
                r["examples"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        by,
        vec![
            ("not a bill file".to_string(), 1200, 5),
            ("out of range".to_string(), 800, 5)
        ]
    );
    let first = &skipped["by_reason"][0]["examples"][0];
    assert_eq!(first["key"], "notes/readme-0000.txt");
    assert!(first["reason"]
        .as_str()
        .unwrap()
        .starts_with("not a bill file: "));
    // A fixed-size summary: a few KB, where listing them took ~640 bytes per object.
    let bytes = serde_json::to_vec_pretty(&report).unwrap().len();
    assert!(bytes < 16 * 1024, "{bytes} bytes");
    // The human summary groups them as before.
    assert!(
        out.stdout
            .contains("skipped (-v to list): 1200 not a bill file, 800 out of range"),
        "{}",
        out.stdout
    );
}
