//! Tencent Transaction Types → ChargeCategory, ChargeClass, ChargeFrequency.
//!
//! Every documented Transaction Type display value, English and Chinese, is listed here, copied
//! from its source, and must be a key of the table in `schemas/tencent-detail-bill.toml`; a value
//! missing from the table fails this test rather than a customer's load. Then a monthly detail
//! bill (intl, English headers) and a China-site one (Chinese headers, BOM) with one row per
//! value are loaded from a local folder: every row must reach the lake with the table's charge
//! columns, and BilledCost must equal the input's Total Cost exactly (0 on Credit rows, per the
//! mapping's `zero_when`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

use arrow_array::{Array, Decimal128Array, Int64Array, StringArray};
use billpipe::generate::{write_detail_csv, GenerateOptions};
use common::*;
use rust_decimal::Decimal;

/// shared/reference/tencent-formats.md §2.5: "Transaction Type display values (intl English)"
/// [BC-FIELDS], in the order given there.
const SECTION_2_5: &[&str] = &[
    "Purchase",
    "Renewal",
    "Modify",
    "Refund",
    "Deduction",
    "Hourly settlement",
    "Daily settlement",
    "Monthly settlement",
    "Spot",
    "Offline project deduction",
    "Offline deduction",
    "adjust-CR",
    "adjust-DR",
    "One-off RI Fee",
    "Hourly RI fee",
    "New monthly subscription",
    "Monthly subscription renewal",
    "Monthly subscription specification adjustment",
    "Monthly subscription refund",
    "Hourly Savings Plan fee",
    "Guarantee deduction",
    "Pay-as-you-go reversal",
];

/// tencent-formats.md §3: the ActionType codes, with the display name of each. §3 lists only the
/// codes ("the response carries only the display name"); the names are those its source [SDK-GO]
/// gives (tencentcloud-sdk-go-intl-en, intlpartnersmgt/v20220928 models.go), then those of the
/// newer SDK text, which says "yearly/monthly" where the older says "monthly".
const SECTION_3: &[(&str, &str)] = &[
    ("prepay_purchase", "Purchase"),
    ("prepay_renew", "Renewal"),
    ("prepay_modify", "Upgrade/Downgrade"),
    ("prepay_return", "Monthly subscription refund"),
    ("postpay_deduct", "Pay-as-you-go"),
    ("postpay_deduct_h", "Hourly settlement"),
    ("postpay_deduct_d", "Daily settlement"),
    ("postpay_deduct_m", "Monthly settlement"),
    ("offline_deduct", "Offline project deduction"),
    ("online_deduct", "Offline product deduction"),
    ("recon_deduct", "Adjustment - deduction"),
    ("recon_increase", "Adjustment - compensation"),
    ("ripay_purchase", "One-off RI Fee"),
    ("postpay_deduct_s", "Spot"),
    ("ri_hour_pay", "Hourly RI fee"),
    ("prePurchase", "New monthly subscription"),
    ("preRenew", "Monthly subscription renewal"),
    ("preUpgrade", "Upgrade/Downgrade"),
    ("preDowngrade", "Upgrade/Downgrade"),
    ("svp_hour_pay", "Hourly Savings Plan fee"),
    ("recon_guarantee", "Minimum spend deduction"),
    ("pre_purchase", "New monthly subscription"),
    ("pre_renew", "Monthly subscription renewal"),
    ("pre_upgrade", "Upgrade/Downgrade"),
    ("pre_downgrade", "Upgrade/Downgrade"),
    // Newer SDK text (2025).
    ("prepay_return", "yearly/monthly subscription refund"),
    ("prePurchase", "New yearly/monthly subscription"),
    ("preRenew", "yearly/monthly subscription renewal"),
];

/// The billing API's ActionTypeName values (DescribeBillDetail, billing/v20180709), English
/// (intl SDK) and Chinese (China-site SDK): the same 28 names in the same order.
const BILLING_API: &[(&str, &str)] = &[
    ("Monthly subscription purchase", "包年包月新购"),
    ("Monthly subscription renewal", "包年包月续费"),
    ("Monthly subscription upgrade/downgrade", "包年包月配置变更"),
    ("Monthly subscription refund", "包年包月退款"),
    ("Pay-as-you-go deduction", "按量计费扣费"),
    ("Offline project deduction", "线下项目扣费"),
    ("Offline product deduction", "线下产品扣费"),
    ("Adjustment deduction", "调账扣费"),
    ("Adjustment compensation", "调账补偿"),
    ("Hourly pay-as-you-go", "按量计费小时结"),
    ("Daily pay-as-you-go", "按量计费日结"),
    ("Monthly pay-as-you-go", "按量计费月结"),
    ("Hourly spot instance", "竞价实例小时结"),
    (
        "Offline project adjustment compensation",
        "线下项目调账补偿",
    ),
    (
        "Offline product adjustment compensation",
        "线下产品调账补偿",
    ),
    ("Offer deduction", "优惠扣费"),
    ("Offer compensation", "优惠补偿"),
    ("Pay-as-you-go resource migration in", "按量计费迁入资源"),
    ("Pay-as-you-go resource migration out", "按量计费迁出资源"),
    (
        "Monthly subscription resource migration in",
        "包年包月迁入资源",
    ),
    (
        "Monthly subscription resource migration out",
        "包年包月迁出资源",
    ),
    ("Prepaid", "预付费用"),
    ("Hourly", "小时费用"),
    ("RI refund", "预留实例退款"),
    ("Pay-as-you-go reversal", "按量计费冲正"),
    ("Monthly subscription to pay-as-you-go", "包年包月转按量"),
    ("Minimum spend deduction", "保底扣款"),
    ("Hourly savings plan fee", "节省计划小时费用"),
];

/// China-site cost-analysis transaction types (AnalyseActionTypeDetail, billing/v20180709): the
/// §3 codes with their Chinese names.
const COST_ANALYSIS_ZH: &[(&str, &str)] = &[
    ("prepay_purchase", "包年包月新购"),
    ("prepay_renew", "包年包月续费"),
    ("prepay_modify", "包年包月配置变更"),
    ("prepay_return", "包年包月退款"),
    ("postpay_deduct_h", "按量计费小时结"),
    ("postpay_deduct_d", "按量计费日结"),
    ("postpay_deduct_m", "按量计费月结"),
    ("offline_deduct", "线下项目扣费"),
    ("online_deduct", "线下产品扣费"),
    ("recon_deduct", "调账扣费"),
    ("recon_increase", "调账补偿"),
    ("postpay_deduct_s", "竞价实例小时结"),
    ("recon_increase_f", "线下项目调账补偿"),
    ("pre_to_post", "包年包月转按量"),
    ("svp_hour_pay", "节省计划小时费用"),
    ("recon_guarantee", "保底扣款"),
    ("billVirtualId", "月度计费精度差异"),
];

/// Every documented display value, each spelling once, in the order above.
fn documented() -> Vec<&'static str> {
    let mut all: Vec<&str> = SECTION_2_5.to_vec();
    all.extend(SECTION_3.iter().map(|(_, name)| *name));
    all.extend(BILLING_API.iter().flat_map(|(en, zh)| [*en, *zh]));
    all.extend(COST_ANALYSIS_ZH.iter().map(|(_, zh)| *zh));
    let mut seen = std::collections::HashSet::new();
    all.retain(|v| seen.insert(*v));
    all
}

/// How the mapping compares keys (src/conformance/mapping.rs `normalise`): trimmed, lower-case.
fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

const CHARGE_COLUMNS: [&str; 3] = ["ChargeCategory", "ChargeClass", "ChargeFrequency"];

/// The Transaction Type table of the detail-bill mapping: (key as written, its three values),
/// read with the `toml` crate.
fn table() -> Vec<(String, [String; 3])> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/tencent-detail-bill.toml");
    let doc: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let derived = doc["derived"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| {
            d["sets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .eq(CHARGE_COLUMNS)
        })
        .expect("a [[derived]] table setting ChargeCategory, ChargeClass, ChargeFrequency");
    derived["table"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            (k.clone(), v.try_into().unwrap())
        })
        .collect()
}

/// The table keyed as the mapping matches it; two keys equal but for case or surrounding spaces
/// would make the row's columns depend on which one loads last, so they fail here.
fn lookup() -> HashMap<String, [String; 3]> {
    let mut out = HashMap::new();
    for (key, values) in table() {
        if let Some(earlier) = out.insert(norm(&key), values.clone()) {
            panic!(
                "{key:?} is in the table twice (ignoring case and surrounding spaces): \
                 {earlier:?} and {values:?}"
            );
        }
    }
    out
}

#[test]
fn every_documented_transaction_type_is_in_the_table() {
    assert_eq!(SECTION_2_5.len(), 22);
    assert_eq!(BILLING_API.len(), 28);
    let table = lookup();
    let missing: Vec<&str> = documented()
        .into_iter()
        .filter(|v| !table.contains_key(&norm(v)))
        .collect();
    assert!(
        missing.is_empty(),
        "documented Transaction Types missing from schemas/tencent-detail-bill.toml: {missing:?}"
    );
    for (key, [category, class, frequency]) in &table {
        assert!(
            ["Usage", "Purchase", "Credit", "Adjustment", "Tax"].contains(&category.as_str()),
            "{key:?}: ChargeCategory {category:?}"
        );
        assert!(
            ["", "Correction"].contains(&class.as_str()),
            "{key:?}: ChargeClass {class:?}"
        );
        assert!(
            ["One-Time", "Recurring", "Usage-Based"].contains(&frequency.as_str()),
            "{key:?}: ChargeFrequency {frequency:?}"
        );
        assert!(
            !(category == "Purchase" && frequency == "Usage-Based"),
            "{key:?}: FOCUS forbids a Usage-Based Purchase"
        );
    }
}

/// One input row (keyed by its CSV line): its Transaction Type and the BilledCost the lake must
/// hold.
struct Expected {
    value: String,
    billed: Decimal,
}

/// A monthly detail bill with one row per value: the generator's rows with their Transaction
/// Type replaced (and every third Total Cost negated, as refunds and credits are). Returns the
/// CSV and, by line, what each row must become.
fn bill(
    account: &str,
    zh: bool,
    values: &[String],
    table: &HashMap<String, [String; 3]>,
) -> (Vec<u8>, BTreeMap<i64, Expected>) {
    let opts = GenerateOptions {
        account: account.into(),
        month: "2025-11".into(),
        through_day: None,
        rows_per_day: values.len().div_ceil(30) as u64 + 1,
        seed: 7,
        bad_rows: vec![],
        restated: false,
        gaps: false,
    };
    let mut generated = Vec::new();
    write_detail_csv(&opts, zh, &mut generated).unwrap();
    let text = std::str::from_utf8(&generated)
        .unwrap()
        .trim_start_matches('\u{feff}');
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let tx = column(if zh {
        "交易类型"
    } else {
        "Transaction Type"
    });
    let total = column("Total Cost (Including Tax)");
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer.write_record(&header).unwrap();
    let mut expected = BTreeMap::new();
    let records = reader.records().map(Result::unwrap);
    for (i, (record, value)) in records.zip(values).enumerate() {
        let mut row: Vec<String> = record.iter().map(str::to_string).collect();
        row[tx] = value.clone();
        if i % 3 == 2 {
            row[total] = format!("-{}", row[total]);
        }
        let cost = Decimal::from_str(&row[total]).unwrap();
        let category = &table
            .get(&norm(value))
            .unwrap_or_else(|| panic!("{value:?} is not in the Transaction Type table"))[0];
        let billed = if category == "Credit" {
            Decimal::ZERO
        } else {
            cost
        };
        writer.write_record(&row).unwrap();
        // Line 1 is the header; no generated field spans lines.
        let line = i as i64 + 2;
        let value = value.clone();
        expected.insert(line, Expected { value, billed });
    }
    assert_eq!(
        expected.len(),
        values.len(),
        "the generator made too few rows"
    );
    let mut out = if zh {
        "\u{feff}".as_bytes().to_vec()
    } else {
        Vec::new()
    };
    out.extend(writer.into_inner().unwrap());
    (out, expected)
}

#[test]
fn every_transaction_type_loads_with_its_charge_columns_and_exact_totals() {
    let mapping = lookup();
    // Every documented value, then every other key of the table (the Credit row among them),
    // so each entry is checked end to end; Chinese values go to the China-site file.
    let mut values: Vec<String> = documented().into_iter().map(String::from).collect();
    let mut covered: std::collections::HashSet<String> = values.iter().map(|v| norm(v)).collect();
    let mut keys: Vec<String> = table().into_iter().map(|(k, _)| k).collect();
    keys.sort();
    for key in keys {
        if covered.insert(norm(&key)) {
            values.push(key);
        }
    }
    let (chinese, english): (Vec<String>, Vec<String>) =
        values.into_iter().partition(|v| !v.is_ascii());
    assert!(chinese.len() >= 28 && english.len() >= 50);

    let (intl, cn) = ("960000000001", "960000000002");
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let mut expected: HashMap<String, BTreeMap<i64, Expected>> = HashMap::new();
    let (csv_en, rows_en) = bill(intl, false, &english, &mapping);
    std::fs::write(
        src.path()
            .join(format!("{intl}-202511-by_used_time-bill_details.zip")),
        zip_of(&[("bill_details.csv", &csv_en)]),
    )
    .unwrap();
    expected.insert(intl.into(), rows_en);
    let (csv_cn, rows_cn) = bill(cn, true, &chinese, &mapping);
    std::fs::write(
        src.path()
            .join(format!("{cn}-202511-按扣费周期-明细账单.zip")),
        zip_of(&[("明细账单.csv", &csv_cn)]),
    )
    .unwrap();
    expected.insert(cn.into(), rows_cn);

    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let rows = (english.len() + chinese.len()) as u64;
    assert_eq!(report["totals"]["ingested"], 2, "{}", report["objects"]);
    assert_eq!(
        report["totals"]["rows_loaded"], rows,
        "{}",
        report["objects"]
    );
    assert_eq!(
        report["totals"]["rows_quarantined"], 0,
        "{}",
        report["objects"]
    );

    // Rows and the exact BilledCost sum per partition: the input's Total Cost, 0 on Credit rows.
    let sums = local_lake_sums(lake.path());
    assert_eq!(sums.len(), 2, "{sums:?}");
    for (account, rows) in &expected {
        let (loaded, billed) = sums[&("2025-11".to_string(), account.clone())];
        let want: Decimal = rows.values().map(|e| e.billed).sum();
        assert_eq!(loaded, rows.len() as u64, "rows of {account}");
        assert_eq!(
            billed.normalize().to_string(),
            want.normalize().to_string(),
            "BilledCost of {account}"
        );
    }

    // Each row, found by its source line, carries its Transaction Type (kept as an x_ column)
    // and the table's three values ("" = null).
    for file in lake_files(lake.path()) {
        let data = bytes::Bytes::from(std::fs::read(&file).unwrap());
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let accounts = col::<StringArray>(&batch, "BillingAccountId");
            let lines = col::<Int64Array>(&batch, "x_SourceLine");
            let native = ["x_TransactionType", "x_交易类型"]
                .iter()
                .find(|c| batch.column_by_name(c).is_some())
                .map(|c| col::<StringArray>(&batch, c))
                .expect("the Transaction Type kept as an x_ column");
            let billed = col::<Decimal128Array>(&batch, "BilledCost");
            let charge: Vec<&StringArray> = CHARGE_COLUMNS.iter().map(|c| col(&batch, c)).collect();
            for i in 0..batch.num_rows() {
                let rows = expected.get_mut(accounts.value(i)).unwrap();
                let line = lines.value(i);
                let want = rows
                    .remove(&line)
                    .unwrap_or_else(|| panic!("line {line} loaded twice or never written"));
                assert_eq!(native.value(i), want.value, "line {line}");
                let values = &mapping[&norm(&want.value)];
                for (c, name) in CHARGE_COLUMNS.iter().enumerate() {
                    let got = column_value(charge[c], i);
                    let expect = Some(values[c].as_str()).filter(|v| !v.is_empty());
                    assert_eq!(got, expect, "{name} of {:?}", want.value);
                }
                assert!(billed.is_valid(i), "BilledCost of {:?}", want.value);
                assert_eq!(
                    Decimal::from_i128_with_scale(billed.value(i), billed.scale() as u32)
                        .normalize(),
                    want.billed.normalize(),
                    "BilledCost of {:?}",
                    want.value
                );
            }
        }
    }
    for (account, rows) in &expected {
        let missing: Vec<&str> = rows.values().map(|e| e.value.as_str()).collect();
        assert!(
            missing.is_empty(),
            "rows of {account} not in the lake: {missing:?}"
        );
    }
}

fn column_value(array: &StringArray, i: usize) -> Option<&str> {
    array.is_valid(i).then(|| array.value(i))
}
