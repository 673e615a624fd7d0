//! FOCUS conformance with `billpipe validate`: every rule family on tiny inline files (rows
//! that pass and rows that fail, with the rule id and line asserted), versions 1.0–1.3 told
//! apart, file-level rules, and a realistic generated file with a known mix of defects whose
//! count per rule is asserted exactly.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;

fn quote(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// A CSV of `version`'s base columns; each row is the base row with some values changed.
fn file(version: &str, rows: &[&[(&str, &str)]]) -> String {
    let cols = valid_focus_row(version);
    let mut text = cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(",");
    for change in rows {
        text.push('\n');
        let line: Vec<String> = cols
            .iter()
            .map(|(c, v)| {
                let v = change
                    .iter()
                    .find(|(k, _)| k == c)
                    .map(|(_, v)| *v)
                    .unwrap_or(v);
                quote(v)
            })
            .collect();
        text.push_str(&line.join(","));
    }
    text.push('\n');
    text
}

/// Runs `billpipe validate --json` on one file and returns (exit code, the file's verdict).
fn validate(name: &str, text: &str, args: &[&str]) -> (i32, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["validate", "--json"];
    all.extend_from_slice(args);
    all.push(path.to_str().unwrap());
    let out = billpipe(&all);
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr));
    (out.code, v["files"][0].clone())
}

/// The rules a verdict reports, with (severity, count, first line).
fn found(v: &serde_json::Value) -> BTreeMap<String, (String, u64, u64)> {
    v["rules"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, r)| {
            let first = r["examples"][0].as_str().unwrap_or("");
            let line = first
                .strip_prefix("line ")
                .and_then(|s| s.split(':').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (
                id.clone(),
                (
                    r["severity"].as_str().unwrap().to_string(),
                    r["count"].as_u64().unwrap(),
                    line,
                ),
            )
        })
        .collect()
}

/// Asserts that each (change, rule) case, one per line after a clean line 2, breaks exactly
/// its rule on its line, and nothing else fires.
fn assert_cases(version: &str, cases: &[(&[(&str, &str)], &str)]) {
    let mut rows: Vec<&[(&str, &str)]> = vec![&[]];
    rows.extend(cases.iter().map(|(c, _)| *c));
    let (code, v) = validate("cases.csv", &file(version, &rows), &[]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["focus_version"], version, "{v}");
    let got = found(&v);
    let mut want = BTreeMap::new();
    for (i, (_, id)) in cases.iter().enumerate() {
        let e = want
            .entry(id.to_string())
            .or_insert(("error".to_string(), 0, i as u64 + 3));
        e.1 += 1;
    }
    assert_eq!(got, want, "FOCUS {version}: {v}");
    assert_eq!(v["rows"], cases.len() as u64 + 1);
    assert_eq!(v["rows_with_errors"], cases.len() as u64);
}

#[test]
fn clean_files_of_every_version_pass() {
    for version in ["1.0", "1.1", "1.2", "1.3"] {
        let (code, v) = validate("clean.csv", &file(version, &[&[], &[]]), &[]);
        assert_eq!(code, 0, "{version}: {v}");
        assert_eq!(v["focus_version"], version, "detected from the columns");
        assert_eq!(v["rules"], serde_json::json!({}), "{version}");
    }
}

#[test]
fn charge_category_drives_null_patterns() {
    let tax: &[(&str, &str)] = &[
        ("ChargeCategory", "Tax"),
        ("ChargeFrequency", "Recurring"),
        ("PricingQuantity", ""),
        ("PricingUnit", ""),
        ("PricingCategory", ""),
        ("ListUnitPrice", ""),
        ("ContractedUnitPrice", ""),
        ("SkuId", ""),
        ("SkuPriceId", ""),
        ("SkuMeter", ""),
        ("SkuPriceDetails", ""),
        ("ConsumedQuantity", ""),
        ("ConsumedUnit", ""),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = tax
            .iter()
            .filter(|(c, _)| !extra.iter().any(|(e, _)| e == c))
            .copied()
            .collect();
        v.extend_from_slice(extra);
        v
    };
    let tax_sku = with(&[("SkuId", "sku-tax")]);
    let tax_qty = with(&[("PricingQuantity", "1"), ("PricingUnit", "Hours")]);
    let correction = [
        ("ChargeClass", "Correction"),
        ("SkuId", ""),
        ("SkuPriceId", ""),
        ("SkuMeter", ""),
        ("SkuPriceDetails", ""),
    ];
    let (code, v) = validate("pass.csv", &file("1.1", &[&[], tax, &correction]), &[]);
    assert_eq!(
        code, 0,
        "a clean Tax row and a Usage correction without SKU pass: {v}"
    );
    assert_cases(
        "1.1",
        &[
            (&tax_sku, "Tax.Null.SkuId"),
            (&tax_qty, "Tax.Null.PricingQuantity"),
            (
                &[("SkuPriceId", ""), ("SkuPriceDetails", "")],
                "UsagePurchase.NotNull.SkuPriceId",
            ),
            (
                &[("ContractedUnitPrice", ""), ("ContractedCost", "1.5")],
                "UsagePurchase.NotNull.ContractedUnitPrice",
            ),
            (
                &[("ConsumedQuantity", ""), ("ConsumedUnit", "")],
                "Usage.NotNull.ConsumedQuantity",
            ),
            (
                &[
                    ("ChargeCategory", "Purchase"),
                    ("ChargeFrequency", "One-Time"),
                ],
                "NonUsage.Null.ConsumedQuantity",
            ),
            (
                &[
                    ("ChargeCategory", "Purchase"),
                    ("ConsumedQuantity", ""),
                    ("ConsumedUnit", ""),
                ],
                "Purchase.ChargeFrequency",
            ),
        ],
    );
}

#[test]
fn paired_and_dependent_columns() {
    assert_cases(
        "1.2",
        &[
            (
                &[("SubAccountName", "")],
                "Pair.SubAccountName.SubAccountId",
            ),
            (&[("RegionName", "")], "Pair.RegionName.RegionId"),
            (&[("ResourceType", "")], "Pair.ResourceType.ResourceId"),
            (&[("PricingUnit", "")], "Pair.PricingUnit.PricingQuantity"),
            (
                &[("ConsumedUnit", "")],
                "Pair.ConsumedUnit.ConsumedQuantity",
            ),
            (
                &[("ResourceId", ""), ("ResourceType", "")],
                "NullWithout.ResourceName.ResourceId",
            ),
        ],
    );
}

#[test]
fn formats_json_numbers_dates_currency_and_placeholders() {
    assert_cases(
        "1.1",
        &[
            (&[("Tags", "{\"项目\":{\"子\":1}}")], "KeyValue.Tags"),
            (&[("Tags", "{\"a\":1,\"a\":2}")], "KeyValue.Tags"),
            (
                &[("SkuPriceDetails", "CoreCount=2")],
                "KeyValue.SkuPriceDetails",
            ),
            (&[("BilledCost", "+1.5")], "NumericFormat.BilledCost"),
            (&[("ListUnitPrice", "2E+0")], "NumericFormat.ListUnitPrice"),
            (
                &[("ChargePeriodEnd", "2025-12-01T01:00:00+00:00")],
                "DateTimeFormat.ChargePeriodEnd",
            ),
            (&[("BillingCurrency", "cny")], "Allowed.BillingCurrency"),
            (&[("BillingCurrency", "XAU")], "Allowed.BillingCurrency"),
            (&[("ResourceName", "N/A")], "NullPlaceholder.ResourceName"),
            (
                &[("ChargeDescription", "   ")],
                "NullPlaceholder.ChargeDescription",
            ),
            (&[("ChargeClass", "correction")], "Allowed.ChargeClass"),
            (
                &[("PricingCategory", "On-Demand")],
                "Allowed.PricingCategory",
            ),
            (
                &[("ServiceSubcategory", "Virtual machines")],
                "Allowed.ServiceSubcategory",
            ),
        ],
    );
}

#[test]
fn placeholders_in_non_null_columns_are_reported_under_both_rules() {
    let (code, v) = validate(
        "placeholders.csv",
        &file(
            "1.0",
            &[
                &[],
                &[("ProviderName", "NULL")],
                &[("ProviderName", "null")],
                &[("ProviderName", "N/A")],
                &[("ProviderName", "")],
                &[("ServiceName", " ")],
            ],
        ),
        &[],
    );
    assert_eq!(code, 3);
    let got = found(&v);
    assert_eq!(got["NotNull.ProviderName"], ("error".into(), 4, 3), "{v}");
    assert_eq!(
        got["NullPlaceholder.ProviderName"],
        ("error".into(), 3, 3),
        "{v}"
    );
    // A blank is text, not null: only the placeholder rule can see it.
    assert_eq!(
        got["NullPlaceholder.ServiceName"],
        ("error".into(), 1, 7),
        "{v}"
    );
    assert_eq!(got.len(), 3, "{v}");
    assert_eq!(v["rows_with_errors"], 5);
}

#[test]
fn costs_follow_unit_price_times_quantity_and_1_3_drops_the_correction_exemption() {
    // The tolerance scales with the value: 0.1 % (at least 1e-9), so half a cent on 2 is a
    // breach, and so is a tiny cost 10,000 times its unit price x quantity (the public
    // sample's Microsoft rows), which an absolute 0.01 would hide.
    let within: &[(&str, &str)] = &[("ListCost", "2.0019")];
    let (code, v) = validate("pass.csv", &file("1.2", &[&[], within]), &[]);
    assert_eq!(code, 0, "within 0.1%: {v}");
    let tiny: &[(&str, &str)] = &[("ListUnitPrice", "0.0000000015"), ("ListCost", "0.000015")];
    let tiny_exact: &[(&str, &str)] = &[("ListUnitPrice", "0.0000000015"), ("ListCost", "1.5E-9")];
    let (code, v) = validate("pass.csv", &file("1.0", &[&[], tiny_exact]), &[]);
    assert_eq!(code, 0, "tiny and exact: {v}");
    assert_cases(
        "1.0",
        &[
            (tiny, "Product.ListCost"),
            (&[("ListCost", "2.005")], "Product.ListCost"),
        ],
    );
    let correction: &[(&str, &str)] = &[("ChargeClass", "Correction"), ("ListCost", "-2")];
    let (code, v) = validate("c.csv", &file("1.2", &[&[], correction]), &[]);
    assert_eq!(code, 0, "1.2 excepts corrections: {v}");
    assert_cases(
        "1.3",
        &[
            (correction, "Product.ListCost"),
            (&[("ContractedCost", "3")], "Product.ContractedCost"),
            (
                &[("ListUnitPrice", "-2"), ("ListCost", "-2")],
                "NonNegative.ListUnitPrice",
            ),
        ],
    );
    // 1.3: without a SkuPriceId, the pricing columns must be null too.
    let no_price: &[(&str, &str)] = &[
        ("SkuPriceId", ""),
        ("SkuPriceDetails", ""),
        ("ChargeClass", "Correction"),
    ];
    let (_, v) = validate("c.csv", &file("1.3", &[&[], no_price]), &[]);
    let ids: Vec<String> = found(&v).into_keys().collect();
    assert_eq!(
        ids,
        [
            "NoSkuPrice.Null.ConsumedQuantity",
            "NoSkuPrice.Null.ContractedUnitPrice",
            "NoSkuPrice.Null.ListUnitPrice",
            "NoSkuPrice.Null.PricingCategory",
            "NoSkuPrice.Null.PricingQuantity"
        ],
        "{v}"
    );
    let (code, _) = validate("c.csv", &file("1.2", &[&[], no_price]), &[]);
    assert_eq!(code, 0, "1.2 has no such rule");
}

#[test]
fn periods_are_ordered_exclusive_and_match_the_file_name() {
    let rows: &[&[(&str, &str)]] = &[
        &[],
        &[("ChargePeriodEnd", "2025-12-01T00:00:00Z")],
        &[("BillingPeriodEnd", "2025-12-31T15:59:59Z")],
        &[
            ("BillingPeriodStart", "2025-10-31T16:00:00Z"),
            ("BillingPeriodEnd", "2025-11-30T16:00:00Z"),
        ],
    ];
    let name = "FOCUS-bill_details-400040004004-202512.CSV";
    let (code, v) = validate(name, &file("1.1", rows), &["--profile", "strict"]);
    assert_eq!(code, 3);
    assert_eq!(v["version_from"], "family", "{v}");
    assert_eq!(v["name_month"], "2025-12");
    let got = found(&v);
    assert_eq!(got["ChargePeriod.Order"], ("error".into(), 1, 3), "{v}");
    assert_eq!(
        got["BillingPeriod.ExclusiveEnd"],
        ("error".into(), 1, 4),
        "{v}"
    );
    // Not placeable in this file's snapshot: held out by `run` (severity quarantine).
    assert_eq!(
        got["BillingPeriod.FileName"],
        ("quarantine".into(), 1, 5),
        "{v}"
    );
    assert_eq!(got.len(), 3, "{v}");
    // The inclusive last second is one of Tencent's documented gaps: a warning there.
    let (_, v) = validate(name, &file("1.1", rows), &["--profile", "tencent"]);
    assert_eq!(found(&v)["BillingPeriod.ExclusiveEnd"].0, "warning");
    // A key a family takes is judged as `run` reads it: with the pipeline's profile unless
    // --profile says otherwise.
    let (_, v) = validate(name, &file("1.1", rows), &[]);
    assert_eq!(v["profile"], "tencent", "{v}");
    assert_eq!(found(&v)["BillingPeriod.ExclusiveEnd"].0, "warning");
    // A name without a billing month: the file-name rule is not applied.
    let (_, v) = validate("export.csv", &file("1.1", rows), &[]);
    assert!(!found(&v).contains_key("BillingPeriod.FileName"), "{v}");
}

#[test]
fn a_service_with_two_categories_fails_the_file() {
    let rows: &[&[(&str, &str)]] = &[
        &[],
        &[("ServiceCategory", "Compute")],
        &[
            ("ServiceCategory", "Storage"),
            ("ServiceSubcategory", "Block Storage"),
        ],
        &[
            ("ServiceName", "云硬盘"),
            ("ServiceCategory", "Storage"),
            ("ServiceSubcategory", "Block Storage"),
        ],
    ];
    let (code, v) = validate("services.csv", &file("1.2", rows), &[]);
    assert_eq!(code, 3, "{v}");
    let got = found(&v);
    assert_eq!(
        got["ServiceName.OneServiceCategory"],
        ("error".into(), 1, 4),
        "{v}"
    );
    assert_eq!(
        got["ServiceName.OneServiceSubcategory"],
        ("warning".into(), 1, 4),
        "{v}"
    );
    let err = v["file_error"].as_str().unwrap();
    assert!(
        err.contains("line 4, column ServiceName: [ServiceName.OneServiceCategory]")
            && err.contains("\"云服务器\" with \"Storage\", but with \"Compute\" on line 2"),
        "{err}"
    );
    // Rows themselves are fine: the file is what fails.
    assert_eq!(v["rows_with_errors"], 0);
    // The same file in a run is rejected whole.
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path()
            .join("FOCUS-bill_details-400040004004-202512.CSV"),
        file("1.2", rows),
    )
    .unwrap();
    let pipeline = tempfile::NamedTempFile::new().unwrap();
    let tencent = std::fs::read_to_string("pipelines/tencent.toml").unwrap();
    std::fs::write(
        pipeline.path(),
        tencent.replace("schema = \"focus-1.1\"", "schema = \"focus-1.2\""),
    )
    .unwrap();
    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[
            "--profile",
            "strict",
            "--pipeline",
            pipeline.path().to_str().unwrap(),
        ],
    );
    // Judged, counted, loaded: the money is in the lake.
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let o = &report["objects"][0];
    assert_eq!(o["outcome"], "ingest", "{o}");
    assert_eq!(
        o["rules"]["ServiceName.OneServiceCategory"]["count"], 1,
        "{o}"
    );
    assert_eq!(lake_files(lake.path()).len(), 1);
    // Gatekeeping rejects the file on the file-level error.
    let gated_lake = tempfile::tempdir().unwrap();
    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        gated_lake.path().to_str().unwrap(),
        &[
            "--profile",
            "strict",
            "--quarantine-on",
            "error",
            "--pipeline",
            pipeline.path().to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let o = &report["objects"][0];
    assert_eq!(o["outcome"], "reject", "{o}");
    assert!(
        o["reason"]
            .as_str()
            .unwrap()
            .contains("[ServiceName.OneServiceCategory]"),
        "{o}"
    );
    assert!(lake_files(gated_lake.path()).is_empty());
}

#[test]
fn versions_are_detected_forced_and_mixed() {
    // A 1.0 file carrying a 1.1 column (as Tencent's "FOCUS 1.0" does) is detected as 1.1...
    let mut lines: Vec<String> = file("1.0", &[&[]]).lines().map(String::from).collect();
    lines[0].push_str(",CapacityReservationId");
    lines[1].push(',');
    let text = lines.join("\n") + "\n";
    let (code, v) = validate("mixed.csv", &text, &[]);
    assert_eq!((code, v["focus_version"].as_str()), (0, Some("1.1")), "{v}");
    assert_eq!(v["version_from"], "detected");
    // ...and, forced to 1.0, the strict profile rejects it while tencent counts it.
    let (code, v) = validate("mixed.csv", &text, &["--focus-version", "1.0"]);
    assert_eq!(code, 3);
    assert!(
        v["file_error"].as_str().unwrap().contains(
            "[Column.OtherVersion] column \"CapacityReservationId\" is a FOCUS 1.1 column, not part of FOCUS 1.0"
        ),
        "{v}"
    );
    let (code, v) = validate(
        "mixed.csv",
        &text,
        &["--focus-version", "1.0", "--profile", "tencent"],
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(found(&v)["Column.OtherVersion"], ("warning".into(), 1, 1));
    // Unknown versions are a usage error, not a verdict.
    let out = billpipe(&["validate", "--focus-version", "0.9", "x.csv"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("unknown") && out.stderr.contains("\"0.9\""),
        "{}",
        out.stderr
    );
}

/// A realistic month (the generator's Tencent FOCUS file) with defects injected on known rows:
/// every rule's count is exact, and nothing else fires beyond Tencent's documented gaps.
#[test]
fn generated_month_with_known_defects_counts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = billpipe(&[
        "generate",
        "--month",
        "2025-12",
        "--rows-per-day",
        "40",
        "--seed",
        "5",
        "--out-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let path = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut reader = csv::Reader::from_path(&path).unwrap();
    let header = reader.headers().unwrap().clone();
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let n = records.len();
    assert!(n > 1000, "{n} rows");

    // (rule ids it breaks, column, how to break it), on rows picked by a stride, disjoint.
    type Breaker = fn(&str) -> String;
    let defects: [(&[&str], &str, Breaker, usize); 8] = [
        (
            &["Allowed.BillingCurrency"],
            "BillingCurrency",
            |_| "RMB".into(),
            101,
        ),
        (&["Product.ListCost"], "ListCost", |v| format!("1{v}"), 103),
        (
            &["DateTimeFormat.ChargePeriodStart"],
            "ChargePeriodStart",
            |v| v.replace('T', " ").replace('Z', ""),
            107,
        ),
        (
            &["KeyValue.Tags"],
            "Tags",
            |_| "{\"项目\":{\"nested\":1}}".into(),
            109,
        ),
        (
            &["NumericFormat.BilledCost"],
            "BilledCost",
            |v| format!("+{v}"),
            113,
        ),
        (
            &["NotNull.ProviderName", "NullPlaceholder.ProviderName"],
            "ProviderName",
            |_| "N/A".into(),
            127,
        ),
        (&["Type.BilledCost"], "BilledCost", |_| "1,5".into(), 131),
        (
            &["Allowed.ChargeFrequency"],
            "ChargeFrequency",
            |_| "usage-based".into(),
            137,
        ),
    ];
    let mut broken = BTreeSet::new();
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for (k, (ids, column, breaker, stride)) in defects.iter().enumerate() {
        let c = at(column);
        let mut row = k + 7;
        while row < n {
            // Keep rows disjoint; ListCost is only checked where both factors are set, and "+"
            // before a negative number would not parse at all.
            let r = &records[row];
            let usable = !broken.contains(&row)
                && match *column {
                    "ListCost" => {
                        !r[at("ListUnitPrice")].is_empty()
                            && r[at("ListCost")].parse::<f64>().unwrap_or(0.0) > 0.1
                    }
                    "BilledCost" => !r[at("BilledCost")].starts_with('-'),
                    _ => true,
                };
            if usable {
                let mut fields: Vec<String> = records[row].iter().map(String::from).collect();
                fields[c] = breaker(&fields[c]);
                records[row] = csv::StringRecord::from(fields);
                broken.insert(row);
                for id in *ids {
                    *want.entry(id.to_string()).or_default() += 1;
                }
            }
            row += stride;
        }
    }
    // Tencent's documented gaps, counted from the data itself (a row whose BilledCost does not
    // parse is still judged on its other columns: one defect does not hide another).
    let count =
        |f: &dyn Fn(&csv::StringRecord) -> bool| records.iter().filter(|r| f(r)).count() as u64;
    let usage_or_purchase = |r: &csv::StringRecord| {
        matches!(&r[at("ChargeCategory")], "Usage" | "Purchase") && r[at("ChargeClass")].is_empty()
    };
    let gaps: BTreeMap<&str, u64> = [
        (
            "NotNull.EffectiveCost",
            count(&|r| r[at("EffectiveCost")].is_empty()),
        ),
        (
            "NotNull.ServiceCategory",
            count(&|r| r[at("ServiceCategory")].is_empty()),
        ),
        ("BillingPeriod.ExclusiveEnd", count(&|_| true)),
        (
            "Variant.ChargeFrequency",
            count(&|r| matches!(&r[at("ChargeFrequency")], "Usage-based" | "One-time")),
        ),
        (
            "UsagePurchase.NotNull.SkuId",
            count(&|r| usage_or_purchase(r) && r[at("SkuId")].is_empty()),
        ),
        (
            "UsagePurchase.NotNull.SkuPriceId",
            count(&|r| usage_or_purchase(r) && r[at("SkuPriceId")].is_empty()),
        ),
        (
            "NonUsage.Null.ConsumedQuantity",
            count(&|r| {
                &r[at("ChargeCategory")] != "Usage" && !r[at("ConsumedQuantity")].is_empty()
            }),
        ),
        (
            "Pair.ResourceType.ResourceId",
            count(&|r| r[at("ResourceType")].is_empty() != r[at("ResourceId")].is_empty()),
        ),
    ]
    .into_iter()
    .filter(|(_, c)| *c > 0)
    .collect();
    let mut writer = csv::Writer::from_path(&path).unwrap();
    writer.write_record(&header).unwrap();
    for r in &records {
        writer.write_record(r).unwrap();
    }
    writer.flush().unwrap();
    drop(writer);
    let text = std::fs::read_to_string(&path).unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let (code, v) = validate(&name, &text, &["--profile", "tencent"]);
    assert_eq!(code, 3);
    assert_eq!(v["rows"], n as u64);
    assert_eq!(v["rows_with_errors"], broken.len() as u64, "{v}");
    let got = found(&v);
    for (id, count) in &want {
        // Tencent writes nulls as placeholders too: the placeholder itself is a warning there.
        let severity = if id.starts_with("NullPlaceholder.") {
            "warning"
        } else {
            "error"
        };
        assert_eq!(
            got.get(id).map(|g| (g.0.as_str(), g.1)),
            Some((severity, *count)),
            "{id}: {v}"
        );
    }
    for (id, count) in &gaps {
        let g = got.get(*id).map(|g| (g.0.as_str(), g.1));
        assert_eq!(g, Some(("warning", *count)), "{id}: {v}");
    }
    let expected: BTreeSet<&str> = want
        .keys()
        .map(String::as_str)
        .chain(gaps.keys().copied())
        .collect();
    let reported: BTreeSet<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(reported, expected, "no other rule fires: {v}");
}

/// Public sample data is judged, not choked on: the FOCUS 1.0 sample file (1,000 rows of
/// real-world shapes) and a file written with FOCUS 0.5 column names.
#[test]
fn public_samples_are_judged() {
    let out = billpipe(&[
        "validate",
        "--json",
        "testdata/focus-samples/focus_sample.csv",
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let f = &v["files"][0];
    assert_eq!(f["focus_version"], "1.0");
    assert_eq!(f["rows"], 1000);
    // Its extra "Id" column is a file error, and every row is still judged.
    assert!(f["file_error"]
        .as_str()
        .unwrap()
        .contains("[CustomColumn.Prefix] column \"Id\""));
    let got = found(f);
    assert_eq!(
        got["DateTimeFormat.BillingPeriodStart"],
        ("error".into(), 1000, 2)
    );
    assert_eq!(
        got["NonNegative.ContractedUnitPrice"],
        ("error".into(), 1, 458)
    );
    assert_eq!(
        got["NullPlaceholder.ChargeClass"],
        ("error".into(), 1000, 2)
    );
    assert_eq!(got["Allowed.ChargeFrequency"], ("error".into(), 7, 927));
    // ListCost = 10,000 x ListUnitPrice x PricingQuantity on 31 of the 51 Microsoft rows, and
    // AWS usage rows with ContractedCost 0 against a contracted price (8 of them above 0.01).
    assert_eq!(got["Product.ListCost"], ("error".into(), 31, 948));
    assert_eq!(got["Product.ContractedCost"], ("error".into(), 18, 77));

    let out = billpipe(&[
        "validate",
        "--json",
        "testdata/focus-samples/all_pass_0.5.csv",
    ]);
    assert_eq!(out.code, 3);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let e = v["files"][0]["file_error"].as_str().unwrap();
    assert!(
        e.starts_with(
            "not a FOCUS 1.x file: it uses pre-1.0 column names (AmortizedCost (now EffectiveCost)"
        ),
        "{e}"
    );
}

/// Appends columns to a CSV made by `file`: `values[i]` are row i's cells for them.
fn with_columns(text: &str, columns: &[&str], values: &[&[&str]]) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        out.push_str(line);
        let cells: Vec<String> = if i == 0 {
            columns.iter().map(|c| c.to_string()).collect()
        } else {
            values[i - 1].iter().map(|v| quote(v)).collect()
        };
        out.push(',');
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Commitment rows carry their quantity and unit and are priced Committed, a commitment's
/// purchase is not; a ServiceSubcategory sits under its own ServiceCategory; a marketplace
/// purchase (another publisher) with a BilledCost is a warning (the columns cannot say who was
/// paid).
#[test]
fn commitments_subcategories_and_marketplace_purchases() {
    let purchase: [(&str, &str); 4] = [
        ("ChargeCategory", "Purchase"),
        ("ChargeFrequency", "One-Time"),
        ("ConsumedQuantity", ""),
        ("ConsumedUnit", ""),
    ];
    let committed_purchase: Vec<(&str, &str)> = purchase
        .iter()
        .copied()
        .chain([("PricingCategory", "Committed")])
        .collect();
    let marketplace: Vec<(&str, &str)> = purchase
        .iter()
        .copied()
        .chain([("PublisherName", "示例软件公司")])
        .collect();
    let marketplace_zero: Vec<(&str, &str)> = marketplace
        .iter()
        .copied()
        .chain([("BilledCost", "0")])
        .collect();
    let rows: &[&[(&str, &str)]] = &[
        &[],                                 // line 2: no commitment
        &[("PricingCategory", "Committed")], // 3: used commitment, complete
        &[],                                 // 4: used commitment, no quantity or unit
        &committed_purchase,                 // 5: the commitment's purchase priced Committed
        &[],                                 // 6: a quantity without a commitment
        &[
            ("ServiceName", "云数据库"),
            ("ServiceSubcategory", "Relational Databases"),
        ], // 7: Compute is not its parent
        &[
            ("ServiceName", "其他"),
            ("ServiceSubcategory", "Other (Compute)"),
        ], // 8
        &marketplace,                        // 9: marketplace purchase billed
        &marketplace_zero,                   // 10: marketplace purchase at 0
        &[("PublisherName", "示例软件公司")], // 11: usage, not a purchase
    ];
    let commitment = [
        "CommitmentDiscountId",
        "CommitmentDiscountCategory",
        "CommitmentDiscountType",
        "CommitmentDiscountStatus",
        "CommitmentDiscountQuantity",
        "CommitmentDiscountUnit",
    ];
    let none: &[&str] = &["", "", "", "", "", ""];
    let values: &[&[&str]] = &[
        none,
        &["ri-1", "Usage", "Reserved", "Used", "1", "Hours"],
        &["ri-1", "Usage", "Reserved", "Used", "", ""],
        &["ri-1", "Usage", "Reserved", "", "720", "Hours"],
        &["", "", "", "", "1", ""],
        none,
        none,
        none,
        none,
        none,
    ];
    let text = with_columns(&file("1.2", rows), &commitment, values);
    let (code, v) = validate("c.csv", &text, &[]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["focus_version"], "1.2");
    let e = |line| ("error".to_string(), 1, line);
    let want: BTreeMap<String, (String, u64, u64)> = [
        ("Commitment.NotNull.CommitmentDiscountQuantity", e(4)),
        ("Commitment.NotNull.CommitmentDiscountUnit", e(4)),
        ("Committed.PricingCategory", e(4)),
        ("CommitmentPurchase.PricingCategory", e(5)),
        (
            "Pair.CommitmentDiscountUnit.CommitmentDiscountQuantity",
            e(6),
        ),
        (
            "NullWithout.CommitmentDiscountQuantity.CommitmentDiscountId",
            e(6),
        ),
        ("ServiceSubcategory.Parent", e(7)),
        ("Marketplace.BilledCost", ("warning".to_string(), 1, 9)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(found(&v), want, "{v}");
    assert_eq!(v["rows_with_errors"], 4, "{v}");
    let parent = v["rules"]["ServiceSubcategory.Parent"]["examples"][0].to_string();
    assert!(parent.contains("its parent is Databases"), "{parent}");
    // 1.0 has none of these rules (no ServiceSubcategory, no commitment quantity).
    let (_, v) = validate("c.csv", &file("1.0", &[&[], &marketplace]), &[]);
    assert_eq!(found(&v), BTreeMap::new(), "{v}");
}

/// One defect does not hide another, on the public sample's shapes: a row whose BilledCost
/// does not type is still judged on its other columns (the failed cell read as null).
#[test]
fn a_cell_that_does_not_type_hides_nothing_else_on_its_row() {
    let text = std::fs::read_to_string("testdata/focus-samples/focus_sample.csv").unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    // Line 10: BilledCost "1,5" (Type.BilledCost) and a BillingPeriodEnd before its start.
    let mut fields: Vec<String> = records[8].iter().map(String::from).collect();
    fields[at("BilledCost")] = "1,5".into();
    fields[at("BillingPeriodEnd")] = "2020-01-01 00:00:00".into();
    records[8] = csv::StringRecord::from(fields);
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&header).unwrap();
    for r in &records {
        writer.write_record(r).unwrap();
    }
    let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
    let (_, v) = validate("focus_sample.csv", &text, &[]);
    let got = found(&v);
    assert_eq!(got["Type.BilledCost"], ("error".into(), 1, 10), "{v}");
    assert_eq!(got["BillingPeriod.Order"], ("error".into(), 1, 10), "{v}");
    // The unreadable cell is reported once, as unreadable, not again as a null.
    assert!(!got.contains_key("NotNull.BilledCost"), "{v}");
}

/// A partial file (some FOCUS columns, like the spec's examples) is judged on every rule whose
/// columns it has, `Column.Mandatory` says what it lacks; a header that is mostly not FOCUS is
/// still dismissed as "not a FOCUS 1.x file".
#[test]
fn partial_files_are_judged_and_foreign_files_dismissed() {
    let out = billpipe(&[
        "validate",
        "--json",
        "testdata/focus-samples/partial_example.csv",
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let f = &v["files"][0];
    assert_eq!(f["focus_version"], "1.0");
    assert_eq!(f["rows"], 5);
    assert_eq!(f["rows_with_errors"], 3, "{f}");
    let e = |line| ("error".to_string(), 1, line);
    let want: BTreeMap<String, (String, u64, u64)> = [
        ("Column.Mandatory", e(1)),
        ("Type.ChargePeriodStart", e(3)),
        ("Type.ChargePeriodEnd", e(3)),
        ("Allowed.ChargeCategory", e(5)),
        ("BillingPeriod.ExclusiveEnd", e(6)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(found(f), want, "{f}");
    let missing = f["rules"]["Column.Mandatory"]["message"].as_str().unwrap();
    assert!(
        missing.contains("BillingAccountId") && missing.contains("ListCost"),
        "{missing}"
    );

    for (text, error) in [
        (
            "Foo,Bar,Baz,BilledCost\n1,2,3,4\n",
            "not a FOCUS 1.x file: 1 FOCUS 1.0 column(s) against 3 neither FOCUS nor x_-prefixed (Foo, Bar, Baz)",
        ),
        ("x_foo\n1\n", "not a FOCUS 1.x file: 0 FOCUS 1.0 column(s)"),
    ] {
        let (code, v) = validate("foreign.csv", text, &[]);
        assert_eq!(code, 3);
        assert_eq!(v["file_error"], error, "{v}");
        assert_eq!(v["rows"], 0, "not judged: {v}");
    }
}
