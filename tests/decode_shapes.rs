//! Line shapes and quoting, end to end (local folder → local lake through the binary):
//! `x_SourceLine` is the physical line of the row (header = line 1) for LF, CRLF, CR-only and
//! mixed files, with quoted line breaks and blank lines; a runaway quote — one that swallows
//! whole records into one field, even with the right field count — holds out each swallowed
//! line with the range in the reason; a stray `"` in an unquoted field loads as written with a
//! finding on its own line; a quote left open names the line it opened on. BilledCost is
//! compared exactly (rust_decimal): lake + held out = file.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow_array::{Array, Decimal128Array, Int64Array, StringArray};
use billpipe::generate::{write_focus_csv, GenerateOptions, HEADER};
use common::*;
use rust_decimal::Decimal;

/// A generated Tencent FOCUS month (93 rows, with credits, taxes and adjustments) as parsed
/// records, header first.
fn month(account: &str) -> Vec<Vec<String>> {
    let mut data = Vec::new();
    write_focus_csv(
        &GenerateOptions {
            account: account.into(),
            month: "2025-12".into(),
            through_day: None,
            rows_per_day: 3,
            seed: 11,
            bad_rows: Vec::new(),
            restated: false,
            gaps: true,
        },
        &mut data,
    )
    .unwrap();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(data.as_slice());
    let records: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    assert_eq!(records.len(), 94);
    records
}

/// The same month with every value free of quotes, commas and line breaks, so that a line can
/// be edited byte for byte.
fn plain_month(account: &str) -> Vec<Vec<String>> {
    let mut records = month(account);
    for r in &mut records {
        for f in r.iter_mut() {
            *f = f.replace('"', "'").replace(',', ";");
        }
    }
    records
}

fn column(name: &str) -> usize {
    HEADER.iter().position(|h| *h == name).unwrap()
}

fn quoted(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Writes records with the line end `eols[i % len]` after record i (line breaks inside a field
/// are written as that record's line end too) and a blank line after the records in `blank`.
/// Returns the file and the physical line each record starts on.
fn write_lines(records: &[Vec<String>], eols: &[&str], blank: &[usize]) -> (Vec<u8>, Vec<u64>) {
    let mut out = String::new();
    let mut starts = Vec::new();
    let mut line = 1u64;
    for (i, r) in records.iter().enumerate() {
        let eol = eols[i % eols.len()];
        starts.push(line);
        let text: Vec<String> = r.iter().map(|f| quoted(&f.replace('\n', eol))).collect();
        let text = text.join(",");
        line += 1 + r
            .iter()
            .map(|f| f.matches('\n').count() as u64)
            .sum::<u64>();
        out.push_str(&text);
        out.push_str(eol);
        if blank.contains(&i) {
            out.push_str(eol);
            line += 1;
        }
    }
    (out.into_bytes(), starts)
}

fn cost(text: &str) -> Option<Decimal> {
    (!text.is_empty()).then(|| Decimal::from_str_exact(text).unwrap())
}

fn file_name(account: &str) -> String {
    format!("FOCUS-bill_details-{account}-202512.CSV")
}

/// (x_SourceLine, BilledCost, ResourceName) of every row of an account's partition.
fn lake_rows(lake: &Path, account: &str) -> Vec<(u64, Option<Decimal>, Option<String>)> {
    let mut rows = Vec::new();
    for f in lake_files(lake) {
        if !f
            .to_string_lossy()
            .contains(&format!("billing_account_id={account}/"))
        {
            continue;
        }
        let data = bytes::Bytes::from(std::fs::read(&f).unwrap());
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let lines = col::<Int64Array>(&batch, "x_SourceLine");
            let costs = col::<Decimal128Array>(&batch, "BilledCost");
            let names = col::<StringArray>(&batch, "ResourceName");
            for i in 0..batch.num_rows() {
                rows.push((
                    lines.value(i) as u64,
                    costs
                        .is_valid(i)
                        .then(|| Decimal::from_i128_with_scale(costs.value(i), 18).normalize()),
                    names.is_valid(i).then(|| names.value(i).to_string()),
                ));
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    rows
}

fn object<'a>(report: &'a serde_json::Value, account: &str) -> &'a serde_json::Value {
    report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"].as_str().unwrap().contains(account))
        .unwrap_or_else(|| panic!("{account} not in the report"))
}

fn dec(v: &serde_json::Value) -> Decimal {
    Decimal::from_str_exact(v.as_str().unwrap())
        .unwrap()
        .normalize()
}

fn sum(costs: impl Iterator<Item = Option<Decimal>>) -> Decimal {
    costs.flatten().sum::<Decimal>().normalize()
}

#[test]
fn source_lines_are_physical_lines_for_lf_crlf_cr_and_mixed_files() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let shapes: [(&str, &[&str]); 4] = [
        ("610000000001", &["\n"]),
        ("610000000002", &["\r\n"]),
        ("610000000003", &["\r"]),
        ("610000000004", &["\r\n", "\n", "\r", "\n", "\r\n"]),
    ];
    let rn = column("ResourceName");
    let mut expected = BTreeMap::new();
    for (account, eols) in shapes {
        let mut records = month(account);
        // Real multi-line values (an address-like name with commas and quotes, a three-line
        // note) and a blank line: none of them is a record, all of them are lines.
        records[3][rn] = "服务器, \"主\"\nline two, with, commas".into();
        records[40][rn] = "a\nb\nc".into();
        let (data, starts) = write_lines(&records, eols, &[10, 93]);
        std::fs::write(src.path().join(file_name(account)), data).unwrap();
        let rows: Vec<(u64, Option<Decimal>, Option<String>)> = records[1..]
            .iter()
            .zip(&starts[1..])
            .map(|(r, line)| {
                (
                    *line,
                    cost(&r[column("BilledCost")]).map(|d| d.normalize()),
                    Some(r[rn].clone()),
                )
            })
            .collect();
        expected.insert(account, (records, starts, rows));
    }
    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let sums = local_lake_sums(lake.path());
    for (account, eols) in shapes {
        let (records, starts, rows) = &expected[account];
        let got = lake_rows(lake.path(), account);
        let want_lines: Vec<u64> = starts[1..].to_vec();
        let got_lines: Vec<u64> = got.iter().map(|r| r.0).collect();
        assert_eq!(got_lines, want_lines, "{account} {eols:?}");
        // Rows carry their own values: the line is the row's, not a neighbour's.
        for ((line, c, name), (wline, wc, wname)) in got.iter().zip(rows) {
            assert_eq!((line, c), (wline, wc), "{account}");
            // Line breaks inside a value are loaded as written.
            let eol_of = |i: usize| eols[i % eols.len()];
            let i = starts.iter().position(|s| s == line).unwrap();
            let written = wname.as_ref().map(|n| n.replace('\n', eol_of(i)));
            assert_eq!(name, &written, "{account} line {line}");
        }
        // Header on line 1, records 1..=3 on lines 2..=4 (record 3 spans 4-5), record 10 on
        // line 12, a blank line 13, record 11 on line 14.
        assert_eq!(want_lines[..6], [2, 3, 4, 6, 7, 8], "{account}");
        assert_eq!(want_lines[9..11], [12, 14], "{account}");
        let file = sum(records[1..].iter().map(|r| cost(&r[column("BilledCost")])));
        let part = &sums[&("2025-12".to_string(), account.to_string())];
        assert_eq!((part.0, part.1.normalize()), (93, file), "{account}");
        let r = &object(&report, account)["reconciliation"];
        assert_eq!(r["rows_read"], 93);
        assert_eq!(r["rows_held_out"], 0);
        assert_eq!(dec(&r["billed_cost_lake"]), file);
    }
}

/// Edits one field of a plain line (no quotes, no quoted commas): `f(value)`.
fn edit(line: &str, field: usize, f: impl Fn(&str) -> String) -> String {
    let mut fields: Vec<String> = line.split(',').map(str::to_string).collect();
    fields[field] = f(&fields[field]);
    fields.join(",")
}

struct Broken {
    account: &'static str,
    records: Vec<Vec<String>>,
    /// Physical lines (header = 1) swallowed by the runaway quote.
    swallowed: std::ops::RangeInclusive<u64>,
}

/// A plain month in CRLF (or `eol`) whose ResourceName opens a quote on line `open` that the
/// field `close_field` closes on line `close`.
fn runaway(
    dir: &Path,
    account: &'static str,
    eol: &str,
    open: u64,
    close: u64,
    close_field: usize,
) -> Broken {
    let records = plain_month(account);
    let mut lines: Vec<String> = records.iter().map(|r| r.join(",")).collect();
    let (o, c) = ((open - 1) as usize, (close - 1) as usize);
    lines[o] = edit(&lines[o], column("ResourceName"), |v| format!("\"{v}"));
    lines[c] = edit(&lines[c], close_field, |v| format!("{v}\""));
    let mut text = lines.join(eol);
    text.push_str(eol);
    std::fs::write(dir.join(file_name(account)), text).unwrap();
    Broken {
        account,
        records,
        swallowed: open..=close,
    }
}

#[test]
fn a_runaway_quote_holds_out_the_lines_it_swallowed_and_a_stray_quote_loads() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let rn = column("ResourceName");
    let broken = [
        // The issue's shape: opened at the start of a field, closed in the same column ten
        // lines later; the merged row has the header's field count.
        runaway(src.path(), "620000000001", "\r\n", 5, 15, rn),
        // One line later, in a CR-only file: no whole line inside the field, but the lines it
        // opens and closes on each read as a whole record.
        runaway(src.path(), "620000000002", "\r", 30, 31, rn),
        // Closed in another column (the merged row's field count is wrong too), LF.
        runaway(
            src.path(),
            "620000000003",
            "\n",
            60,
            64,
            column("ResourceId"),
        ),
    ];
    // A stray quote inside an unquoted field: read as written, the row loads, the finding
    // names its own line — the file is not said to end inside a quoted field.
    let stray = plain_month("620000000004");
    let mut lines: Vec<String> = stray.iter().map(|r| r.join(",")).collect();
    lines[6] = edit(&lines[6], rn, |_| "12\" disk".into());
    std::fs::write(
        src.path().join(file_name("620000000004")),
        lines.join("\r\n") + "\r\n",
    )
    .unwrap();
    // A quote left open on line 20 (a stray quote on line 4 before it): rejected, naming line
    // 20 and the lines it swallowed, not the last line.
    let open = plain_month("620000000005");
    let mut lines: Vec<String> = open.iter().map(|r| r.join(",")).collect();
    lines[3] = edit(&lines[3], rn, |_| "12\" disk".into());
    lines[19] = edit(&lines[19], column("Tags"), |_| "\"{\"\"k\"\":1".into());
    std::fs::write(
        src.path().join(file_name("620000000005")),
        lines.join("\n") + "\n",
    )
    .unwrap();

    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let sums = local_lake_sums(lake.path());
    let billed = column("BilledCost");

    for b in &broken {
        let o = object(&report, b.account);
        assert_eq!(o["outcome"], "ingest", "{o:#}");
        let (a, z) = (*b.swallowed.start(), *b.swallowed.end());
        let n = z - a + 1;
        // Every swallowed line is a record of the source: counted as read and held out.
        let r = &o["reconciliation"];
        assert_eq!(r["rows_read"], 93, "{o:#}");
        assert_eq!(r["rows_loaded"], 93 - n);
        assert_eq!(r["rows_held_out"], n);
        assert_eq!(r["rows_billed_cost_unreadable"], n);
        let problems: Vec<&str> = o["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert!(
            problems[0].starts_with(&format!("held out: line {a}, column ResourceName")),
            "{problems:?}"
        );
        assert!(
            problems[0].contains(&format!(
                "runaway quote: the quote that opens column ResourceName on line {a} closes only on line {z}, so lines {a}-{z} were read as one record"
            )),
            "{problems:?}"
        );
        // The quarantine file holds each swallowed line, with its own line number.
        let quarantine = std::fs::read_to_string(
            lake.path()
                .join(format!("_quarantine/tencent-{}-202512.csv", b.account)),
        )
        .unwrap();
        let mut q = csv::Reader::from_reader(quarantine.as_bytes());
        let held: BTreeSet<u64> = q
            .records()
            .map(|r| r.unwrap()[1].parse::<u64>().unwrap())
            .collect();
        assert_eq!(held, b.swallowed.clone().collect::<BTreeSet<u64>>());
        // Every other row is in the lake on its own line; lake + swallowed = file, exactly.
        let rows = lake_rows(lake.path(), b.account);
        let want: Vec<(u64, Option<Decimal>)> = (2..=94u64)
            .filter(|l| !b.swallowed.contains(l))
            .map(|l| {
                let c = cost(&b.records[(l - 1) as usize][billed]);
                (l, c.map(|d| d.normalize()))
            })
            .collect();
        let got: Vec<(u64, Option<Decimal>)> = rows.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(got, want, "{}", b.account);
        let file = sum(b.records[1..].iter().map(|r| cost(&r[billed])));
        let swallowed = sum(b
            .swallowed
            .clone()
            .map(|l| cost(&b.records[(l - 1) as usize][billed])));
        let lake_sum = sums[&("2025-12".to_string(), b.account.to_string())]
            .1
            .normalize();
        assert_eq!(lake_sum, sum(want.iter().map(|w| w.1)));
        assert_eq!(lake_sum + swallowed, file, "{}", b.account);
        assert_eq!(dec(&r["billed_cost_lake"]), lake_sum);
        assert_eq!(dec(&r["billed_cost_file"]), lake_sum);
        assert_eq!(dec(&r["billed_cost_held_out"]), Decimal::ZERO);
        assert!(out
            .stdout
            .contains(&format!("93 rows read: {} loaded, {n} held out", 93 - n)));
    }

    let o = object(&report, "620000000004");
    assert_eq!(o["outcome"], "ingest", "{o:#}");
    assert_eq!(o["reconciliation"]["rows_loaded"], 93);
    let rule = &o["rules"]["StrayQuote.ResourceName"];
    assert_eq!(rule["count"], 1, "{:#}", o["rules"]);
    assert!(
        rule["examples"][0]
            .as_str()
            .unwrap()
            .starts_with("line 7: \"12\\\" disk\" (a `\"` inside a field that is not quoted"),
        "{rule:#}"
    );
    let rows = lake_rows(lake.path(), "620000000004");
    assert_eq!(rows.len(), 93);
    assert_eq!(rows[5].0, 7);
    assert_eq!(rows[5].2.as_deref(), Some("12\" disk"));
    let file = sum(stray[1..].iter().map(|r| cost(&r[billed])));
    let part = &sums[&("2025-12".to_string(), "620000000004".to_string())];
    assert_eq!((part.0, part.1.normalize()), (93, file));

    let o = object(&report, "620000000005");
    assert_eq!(o["outcome"], "reject", "{o:#}");
    let reason = o["reason"].as_str().unwrap();
    assert!(
        reason.contains(
            "line 20: the file ends inside a quoted field: the quote that opens column Tags on line 20 is never closed, so lines 20-94 were read as that one field"
        ),
        "{reason}"
    );
    assert!(!sums.contains_key(&("2025-12".to_string(), "620000000005".to_string())));
}
