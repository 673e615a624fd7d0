//! FOCUS conformance rules as data: each rule family on tiny inline files (one breaking row
//! each, with its line), Chinese text valid everywhere, and the strict and tencent profiles on
//! the example bucket.

mod common;

use std::collections::BTreeMap;

use common::*;

/// A row valid under the strict profile, as (column, value); `change` overrides some values.
fn row(change: &[(&str, &str)]) -> String {
    let base: BTreeMap<&str, &str> = valid_focus_row("1.1").into_iter().collect();
    billpipe::generate::HEADER
        .iter()
        .map(|h| {
            let v = change
                .iter()
                .find(|(c, _)| c == h)
                .map(|(_, v)| *v)
                .or(base.get(h).copied())
                .unwrap_or("");
            if v.contains([',', '"']) {
                format!("\"{}\"", v.replace('"', "\"\""))
            } else {
                v.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn load(rows: &[String], profile: &str) -> (Output, serde_json::Value) {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let mut text = billpipe::generate::HEADER.join(",");
    for r in rows {
        text.push('\n');
        text.push_str(r);
    }
    text.push('\n');
    std::fs::write(
        src.path()
            .join("FOCUS-bill_details-400040004004-202512.CSV"),
        text,
    )
    .unwrap();
    run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &["--profile", profile],
    )
}

#[test]
fn each_rule_family_reports_its_id_and_line() {
    // Line 2 is clean; every later line breaks exactly one rule.
    let cases: [(&[(&str, &str)], &str); 11] = [
        (&[("ListCost", "2.5")], "Product.ListCost"),
        (&[("BillingCurrency", "RMB")], "Allowed.BillingCurrency"),
        (
            &[("ChargePeriodStart", "2025-12-01 00:00:00")],
            "DateTimeFormat.ChargePeriodStart",
        ),
        (
            &[
                ("ChargeCategory", "usage"),
                ("ConsumedQuantity", ""),
                ("ConsumedUnit", ""),
            ],
            "Allowed.ChargeCategory",
        ),
        (&[("ChargeClass", "Refund")], "Allowed.ChargeClass"),
        (
            &[("ChargePeriodEnd", "2025-12-01T00:00:00Z")],
            "ChargePeriod.Order",
        ),
        (&[("PricingUnit", "")], "Pair.PricingUnit.PricingQuantity"),
        (&[("RegionId", "")], "Pair.RegionName.RegionId"),
        (
            &[("ListUnitPrice", "-0.01"), ("ListCost", "-0.01")],
            "NonNegative.ListUnitPrice",
        ),
        (
            &[
                ("ChargeCategory", "Purchase"),
                ("ConsumedQuantity", ""),
                ("ConsumedUnit", ""),
            ],
            "Purchase.ChargeFrequency",
        ),
        (&[("ProviderName", "")], "NotNull.ProviderName"),
    ];
    let mut rows = vec![row(&[])];
    rows.extend(cases.iter().map(|(change, _)| row(change)));
    // Judging is not holding out: every row is loaded, every breach counted with its line.
    let (out, report) = load(&rows, "strict");
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let o = &report["objects"][0];
    assert_eq!(o["rows_loaded"], cases.len() + 1, "{}", out.stdout);
    assert_eq!(o["rows_quarantined"], 0);
    // Gatekeeping, opted in to: the same breaches hold their rows out, one line each.
    let (gated_out, gated) = load(&rows, "strict-gate");
    assert_eq!(gated_out.code, 3, "{}", gated_out.stdout);
    assert_eq!(
        gated["objects"][0]["rows_loaded"], 1,
        "{}",
        gated_out.stdout
    );
    assert_eq!(gated["objects"][0]["rows_quarantined"], cases.len());
    for (_, id) in cases.iter() {
        assert_eq!(
            gated["objects"][0]["rules"][id]["severity"], "quarantine",
            "{id}"
        );
    }
    for (i, (_, id)) in cases.iter().enumerate() {
        let line = i + 3;
        let rule = &o["rules"][id];
        assert_eq!(rule["count"], 1, "{id}: {}", o["rules"]);
        assert_eq!(rule["severity"], "error");
        assert!(
            rule["examples"][0]
                .as_str()
                .unwrap()
                .starts_with(&format!("line {line}:")),
            "{id}: {rule}"
        );
    }
    // Chinese text in names, descriptions and tags broke nothing.
    assert_eq!(
        o["rules"].as_object().unwrap().len(),
        cases.len(),
        "{}",
        o["rules"]
    );
}

#[test]
fn tencent_profile_keeps_documented_gaps_as_warnings() {
    let gaps: &[(&str, &str)] = &[
        ("EffectiveCost", ""),
        ("ServiceCategory", "-"),
        ("ChargeFrequency", "Usage-based"),
    ];
    let rows = vec![row(gaps), row(gaps), row(&[("ChargeCategory", "usage")])];
    let (out, report) = load(&rows, "tencent");
    assert_eq!(out.code, 0, "{}", out.stdout);
    let o = &report["objects"][0];
    assert_eq!(o["rows_loaded"], 3);
    for id in [
        "NotNull.EffectiveCost",
        "NotNull.ServiceCategory",
        "Variant.ChargeFrequency",
        "NullPlaceholder.ServiceCategory",
    ] {
        assert_eq!(o["rules"][id]["severity"], "warning", "{id}");
        assert_eq!(o["rules"][id]["count"], 2, "{id}");
    }
    // Anything beyond the documented gaps stays an error under the tencent profile too.
    assert_eq!(o["rules"]["Allowed.ChargeCategory"]["severity"], "error");

    let (_, strict) = load(&rows, "strict");
    assert_eq!(
        strict["objects"][0]["rows_loaded"], 3,
        "strict judges the gaps as errors and still loads them"
    );
    assert_eq!(
        strict["objects"][0]["rules"]["NotNull.EffectiveCost"]["severity"],
        "error"
    );
}

#[test]
fn profiles_change_verdicts_not_the_tencent_totals() {
    // The default (tencent) profile loads every well-typed row of the example bucket, with the
    // gaps counted; strict flags the same rows as errors.
    let lake = tempfile::tempdir().unwrap();
    let (out, report) = run_job("testdata/bucket", lake.path().to_str().unwrap(), &[]);
    assert_eq!(out.code, 3);
    assert_eq!(report["totals"]["rows_loaded"], 279);
    assert_eq!(
        report["totals"]["rows_quarantined"], 1,
        "only the unparsable row"
    );
    let warned: u64 = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            o["rules"]["NotNull.EffectiveCost"]["count"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    // The held-out row (its BilledCost does not parse) is judged on its other columns too.
    assert_eq!(warned, 280);
    // Each documented gap is counted, as a warning, on every row that shows it.
    let total = |id: &str| -> (u64, Vec<String>) {
        let objects = report["objects"].as_array().unwrap();
        let count = objects
            .iter()
            .filter_map(|o| o["rules"][id]["count"].as_u64())
            .sum();
        let severities = objects
            .iter()
            .filter_map(|o| o["rules"][id]["severity"].as_str().map(String::from))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        (count, severities)
    };
    for id in [
        "NotNull.ServiceCategory",
        "BillingPeriod.ExclusiveEnd",
        "Pair.ResourceType.ResourceId",
    ] {
        assert_eq!(total(id), (280, vec!["warning".to_string()]), "{id}");
    }
    let (variants, _) = total("Variant.ChargeFrequency");
    assert!(variants > 250, "{variants}");
    // Warnings change nothing that is loaded: the lake equals a load with every rule off.
    let off_lake = tempfile::tempdir().unwrap();
    let (_, off) = run_job(
        "testdata/bucket",
        off_lake.path().to_str().unwrap(),
        &["--profile", "off"],
    );
    assert_eq!(off["totals"]["rows_loaded"], 279);
    let sums = local_lake_sums(lake.path());
    assert!(!sums.is_empty());
    assert_eq!(sums, local_lake_sums(off_lake.path()));
    let strict_lake = tempfile::tempdir().unwrap();
    let (_, strict) = run_job(
        "testdata/bucket",
        strict_lake.path().to_str().unwrap(),
        &["--profile", "strict"],
    );
    // strict judges more and loads the same; strict-gate holds every row out, which leaves no
    // snapshot to load: every object is rejected and the lake stays empty.
    assert_eq!(strict["totals"]["rows_loaded"], 279);
    assert_eq!(strict["totals"]["rows_quarantined"], 1);
    assert_eq!(local_lake_sums(strict_lake.path()), sums);
    let gate_lake = tempfile::tempdir().unwrap();
    let (_, gate) = run_job(
        "testdata/bucket",
        gate_lake.path().to_str().unwrap(),
        &["--profile", "strict-gate"],
    );
    assert_eq!(gate["totals"]["rows_loaded"], 0);
    // Each unit's best snapshot is rejected, then each next-best in turn: all 12 bill files.
    assert_eq!(gate["totals"]["rejected"], 12);
    assert!(local_lake_sums(gate_lake.path()).is_empty());
}

#[test]
fn validate_judges_files_without_loading_them() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, rows: &[String]| {
        let mut text = billpipe::generate::HEADER.join(",");
        for r in rows {
            text.push('\n');
            text.push_str(r);
        }
        text.push('\n');
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let clean = write("clean.csv", &[row(&[]), row(&[])]);
    let broken = write(
        "broken.csv",
        &[
            row(&[]),
            row(&[("ChargeCategory", "usage")]),
            row(&[("BilledCost", "1,5")]),
        ],
    );
    // A custom column without the x_ prefix: strict rejects the file, tencent warns.
    let mut custom = billpipe::generate::HEADER.join(",");
    custom.push_str(",Id\n");
    custom.push_str(&row(&[]));
    custom.push_str(",42\n");
    let custom_path = dir.path().join("custom.csv");
    std::fs::write(&custom_path, custom).unwrap();
    let out = billpipe(&["validate", "--json", custom_path.to_str().unwrap()]);
    assert_eq!(out.code, 3);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        v["files"][0]["file_error"]
            .as_str()
            .unwrap()
            .contains("[CustomColumn.Prefix] column \"Id\""),
        "{v}"
    );
    let out = billpipe(&[
        "validate",
        "--json",
        "--profile",
        "tencent",
        custom_path.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v["files"][0]["rules"]["CustomColumn.Prefix"]["severity"], "warning",
        "{v}"
    );
    assert_eq!(v["files"][0]["rows"], 1);
    std::fs::remove_file(&custom_path).unwrap();

    // FOCUS 0.5 column names only: reported as not FOCUS 1.x, not crashed on.
    let old = dir.path().join("focus05.csv");
    std::fs::write(
        &old,
        "AmortizedCost,ChargeType,BilledCost,BillingAccountId\n1,Usage,1,a\n",
    )
    .unwrap();

    let out = billpipe(&["validate", &clean]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("(FOCUS 1.1, detected, profile strict): 2 rows, 0 with errors"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("verdict: PASS"));

    let out = billpipe(&["validate", "--json", &broken, old.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["passed"], false);
    let b = &v["files"][0];
    assert_eq!(b["rows"], 3);
    assert_eq!(b["rows_with_errors"], 2);
    assert_eq!(b["rules"]["Allowed.ChargeCategory"]["count"], 1);
    assert!(b["rules"]["Allowed.ChargeCategory"]["examples"][0]
        .as_str()
        .unwrap()
        .starts_with("line 3:"));
    assert!(b["rules"]["Type.BilledCost"]["examples"][0]
        .as_str()
        .unwrap()
        .starts_with("line 4:"));
    let o = &v["files"][1];
    assert!(
        o["file_error"]
            .as_str()
            .unwrap()
            .contains("not a FOCUS 1.x file"),
        "{o}"
    );
    // Nothing was written anywhere near the files.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}
