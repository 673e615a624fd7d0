//! Tencent's native (non-FOCUS) bill families, end to end from the real S3 server: zipped
//! daily and monthly detail bills (the monthly split into 3 CSVs), a bill pack re-delivered with
//! new content, a zh_cn file with Chinese headers and a BOM, a reseller L3 CSV, and a reseller
//! consolidated zip with 3 customers. Totals per partition must equal the source's Total Cost
//! (0 on voucher rows) exactly; times must be converted from Beijing time.

mod common;

use billpipe::generate::{write_detail_csv, DetailStats, GenerateOptions};
use common::*;
use rust_decimal::Decimal;

fn detail(account: &str, through: Option<u32>, seed: u64, zh: bool) -> (Vec<u8>, DetailStats) {
    let opts = GenerateOptions {
        account: account.into(),
        month: "2025-11".into(),
        through_day: through,
        rows_per_day: 12,
        seed,
        bad_rows: vec![],
        restated: false,
        gaps: false,
    };
    let mut out = Vec::new();
    let stats = write_detail_csv(&opts, zh, &mut out).unwrap();
    (out, stats)
}

fn expect(sums: &mut Sums, account: &str, s: &DetailStats) {
    sums.insert(
        ("2025-11".into(), account.into()),
        (s.rows, Decimal::from_i128_with_scale(s.billed_cost_e8, 8)),
    );
}

#[test]
fn every_tencent_family_loads_from_s3_with_exact_totals() {
    let ctx = s3_context();
    let bucket = s3_bucket(&ctx, "native");
    let put = |key: &str, body: Vec<u8>| s3_put(&ctx, &bucket, key, body);
    let lake = tempfile::tempdir().unwrap();
    let args = s3_args();
    let run = || {
        let (out, report) = run_job(
            &format!("s3://{bucket}"),
            lake.path().to_str().unwrap(),
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        report
    };
    let mut expected = Sums::new();
    let (a, b, c, d, r) = (
        "900000000001",
        "900000000002",
        "900000000003",
        "900000000004",
        "900000000099",
    );

    // A: a daily zip, then the monthly as a zip of 3 CSV members.
    let (daily, daily_stats) = detail(a, Some(9), 1, false);
    put(
        &format!("bills/{a}-20251110-by_used_time-bill_details.zip"),
        zip_of(&[("d.csv", &daily)]),
    );
    // B: a bill pack; C: a China-site zh_cn file (Chinese headers, BOM); D: a reseller L3 CSV.
    let (pack, pack_stats) = detail(b, None, 2, false);
    put(
        &format!("bills/{b}-202511-by_used_time-bill_pack.zip"),
        zip_of(&[("pack/L3.csv", &pack)]),
    );
    let (cn, cn_stats) = detail(c, None, 3, true);
    put(
        &format!("bills/{c}-202511-按扣费周期-明细账单.zip"),
        zip_of(&[("明细账单.csv", &cn)]),
    );
    let (l3, l3_stats) = detail(d, None, 4, false);
    put(
        &format!("reseller/L3-bill_details-{d}-202511-0001-test.csv"),
        l3,
    );
    // A reseller's consolidated zip: three customers' rows in one CSV.
    let customers = ["910000000001", "910000000002", "910000000003"];
    let mut consolidated = Vec::new();
    for (i, cust) in customers.iter().enumerate() {
        let (rows, stats) = detail(cust, None, 10 + i as u64, false);
        if i == 0 {
            consolidated.extend_from_slice(&rows);
        } else {
            let body = rows.splitn(2, |x| *x == b'\n').nth(1).unwrap();
            consolidated.extend_from_slice(body);
        }
        expect(&mut expected, cust, &stats);
    }
    let consolidated_key = format!(
        "reseller/{r}-2025-11--by_used_time-bill-details-consolidated_bill-61121cbd9017a1628.zip"
    );
    put(&consolidated_key, zip_of(&[("all.csv", &consolidated)]));

    // The partner daily form (no `by_used_time-`), a China-site daily, and an L3 pack holding
    // one CSV per customer.
    let (e, f) = ("900000000005", "900000000006");
    let (partner, partner_stats) = detail(e, Some(20), 5, false);
    put(
        &format!("bills/{e}-20251121-bill_details.zip"),
        zip_of(&[("p.csv", &partner)]),
    );
    expect(&mut expected, e, &partner_stats);
    let (cn_daily, cn_daily_stats) = detail(f, Some(3), 6, true);
    put(
        &format!("bills/{f}-20251104-按扣费周期-明细账单.zip"),
        zip_of(&[("明细.csv", &cn_daily)]),
    );
    expect(&mut expected, f, &cn_daily_stats);
    let mut pack_members = Vec::new();
    for (i, cust) in ["930000000001", "930000000002"].iter().enumerate() {
        let (rows, stats) = detail(cust, None, 40 + i as u64, false);
        expect(&mut expected, cust, &stats);
        pack_members.push((format!("{cust}.csv"), rows));
    }
    let members: Vec<(&str, &[u8])> = pack_members
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    put(
        "reseller/L3-bill_details-930000000099-AllResellersBills-202511-0003-test.zip",
        zip_of(&members),
    );
    expect(&mut expected, a, &daily_stats);
    expect(&mut expected, b, &pack_stats);
    expect(&mut expected, c, &cn_stats);
    expect(&mut expected, d, &l3_stats);
    let report = run();
    assert_eq!(report["totals"]["ingested"], 8, "{}", report["objects"]);
    assert_eq!(local_lake_sums(lake.path()), expected);

    // The monthly (3 members) replaces A's daily.
    let (monthly, monthly_stats) = detail(a, None, 1, false);
    let parts = split_csv(&monthly, 3);
    put(
        &format!("bills/{a}-202511-by_used_time-bill_details.zip"),
        zip_of(&[
            ("m/part1.csv", &parts[0]),
            ("m/part2.csv", &parts[1]),
            ("m/part3.csv", &parts[2]),
        ]),
    );
    expect(&mut expected, a, &monthly_stats);
    let report = run();
    assert_eq!(report["totals"]["replaced"], 1);
    assert_eq!(local_lake_sums(lake.path()), expected);

    // The bill pack re-pushed with restated content replaces its earlier load.
    let (pack2, pack2_stats) = detail(b, None, 22, false);
    assert_ne!(pack2_stats, pack_stats);
    put(
        &format!("bills/{b}-202511-by_used_time-bill_pack.zip"),
        zip_of(&[("pack/L3.csv", &pack2)]),
    );
    // The consolidated file re-delivered without its third customer.
    let without_third: Vec<u8> = std::str::from_utf8(&consolidated)
        .unwrap()
        .split_inclusive('\n')
        .filter(|l| !l.contains(customers[2]))
        .collect::<String>()
        .into_bytes();
    assert!(without_third.len() < consolidated.len());
    put(&consolidated_key, zip_of(&[("all.csv", &without_third)]));
    expect(&mut expected, b, &pack2_stats);
    expected.remove(&("2025-11".to_string(), customers[2].to_string()));
    let report = run();
    assert_eq!(report["totals"]["replaced"], 2, "{}", report["objects"]);
    assert_eq!(local_lake_sums(lake.path()), expected);

    // Beijing time became UTC; the native columns without a FOCUS home are kept as x_ columns.
    let file = lake_files(lake.path())
        .into_iter()
        .find(|f| f.to_str().unwrap().contains(c))
        .unwrap();
    let data = bytes::Bytes::from(std::fs::read(file).unwrap());
    let batch = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let text = std::str::from_utf8(&cn)
        .unwrap()
        .trim_start_matches('\u{feff}');
    let first = text.lines().nth(1).unwrap();
    let start_bj = first.split(',').nth(9).unwrap();
    let bj = chrono::NaiveDateTime::parse_from_str(start_bj, "%Y-%m-%d %H:%M:%S").unwrap();
    let utc = (bj - chrono::Duration::hours(8))
        .and_utc()
        .timestamp_micros();
    let starts = col::<arrow_array::TimestampMicrosecondArray>(&batch, "ChargePeriodStart");
    assert_eq!(starts.value(0), utc, "{start_bj} Beijing time");
    let period = col::<arrow_array::TimestampMicrosecondArray>(&batch, "BillingPeriodStart");
    assert_eq!(
        period.value(0),
        chrono::DateTime::parse_from_rfc3339("2025-10-31T16:00:00Z")
            .unwrap()
            .timestamp_micros()
    );
    assert!(
        batch.column_by_name("x_交易ID").is_some(),
        "native columns kept: {:?}",
        batch.schema()
    );
    assert!(batch.column_by_name("x_交易类型").is_some());
    let cat = col::<arrow_array::StringArray>(&batch, "ChargeCategory");
    assert!(cat
        .iter()
        .flatten()
        .all(|v| ["Usage", "Purchase", "Credit"].contains(&v)));
}

/// An L2 (bill by instance) file: the detail bill without its component columns, with the
/// instance's configuration instead.
fn to_l2(detail: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(detail).unwrap();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().unwrap().clone();
    let keep: Vec<usize> = (0..header.len())
        .filter(|i| !header[*i].starts_with("Component"))
        .collect();
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let mut h: Vec<&str> = keep.iter().map(|i| &header[*i]).collect();
    h.push("Configuration Description");
    w.write_record(&h).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        let mut row: Vec<&str> = keep.iter().map(|i| &rec[*i]).collect();
        row.push("2核 4GB, 50GB SSD");
        w.write_record(&row).unwrap();
    }
    w.into_inner().unwrap()
}

#[test]
fn reseller_l2_files_load_with_their_own_pipeline() {
    let ctx = s3_context();
    let bucket = s3_bucket(&ctx, "l2");
    let put = |key: &str, body: Vec<u8>| s3_put(&ctx, &bucket, key, body);
    let args = s3_args();
    let s3_flags: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut expected = Sums::new();
    let (one, one_stats) = detail("920000000001", None, 31, false);
    put(
        "L2-bill_by_Instance-920000000001-202511-0001-test.csv",
        to_l2(&one),
    );
    expect(&mut expected, "920000000001", &one_stats);
    let (two, two_stats) = detail("920000000002", None, 32, false);
    let (three, three_stats) = detail("920000000003", None, 33, false);
    put(
        "L2-bill_by_Instance-920000000099-AllCustomersBills-202511-0002-test.zip",
        zip_of(&[
            ("920000000002.csv", &to_l2(&two)),
            ("920000000003.csv", &to_l2(&three)),
        ]),
    );
    expect(&mut expected, "920000000002", &two_stats);
    expect(&mut expected, "920000000003", &three_stats);

    let lake = tempfile::tempdir().unwrap();
    let (out, report) = run_job(
        &format!("s3://{bucket}"),
        lake.path().to_str().unwrap(),
        &[
            &["--pipeline", "pipelines/tencent-reseller-l2.toml"][..],
            &s3_flags,
        ]
        .concat(),
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(report["totals"]["ingested"], 2);
    assert_eq!(local_lake_sums(lake.path()), expected);
    // The default pipeline leaves L2 alone (it loads L3; both would count everything twice).
    let other = tempfile::tempdir().unwrap();
    let (_, report) = run_job(
        &format!("s3://{bucket}"),
        other.path().to_str().unwrap(),
        &s3_flags,
    );
    assert_eq!(report["totals"]["ingested"], 0);
}
