//! The lake equals the bill (issue 9): judging never removes money by default, every run
//! reconciles each snapshot (rows read = loaded + held out; BilledCost of the file = lake + held
//! out), the exit code is non-zero exactly while money is missing from the lake, and names that
//! look like bills but are not loaded are reported without `-v`.

mod common;

use std::path::{Path, PathBuf};

use billpipe::generate::{object_name, write_detail_csv, write_focus_csv, GenerateOptions};
use common::*;
use rust_decimal::Decimal;

const A: &str = "200020002001";

fn options(through: Option<u32>, gaps: bool, bad_rows: Vec<u64>) -> GenerateOptions {
    GenerateOptions {
        account: A.into(),
        month: "2025-12".into(),
        through_day: through,
        rows_per_day: 40,
        seed: 9,
        bad_rows,
        restated: false,
        gaps,
    }
}

fn write(dir: &Path, opts: &GenerateOptions) -> PathBuf {
    let path = dir.join(object_name(&opts.account, &opts.month, opts.through_day).unwrap());
    write_focus_csv(opts, std::fs::File::create(&path).unwrap()).unwrap();
    path
}

/// Rewrites one column of one data row (0-based) of a CSV file.
fn set_cell(path: &Path, row: usize, column: &str, value: &str) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let idx = headers.iter().position(|h| h == column).unwrap();
    let mut rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let mut fields: Vec<String> = rows[row].iter().map(str::to_string).collect();
    fields[idx] = value.to_string();
    rows[row] = csv::StringRecord::from(fields);
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_path(path)
        .unwrap();
    w.write_record(&headers).unwrap();
    for r in rows {
        w.write_record(&r).unwrap();
    }
    w.flush().unwrap();
}

/// `billpipe run` from a temporary source folder into a temporary lake.
fn load(
    src: &tempfile::TempDir,
    lake: &tempfile::TempDir,
    extra: &[&str],
) -> (Output, serde_json::Value) {
    run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        extra,
    )
}

/// Rows and BilledCost of account A's partition of `month`.
fn partition<'a>(sums: &'a Sums, month: &str) -> &'a (u64, Decimal) {
    sums.get(&(month.to_string(), A.to_string()))
        .unwrap_or_else(|| panic!("no partition {month}/{A} in {sums:?}"))
}

fn dec(v: &serde_json::Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}"))
        .parse::<Decimal>()
        .unwrap()
        .normalize()
}

fn the_object<'a>(report: &'a serde_json::Value, key_part: &str) -> &'a serde_json::Value {
    report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"].as_str().unwrap().contains(key_part))
        .unwrap_or_else(|| panic!("no object {key_part} in {report:#}"))
}

/// A month shaped like real Tencent FOCUS deliveries: credits (negative), taxes and adjustments
/// with empty ContractedCost, ListCost, unit prices and ServiceName. Under the default (tencent)
/// profile every row is in the lake and the partition equals the file, to the last digit.
#[test]
fn realistic_month_with_gaps_equals_the_file() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let daily = write(src.path(), &options(Some(9), true, vec![]));
    let t = csv_totals(&daily);
    // The input really has the shapes that used to be dropped.
    let text = std::fs::read_to_string(&daily).unwrap();
    let credits = text.lines().filter(|l| l.contains(",Credit,")).count();
    let taxes = text.lines().filter(|l| l.contains(",Tax,")).count();
    assert!(credits > 5 && taxes > 5, "{credits} credits, {taxes} taxes");
    assert!(text.contains(",-"), "credits are negative");

    let (out, report) = load(&src, &lake, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let sums = local_lake_sums(lake.path());
    let got = partition(&sums, "2025-12");
    assert_eq!(got.0, t.rows);
    assert_eq!(got.1.normalize(), t.billed.normalize());
    let o = the_object(&report, "20251210");
    let r = &o["reconciliation"];
    assert_eq!(r["rows_read"], t.rows);
    assert_eq!(r["rows_held_out"], 0);
    assert_eq!(dec(&r["billed_cost_file"]), t.billed.normalize());
    assert_eq!(dec(&r["billed_cost_lake"]), t.billed.normalize());
    // The gaps are judged and counted, not held out.
    let rules = &o["rules"];
    for id in [
        "NotNull.ContractedCost",
        "NotNull.ListCost",
        "NotNull.ServiceName",
    ] {
        assert!(
            rules[id]["count"].as_u64().unwrap_or(0) > 0,
            "{id} counted: {rules:#}"
        );
    }
    assert!(out.stdout.contains(&format!(
        "{} rows read, all loaded; BilledCost file",
        t.rows
    )));
}

/// A cell that does not type keeps its row: null in the lake, the raw text in the quarantine
/// file and the report. The run exits 0: the money is in the lake.
#[test]
fn unparsable_charge_period_start_is_loaded_with_a_finding() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let file = write(src.path(), &options(Some(3), false, vec![]));
    set_cell(&file, 4, "ChargePeriodStart", "2025-12-0xT01:00:00Z");
    let t = csv_totals(&file);
    let (out, report) = load(&src, &lake, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let sums = local_lake_sums(lake.path());
    let got = partition(&sums, "2025-12");
    assert_eq!((got.0, got.1.normalize()), (t.rows, t.billed.normalize()));
    let o = the_object(&report, "20251204");
    assert_eq!(o["rules"]["Type.ChargePeriodStart"]["count"], 1);
    let q = std::fs::read_to_string(
        lake.path()
            .join("_quarantine/tencent-200020002001-202512.csv"),
    )
    .unwrap();
    let line = q.lines().nth(1).unwrap();
    assert!(
        line.contains(",6,ChargePeriodStart,2025-12-0xT01:00:00Z,") && line.ends_with(",loaded"),
        "{q}"
    );
    // The lake's row at line 6 has a null ChargePeriodStart.
    let mut nulls = 0;
    for f in lake_files(lake.path()) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
            std::fs::File::open(&f).unwrap(),
            1024,
        )
        .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let start = batch.column(batch.schema().index_of("ChargePeriodStart").unwrap());
            let lines: &arrow_array::Int64Array = col(&batch, "x_SourceLine");
            for i in 0..batch.num_rows() {
                if arrow_array::Array::is_null(start.as_ref(), i) {
                    assert_eq!(lines.value(i), 6);
                    nulls += 1;
                }
            }
        }
    }
    assert_eq!(nulls, 1);
}

/// A row whose BilledCost cannot be read cannot be counted: it is held out, shown in the
/// reconciliation, and every run exits 3 while the lake lacks it.
#[test]
fn unparsable_billed_cost_is_held_out_and_reconciled() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let file = write(src.path(), &options(Some(3), false, vec![7]));
    let t = csv_totals(&file);
    assert_eq!(t.bad_rows, 1);
    let (out, report) = load(&src, &lake, &[]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let r = &the_object(&report, "20251204")["reconciliation"];
    assert_eq!(r["rows_read"], t.rows + 1);
    assert_eq!(r["rows_loaded"], t.rows);
    assert_eq!(r["rows_held_out"], 1);
    assert_eq!(r["rows_billed_cost_unreadable"], 1);
    assert_eq!(dec(&r["billed_cost_file"]), t.billed.normalize());
    assert_eq!(dec(&r["billed_cost_lake"]), t.billed.normalize());
    assert!(
        out.stdout
            .contains("THE LAKE LACKS 1 ROW(S) OF THIS FILE (1 whose BilledCost cannot be read)"),
        "{}",
        out.stdout
    );
    // Nothing new: the run still says the lake is short, and still exits 3.
    let (again, report) = load(&src, &lake, &[]);
    assert_eq!(again.code, 3, "{}", again.stdout);
    assert!(
        again
            .stdout
            .contains("LAKE SHORT: tencent/200020002001/2025-12"),
        "{}",
        again.stdout
    );
    assert_eq!(report["lake_gaps"][0]["rows_held_out"], 1);
}

/// Gatekeeping is opt-in: `--quarantine-on error` (or the strict-gate profile) holds rows with
/// error findings out, and the reconciliation still accounts for every cent.
#[test]
fn gatekeeping_holds_out_and_still_reconciles() {
    let profiles = tempfile::tempdir().unwrap();
    let gate = profiles.path().join("tencent-gate.toml");
    std::fs::write(
        &gate,
        "name = \"tencent-gate\"\nextends = \"tencent\"\nquarantine_on = \"error\"\n",
    )
    .unwrap();
    let gate = gate.to_str().unwrap();
    for extra in [&["--quarantine-on", "error"][..], &["--profile", gate][..]] {
        let src = tempfile::tempdir().unwrap();
        let lake = tempfile::tempdir().unwrap();
        let file = write(src.path(), &options(Some(9), true, vec![]));
        let t = csv_totals(&file);
        let (out, report) = load(&src, &lake, extra);
        assert_eq!(out.code, 3, "{extra:?}: {}{}", out.stdout, out.stderr);
        let r = &the_object(&report, "20251210")["reconciliation"];
        let held = r["rows_held_out"].as_u64().unwrap();
        assert!(held > 0 && held < t.rows, "{extra:?}: {r}");
        assert_eq!(r["rows_loaded"].as_u64().unwrap() + held, t.rows);
        assert_eq!(
            dec(&r["billed_cost_lake"]) + dec(&r["billed_cost_held_out"]),
            t.billed.normalize()
        );
        let sums = local_lake_sums(lake.path());
        let got = partition(&sums, "2025-12");
        assert_eq!(got.1.normalize(), dec(&r["billed_cost_lake"]));
    }
}

/// strict-gate holds out every row that breaks the spec as written: on Tencent's file (whose
/// ChargeFrequency spelling alone breaks it on every row) nothing is left, so the object is
/// rejected and the lake keeps what it had.
#[test]
fn strict_gate_on_tencent_data_rejects_rather_than_empties() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    write(src.path(), &options(Some(9), true, vec![]));
    let (out, report) = load(&src, &lake, &["--profile", "strict-gate"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let o = the_object(&report, "20251210");
    assert_eq!(o["outcome"], "reject");
    assert!(o["reason"]
        .as_str()
        .unwrap()
        .contains("no row of its 360 could be loaded"));
    assert!(local_lake_sums(lake.path()).is_empty());
}

/// A row of another month cannot be placed in this file's snapshot (it would double-count in
/// the other month's partition): held out, reconciled, exit 3.
#[test]
fn row_of_another_month_is_held_out() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let file = write(src.path(), &options(Some(3), false, vec![]));
    set_cell(&file, 2, "BillingPeriodStart", "2025-10-31T16:00:00Z");
    let t = csv_totals(&file);
    let (out, report) = load(&src, &lake, &[]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let r = &the_object(&report, "20251204")["reconciliation"];
    assert_eq!(r["rows_held_out"], 1);
    assert_eq!(r["rows_billed_cost_unreadable"], 0);
    assert_eq!(dec(&r["billed_cost_file"]), t.billed.normalize());
    let sums = local_lake_sums(lake.path());
    assert_eq!(sums.len(), 1, "no second partition: {sums:?}");
    let got = partition(&sums, "2025-12");
    assert_eq!(got.0, t.rows - 1);
    assert_eq!(
        got.1.normalize() + dec(&r["billed_cost_held_out"]),
        t.billed.normalize()
    );
}

/// Names that look like bills but match no family are reported without -v and make the run
/// exit 3; `plan` says the same.
#[test]
fn near_miss_names_are_reported() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    write(src.path(), &options(Some(3), false, vec![]));
    let near = [
        "FOCUS-bill_details-200020002001-20251205.CSV.gz",
        "FOCUS-bill_details-200020002001-20251205 (1).CSV",
        "FOCUS-bill_details-200020002001-20251232.CSV",
        "100010445724-202511-by_used_time-bill_details.zip.part",
        // Family patterns match ASCII digits only: a full-width account is not account 115.
        "FOCUS-bill_details-１１５-20251205.CSV",
    ];
    for n in near {
        std::fs::write(src.path().join(n), b"x").unwrap();
    }
    std::fs::write(src.path().join("notes.txt"), b"x").unwrap();
    let (out, report) = load(&src, &lake, &[]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    for n in near {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with("NEAR-MISS") && l.contains(n)),
            "{n} reported: {}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("NEAR-MISS notes.txt"));
    assert_eq!(report["totals"]["near_misses"], 5);
    assert!(out
        .stdout
        .contains("5 object(s) look like bills but match no family"));
    let plan = billpipe(&[
        "plan",
        "--source",
        src.path().to_str().unwrap(),
        "--dest",
        lake.path().to_str().unwrap(),
    ]);
    assert_eq!(plan.code, 3, "{}", plan.stdout);
    let listed = plan
        .stdout
        .lines()
        .filter(|l| l.starts_with("NEAR-MISS"))
        .count();
    assert_eq!(listed, 5, "{}", plan.stdout);
}

/// A source with objects of which none is a bill (another provider's export) says so and
/// exits 3, without -v.
#[test]
fn a_source_without_bills_says_so() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    for n in ["aws/cur-00001.csv.gz", "azure/part_0_0001.csv", "README.md"] {
        let p = src.path().join(n);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"a,b\n1,2\n").unwrap();
    }
    let (out, _) = load(&src, &lake, &[]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("NO BILL FILES: none of the 3 object(s)"),
        "{}",
        out.stdout
    );
}

/// A native Transaction Type the mapping table does not know keeps its row: ChargeCategory,
/// ChargeClass and ChargeFrequency null, the native value kept in its x_ column, a finding
/// naming the value.
#[test]
fn unknown_transaction_type_keeps_the_row() {
    let opts = GenerateOptions {
        month: "2025-11".into(),
        ..options(None, false, vec![])
    };
    let mut csv_bytes = Vec::new();
    let stats = write_detail_csv(&opts, false, &mut csv_bytes).unwrap();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(csv_bytes.as_slice());
    let mut rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let idx = rows[0]
        .iter()
        .position(|h| h.trim_start_matches('\u{feff}') == "Transaction Type")
        .unwrap();
    // A metered row (BilledCost = Total Cost either way) gets a type nobody documented.
    let row = (1..rows.len())
        .find(|&i| rows[i][idx].to_lowercase().contains("pay-as-you-go"))
        .unwrap_or_else(|| panic!("no pay-as-you-go row in {:?}", &rows[..3]));
    let mut fields: Vec<String> = rows[row].iter().map(str::to_string).collect();
    fields[idx] = "Mystery fee".into();
    rows[row] = csv::StringRecord::from(fields);
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for r in &rows {
        w.write_record(r).unwrap();
    }
    let body = w.into_inner().unwrap();
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path()
            .join(format!("{A}-202511-by_used_time-bill_details.zip")),
        zip_of(&[("bill.csv", body.as_slice())]),
    )
    .unwrap();
    let (out, report) = load(&src, &lake, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let sums = local_lake_sums(lake.path());
    let got = partition(&sums, "2025-11");
    assert_eq!(got.0, stats.rows);
    assert_eq!(
        got.1.normalize(),
        Decimal::from_i128_with_scale(stats.billed_cost_e8, 8).normalize()
    );
    let rules = &the_object(&report, "bill_details")["rules"];
    assert_eq!(rules["Mapping.ChargeCategory"]["count"], 1, "{rules:#}");
    assert!(rules["Mapping.ChargeCategory"]["examples"][0]
        .as_str()
        .unwrap()
        .contains("Mystery fee"));
}

/// The mapping's one rewrite — BilledCost 0 on voucher (Credit) rows of native bills — is never
/// silent: every such row is counted under `ZeroedByMapping.BilledCost` with its native amount.
#[test]
fn voucher_rows_zeroed_by_the_mapping_are_counted_with_their_amount() {
    let opts = GenerateOptions {
        month: "2025-11".into(),
        ..options(None, false, vec![])
    };
    let mut csv_bytes = Vec::new();
    let stats = write_detail_csv(&opts, false, &mut csv_bytes).unwrap();
    assert!(stats.voucher_rows > 0);
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path()
            .join(format!("{A}-202511-by_used_time-bill_details.zip")),
        zip_of(&[("bill.csv", csv_bytes.as_slice())]),
    )
    .unwrap();
    let (out, report) = load(&src, &lake, &[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let rule = &the_object(&report, "bill_details")["rules"]["ZeroedByMapping.BilledCost"];
    assert_eq!(rule["count"], stats.voucher_rows, "{rule:#}");
    assert_eq!(rule["severity"], "warning");
    assert!(
        rule["examples"][0].as_str().unwrap().starts_with("line "),
        "{rule:#}"
    );
    let got = *partition(&local_lake_sums(lake.path()), "2025-11");
    assert_eq!(
        got,
        (
            stats.rows,
            Decimal::from_i128_with_scale(stats.billed_cost_e8, 8)
        )
    );
}
