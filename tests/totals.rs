//! `billpipe totals` against DuckDB: the sums it prints per (billing month, billing account)
//! must be exactly what DuckDB's `sum(BilledCost)` says over the same lake glob a reader uses.
//! DuckDB is required (python3 with the `duckdb` module; `.ci/run` installs it): without it
//! these tests fail rather than skip, since they are the check that totals match readers.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use common::*;
use rust_decimal::Decimal;
use serde_json::Value;

/// One DuckDB group: (BillingCurrency, BilledCost sum, EffectiveCost sum, rows, EffectiveCost
/// null rows); sums as DuckDB's VARCHAR of the exact DECIMAL, `None` for SQL NULL.
type DuckRow = (Option<String>, Option<String>, Option<String>, u64, u64);

const DUCKDB_SCRIPT: &str = r#"
import json, sys
import duckdb
lake = sys.argv[1].replace("'", "''")
rows = duckdb.sql(f"""
  SELECT billing_period, billing_account_id, BillingCurrency,
         CAST(sum(BilledCost) AS VARCHAR), CAST(sum(EffectiveCost) AS VARCHAR),
         count(*), count(*) FILTER (WHERE EffectiveCost IS NULL)
  FROM read_parquet('{lake}/billing_period=*/**/*.parquet', hive_partitioning = true,
                    hive_types_autocast = false, union_by_name = true)
  GROUP BY ALL ORDER BY ALL""").fetchall()
print(json.dumps([list(r) for r in rows]))
"#;

/// DuckDB's sums per (billing_period, billing_account_id) of a local lake. Panics (fails the
/// test) if python3 cannot import duckdb.
fn duckdb_sums(lake: &Path) -> BTreeMap<(String, String), DuckRow> {
    let probe = Command::new("python3")
        .args(["-c", "import duckdb"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}): install python3, then pip install duckdb")
        });
    assert!(
        probe.status.success(),
        "python3 cannot import duckdb — pip install duckdb (.ci/run does)\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let out = Command::new("python3")
        .args(["-c", DUCKDB_SCRIPT, lake.to_str().unwrap()])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "duckdb query failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<Value>> = serde_json::from_slice(&out.stdout).unwrap();
    let text = |v: &Value| v.as_str().map(str::to_string);
    rows.iter()
        .map(|r| {
            let key = (text(&r[0]).unwrap(), text(&r[1]).unwrap());
            let value = (
                text(&r[2]),
                text(&r[3]),
                text(&r[4]),
                r[5].as_u64().unwrap(),
                r[6].as_u64().unwrap(),
            );
            (key, value)
        })
        .collect()
}

/// An exact decimal string without trailing fractional zeros (`8879.351300790000000000` →
/// `8879.35130079`, `12.000` → `12`): compared as text, never through a float.
fn canon(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

fn totals_json(lake: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["totals", "--dest", lake.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = billpipe(&args);
    assert_eq!(out.code, 0, "totals failed:\n{}{}", out.stdout, out.stderr);
    serde_json::from_str::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("totals --json is not JSON ({e}):\n{}", out.stdout))
        .as_array()
        .expect("a JSON array")
        .clone()
}

fn s(v: &Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a string in {v}"))
        .to_string()
}

fn key(v: &Value) -> (String, String) {
    (s(v, "billing_period"), s(v, "billing_account_id"))
}

/// `totals --json` agrees with DuckDB on every (month, account): same groups, same currency,
/// BilledCost to the last digit, same rows, EffectiveCost null exactly where DuckDB's sum is
/// NULL and with the same null count. Returns the totals for further checks.
fn assert_matches_duckdb(lake: &Path) -> Vec<Value> {
    let ours = totals_json(lake, &[]);
    let duck = duckdb_sums(lake);
    assert!(!duck.is_empty(), "DuckDB sees no rows in the lake");
    let ours_keys: Vec<_> = ours.iter().map(key).collect();
    let duck_keys: Vec<_> = duck.keys().cloned().collect();
    assert_eq!(ours_keys, duck_keys, "groups differ from DuckDB's");
    for row in &ours {
        let (currency, billed, effective, rows, effective_nulls) = &duck[&key(row)];
        let k = key(row);
        assert_eq!(
            row["currency"].as_str(),
            currency.as_deref(),
            "{k:?} currency"
        );
        assert_eq!(
            canon(&s(row, "billed_cost")),
            canon(billed.as_deref().expect("DuckDB BilledCost sum is NULL")),
            "{k:?} BilledCost vs DuckDB sum(BilledCost)"
        );
        assert_eq!(row["rows"].as_u64(), Some(*rows), "{k:?} rows");
        assert_eq!(
            row["effective_cost"].as_str().map(canon),
            effective.as_deref().map(canon),
            "{k:?} EffectiveCost (null only when every row is null)"
        );
        assert_eq!(
            row["effective_cost_null_rows"].as_u64(),
            Some(*effective_nulls),
            "{k:?} EffectiveCost null rows"
        );
        assert_eq!(row["billed_cost_null_rows"].as_u64(), Some(0), "{k:?}");
    }
    ours
}

fn run_into(source: &Path, lake: &Path) {
    let (out, _) = run_job(source.to_str().unwrap(), lake.to_str().unwrap(), &[]);
    assert!(
        out.code == 0 || out.code == 3,
        "run failed ({}):\n{}{}",
        out.code,
        out.stdout,
        out.stderr
    );
}

#[test]
fn example_bucket_totals_equal_duckdb() {
    let lake = tempfile::tempdir().unwrap();
    run_into(Path::new("testdata/bucket"), lake.path());
    let rows = assert_matches_duckdb(lake.path());
    assert_eq!(rows.len(), 4, "2 accounts x 2 months, one currency");

    // The snapshot behind each partition comes from the ledger.
    let by_key: BTreeMap<_, _> = rows.iter().map(|r| (key(r), r)).collect();
    let row = |p: &str, a: &str| by_key[&(p.to_string(), a.to_string())];
    assert_eq!(s(row("2025-11", "200020002001"), "snapshot"), "final");
    // The newest December daily is delivered on the 6th: it covers the 1st through the 5th.
    let dec = row("2025-12", "200020002002");
    assert_eq!(s(dec, "snapshot"), "month-to-date through day 5");
    let file = &dec["files"][0];
    assert_eq!(
        s(file, "source_key"),
        "billing/focus/FOCUS-bill_details-200020002002-20251206.CSV"
    );
    assert_eq!(
        file["rows_held_out"], 1,
        "the one unparsable row is held out"
    );
    assert!(file["loaded_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    // Tencent ships no EffectiveCost: null, not 0, with every row counted as null.
    assert_eq!(dec["effective_cost"], Value::Null);
    assert_eq!(dec["effective_cost_null_rows"], dec["rows"]);

    // The table: one line per group, a grand total per currency, exit 0.
    let out = billpipe(&["totals", "--dest", lake.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let total: Decimal = rows
        .iter()
        .map(|r| Decimal::from_str(&s(r, "billed_cost")).unwrap())
        .sum();
    let total_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("no total line:\n{}", out.stdout));
    assert!(
        total_line.contains(" USD ") && total_line.contains(&total.normalize().to_string()),
        "{total_line}\nexpected {total}"
    );
    assert!(
        out.stdout.contains("month-to-date through day 5"),
        "{}",
        out.stdout
    );
}

const ACCOUNTS: [&str; 3] = ["300030003001", "300030003002", "300030003003"];

/// 3 accounts x 2 months: October final for all; November final for the first, a daily
/// through the 9th for the second, dailies through the 9th and the 20th for the third.
fn generated_lake() -> (tempfile::TempDir, tempfile::TempDir) {
    let bucket = tempfile::tempdir().unwrap();
    let out_dir = bucket.path().to_str().unwrap();
    let gen = |account: &str, month: &str, through: Option<&str>, seed: &str| {
        let mut args = vec![
            "generate",
            "--account",
            account,
            "--month",
            month,
            "--rows-per-day",
            "5",
            "--seed",
            seed,
            "--out-dir",
            out_dir,
        ];
        if let Some(day) = through {
            args.extend(["--through-day", day]);
        }
        let out = billpipe(&args);
        assert_eq!(out.code, 0, "generate: {}{}", out.stdout, out.stderr);
    };
    for (n, account) in ACCOUNTS.iter().enumerate() {
        gen(account, "2025-10", None, &format!("{}", 10 + n));
    }
    gen(ACCOUNTS[0], "2025-11", None, "20");
    gen(ACCOUNTS[1], "2025-11", Some("9"), "21");
    gen(ACCOUNTS[2], "2025-11", Some("9"), "22");
    gen(ACCOUNTS[2], "2025-11", Some("20"), "23");
    let lake = tempfile::tempdir().unwrap();
    run_into(bucket.path(), lake.path());
    (bucket, lake)
}

#[test]
fn generated_three_accounts_two_months_equal_duckdb() {
    let (_bucket, lake) = generated_lake();
    let rows = assert_matches_duckdb(lake.path());
    assert_eq!(rows.len(), 6, "3 accounts x 2 months");
    let snapshot = |p: &str, a: &str| {
        rows.iter()
            .find(|r| key(r) == (p.to_string(), a.to_string()))
            .map(|r| s(r, "snapshot"))
            .unwrap_or_else(|| panic!("no row {p}/{a}"))
    };
    for a in ACCOUNTS {
        assert_eq!(snapshot("2025-10", a), "final");
    }
    assert_eq!(snapshot("2025-11", ACCOUNTS[0]), "final");
    assert_eq!(
        snapshot("2025-11", ACCOUNTS[1]),
        "month-to-date through day 9"
    );
    assert_eq!(
        snapshot("2025-11", ACCOUNTS[2]),
        "month-to-date through day 20",
        "the later daily replaced the earlier one"
    );

    // A file no ledger entry lists still counts (readers see it) and is flagged.
    let from = lake
        .path()
        .join("billing_period=2025-10/billing_account_id=300030003001");
    let stray_dir = lake
        .path()
        .join("billing_period=2025-10/billing_account_id=acct%2F9");
    std::fs::create_dir_all(&stray_dir).unwrap();
    std::fs::copy(
        from.join("tencent-300030003001-202510.parquet"),
        stray_dir.join("stray.parquet"),
    )
    .unwrap();
    let rows = assert_matches_duckdb(lake.path());
    let stray = rows
        .iter()
        .find(|r| s(r, "billing_account_id") == "acct/9")
        .expect("the stray file's partition, unescaped");
    assert_eq!(s(stray, "snapshot"), "not in ledger");
}

/// Adds decimal strings exactly.
fn dec(v: &Value, field: &str) -> Decimal {
    Decimal::from_str(&s(v, field)).unwrap()
}

#[test]
fn by_service_and_sub_account_add_up_to_plain_totals() {
    let (_bucket, lake) = generated_lake();
    let plain = totals_json(lake.path(), &[]);
    for (by, field) in [
        ("service", "service_name"),
        ("sub-account", "sub_account_id"),
    ] {
        let grouped = totals_json(lake.path(), &["--by", by]);
        assert!(grouped.len() > plain.len(), "--by {by} splits the groups");
        for p in &plain {
            let parts: Vec<&Value> = grouped.iter().filter(|g| key(g) == key(p)).collect();
            assert!(!parts.is_empty(), "--by {by}: no rows for {:?}", key(p));
            assert!(
                parts.iter().all(|g| g.get(field).is_some()),
                "{field} missing"
            );
            let billed: Decimal = parts.iter().map(|g| dec(g, "billed_cost")).sum();
            assert_eq!(
                billed,
                dec(p, "billed_cost"),
                "--by {by} BilledCost {:?}",
                key(p)
            );
            let rows: u64 = parts.iter().map(|g| g["rows"].as_u64().unwrap()).sum();
            assert_eq!(
                Some(rows),
                p["rows"].as_u64(),
                "--by {by} rows {:?}",
                key(p)
            );
            let nulls: u64 = parts
                .iter()
                .map(|g| g["effective_cost_null_rows"].as_u64().unwrap())
                .sum();
            assert_eq!(Some(nulls), p["effective_cost_null_rows"].as_u64());
            for g in &parts {
                assert_eq!(g["snapshot"], p["snapshot"], "same snapshot per partition");
            }
        }
    }
}

#[test]
fn csv_and_filters() {
    let (_bucket, lake) = generated_lake();
    let dest = lake.path().to_str().unwrap();
    let all = totals_json(lake.path(), &[]);

    let out = billpipe(&[
        "totals",
        "--dest",
        dest,
        "--csv",
        "--month",
        "2025-11",
        "--account",
        ACCOUNTS[1],
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let mut reader = csv::Reader::from_reader(out.stdout.as_bytes());
    let header = reader.headers().unwrap().clone();
    for column in [
        "billing_period",
        "billing_account_id",
        "currency",
        "rows",
        "billed_cost",
        "effective_cost",
        "effective_cost_null_rows",
        "snapshot",
        "source_key",
        "loaded_at",
        "rows_held_out",
    ] {
        assert!(
            header.iter().any(|h| h == column),
            "no {column} in {header:?}"
        );
    }
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 1, "{}", out.stdout);
    let get = |name: &str| {
        let i = header.iter().position(|h| h == name).unwrap();
        records[0][i].to_string()
    };
    let expected = all
        .iter()
        .find(|r| key(r) == ("2025-11".to_string(), ACCOUNTS[1].to_string()))
        .unwrap();
    assert_eq!(get("billing_period"), "2025-11");
    assert_eq!(get("billing_account_id"), ACCOUNTS[1]);
    assert_eq!(get("billed_cost"), s(expected, "billed_cost"));
    assert_eq!(get("rows"), expected["rows"].to_string());
    assert_eq!(get("effective_cost"), "", "all null: empty, not 0");
    assert_eq!(get("snapshot"), "month-to-date through day 9");
    assert!(get("source_key").ends_with("FOCUS-bill_details-300030003002-20251110.CSV"));

    // --month alone, --account alone.
    let october = totals_json(lake.path(), &["--month", "2025-10"]);
    assert_eq!(october.len(), 3);
    assert!(october.iter().all(|r| s(r, "billing_period") == "2025-10"));
    let one = totals_json(lake.path(), &["--account", ACCOUNTS[2]]);
    assert_eq!(one.len(), 2);
    assert!(one
        .iter()
        .all(|r| s(r, "billing_account_id") == ACCOUNTS[2]));
    for r in october.iter().chain(&one) {
        assert!(
            all.contains(r),
            "a filtered row differs from the unfiltered one: {r}"
        );
    }
    // A filter matching nothing is an empty answer, not an error.
    assert!(totals_json(lake.path(), &["--month", "2024-01"]).is_empty());
}

#[test]
fn no_lake_is_an_error() {
    let empty = tempfile::tempdir().unwrap();
    let out = billpipe(&["totals", "--dest", empty.path().to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("no lake here"), "{}", out.stderr);
}
