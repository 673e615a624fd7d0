//! Helpers shared by the integration tests: running the real binary, summing a lake's
//! BilledCost per partition from its Parquet files, and summing a source CSV independently
//! (with rust_decimal, not billpipe's own decimal parser) to compare against.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use arrow_array::{Array, Decimal128Array, StringArray};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rust_decimal::Decimal;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_billpipe")
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn billpipe(args: &[&str]) -> Output {
    billpipe_env(args, &[])
}

/// Runs the binary with extra environment variables.
pub fn billpipe_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run billpipe");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `billpipe run` and returns the output and the parsed JSON report.
pub fn run_job(source: &str, dest: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let report = tempfile::NamedTempFile::new().unwrap();
    let report_path = report.path().to_str().unwrap().to_string();
    let mut args = vec![
        "run",
        "--source",
        source,
        "--dest",
        dest,
        "--report",
        &report_path,
    ];
    args.extend_from_slice(extra);
    let out = billpipe(&args);
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&report_path).unwrap_or_default(),
    )
    .unwrap_or_else(|_| {
        panic!(
            "no report; stdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        )
    });
    (out, json)
}

/// The report's entry for `key`: listed in `objects`, or, for an object skipped and only
/// summarised (no `--report-skipped`), its example in the skip summary as `{key, outcome:
/// "skip", reason}`. `None` if neither has it.
pub fn report_object(report: &serde_json::Value, key: &str) -> Option<serde_json::Value> {
    if let Some(o) = report["objects"]
        .as_array()
        .and_then(|a| a.iter().find(|o| o["key"] == key))
    {
        return Some(o.clone());
    }
    report["skipped"]["by_reason"]
        .as_array()?
        .iter()
        .filter_map(|r| r["examples"].as_array())
        .flatten()
        .find(|e| e["key"] == key)
        .map(|e| serde_json::json!({"key": key, "outcome": "skip", "reason": e["reason"]}))
}

/// (rows, exact BilledCost sum) per (billing_period, billing_account_id) partition.
pub type Sums = BTreeMap<(String, String), (u64, Decimal)>;

fn partition_of(rel: &str) -> Option<(String, String)> {
    let mut period = None;
    let mut account = None;
    for seg in rel.split('/') {
        if let Some(p) = seg.strip_prefix("billing_period=") {
            period = Some(p.to_string());
        }
        if let Some(a) = seg.strip_prefix("billing_account_id=") {
            account = Some(a.to_string());
        }
    }
    Some((period?, account?))
}

/// Adds one Parquet file's rows and BilledCost to `sums`.
pub fn add_parquet(sums: &mut Sums, rel: &str, data: Bytes) {
    let key = partition_of(rel).unwrap_or_else(|| panic!("not a partition path: {rel}"));
    let reader = ParquetRecordBatchReaderBuilder::try_new(data)
        .unwrap()
        .build()
        .unwrap();
    let entry = sums.entry(key.clone()).or_insert((0, Decimal::ZERO));
    for batch in reader {
        let batch = batch.unwrap();
        let cost = col::<Decimal128Array>(&batch, "BilledCost");
        let accounts = col::<StringArray>(&batch, "BillingAccountId");
        for i in 0..batch.num_rows() {
            assert_eq!(
                accounts.value(i),
                key.1,
                "row in the wrong account partition"
            );
            if cost.is_valid(i) {
                entry.1 += Decimal::from_i128_with_scale(cost.value(i), 18);
            }
        }
        entry.0 += batch.num_rows() as u64;
    }
}

/// A column of a batch, by name, as its concrete array type.
pub fn col<'a, T: 'static>(batch: &'a arrow_array::RecordBatch, name: &str) -> &'a T {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} has another type"))
}

/// Every `billing_period=*/**/*.parquet` file of a local lake, as a reader globbing would see it.
pub fn lake_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with("billing_period=")
        {
            walk(&e.path(), &mut out);
        }
    }
    out.sort();
    out
}

pub fn local_lake_sums(dir: &Path) -> Sums {
    let mut sums = Sums::new();
    for f in lake_files(dir) {
        let rel = f.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        add_parquet(&mut sums, &rel, Bytes::from(std::fs::read(&f).unwrap()));
    }
    sums
}

/// Rows that parse and their exact BilledCost sum, per account, straight from a source CSV.
/// Rows whose BilledCost does not parse are counted separately (they must be quarantined).
pub struct CsvTotals {
    pub rows: u64,
    pub bad_rows: u64,
    pub billed: Decimal,
}

pub fn csv_totals(path: &Path) -> CsvTotals {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let idx = headers
        .iter()
        .position(|h| h.trim_start_matches('\u{feff}') == "BilledCost")
        .unwrap();
    let mut t = CsvTotals {
        rows: 0,
        bad_rows: 0,
        billed: Decimal::ZERO,
    };
    for rec in reader.records() {
        let rec = rec.unwrap();
        let v = &rec[idx];
        if v.is_empty() || v == "NULL" || v == "-" {
            t.rows += 1;
            continue;
        }
        match Decimal::from_str_exact(v).or_else(|_| Decimal::from_str(v)) {
            Ok(d) if v.chars().filter(|c| *c == '.').count() <= 1 => {
                t.rows += 1;
                t.billed += d;
            }
            _ => t.bad_rows += 1,
        }
    }
    t
}

/// Copies a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Path, size and modification time of every file under `dir`.
pub fn snapshot_of_files(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    fn walk(d: &Path, out: &mut BTreeMap<PathBuf, (u64, std::time::SystemTime)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk(&p, out);
            } else {
                out.insert(p, (m.len(), m.modified().unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// The S3 test server's endpoint, from `scripts/test.sh` (or `source target/garage/env`).
pub fn s3_endpoint() -> String {
    std::env::var("BILLPIPE_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!("no S3 test server: run the suite with scripts/test.sh (or `scripts/s3-server.sh start && source target/garage/env`)")
    })
}

/// A client of the S3 test server.
pub fn s3_context() -> billpipe::store::s3::S3Context {
    billpipe::store::s3::S3Context::connect(&billpipe::store::s3::S3Options {
        endpoint: Some(s3_endpoint()),
        region: Some("garage".into()),
        path_style: true,
        list_v2: false,
        part_bytes: 0,
    })
    .unwrap()
}

/// Creates a bucket with a unique name starting with `name`.
pub fn s3_bucket(ctx: &billpipe::store::s3::S3Context, name: &str) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 100_000;
    let bucket = format!("{name}-{}-{stamp}", std::process::id());
    ctx.runtime
        .block_on(ctx.client.create_bucket().bucket(&bucket).send())
        .unwrap_or_else(|e| {
            panic!(
                "create bucket {bucket}: {}",
                billpipe::store::s3::describe(&e)
            )
        });
    bucket
}

/// Uploads one object.
pub fn s3_put(ctx: &billpipe::store::s3::S3Context, bucket: &str, key: &str, body: Vec<u8>) {
    ctx.runtime
        .block_on(
            ctx.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(aws_sdk_s3::primitives::ByteStream::from(body))
                .send(),
        )
        .unwrap_or_else(|e| panic!("put {bucket}/{key}: {}", billpipe::store::s3::describe(&e)));
}

/// Uploads every file of a folder (flat) to a new bucket; returns its `s3://` URI.
pub fn s3_mirror(dir: &Path, name: &str) -> String {
    let ctx = s3_context();
    let bucket = s3_bucket(&ctx, name);
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let key = e.file_name().to_string_lossy().into_owned();
        let body = aws_sdk_s3::primitives::ByteStream::from(std::fs::read(e.path()).unwrap());
        ctx.runtime
            .block_on(
                ctx.client
                    .put_object()
                    .bucket(&bucket)
                    .key(key)
                    .body(body)
                    .send(),
            )
            .unwrap();
    }
    format!("s3://{bucket}")
}

/// The arguments that point billpipe at the S3 test server.
pub fn s3_args() -> Vec<String> {
    vec![
        "--endpoint".into(),
        s3_endpoint(),
        "--region".into(),
        "garage".into(),
        "--path-style".into(),
    ]
}

/// Runs the same job from a local folder and from an S3 copy of it, each into a fresh local
/// lake: (label, output, report, lake).
pub fn run_local_and_s3(
    src: &Path,
) -> Vec<(&'static str, Output, serde_json::Value, tempfile::TempDir)> {
    let mut out = Vec::new();
    let lake = tempfile::tempdir().unwrap();
    let (o, r) = run_job(src.to_str().unwrap(), lake.path().to_str().unwrap(), &[]);
    out.push(("local", o, r, lake));
    let uri = s3_mirror(src, "mirror");
    let lake = tempfile::tempdir().unwrap();
    let args = s3_args();
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let (o, r) = run_job(&uri, lake.path().to_str().unwrap(), &extra);
    out.push(("s3", o, r, lake));
    out
}

/// A zip (deflate) holding `members` in order.
pub fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Splits a CRLF CSV into `n` files that each repeat the header, as Tencent splits large months.
pub fn split_csv(data: &[u8], n: usize) -> Vec<Vec<u8>> {
    let text = std::str::from_utf8(data).unwrap();
    let (header, body) = text.split_once("\r\n").unwrap();
    let rows: Vec<&str> = body.split_terminator("\r\n").collect();
    rows.chunks(rows.len().div_ceil(n))
        .map(|c| format!("{header}\r\n{}\r\n", c.join("\r\n")).into_bytes())
        .collect()
}

/// (key, etag, last-modified) of every object under a prefix.
pub fn s3_list(
    ctx: &billpipe::store::s3::S3Context,
    bucket: &str,
    prefix: &str,
) -> std::collections::BTreeMap<String, (String, String)> {
    ctx.runtime.block_on(async {
        let mut out = std::collections::BTreeMap::new();
        let mut token = None;
        loop {
            let r = ctx
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap();
            for o in r.contents() {
                out.insert(
                    o.key().unwrap().to_string(),
                    (
                        o.e_tag().unwrap_or("").to_string(),
                        format!("{:?}", o.last_modified()),
                    ),
                );
            }
            token = r.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break out;
            }
        }
    })
}

pub fn s3_lake_sums(ctx: &billpipe::store::s3::S3Context, bucket: &str, prefix: &str) -> Sums {
    let mut sums = Sums::new();
    for key in s3_list(ctx, bucket, prefix).keys() {
        let rel = key.strip_prefix(prefix).unwrap();
        if !rel.starts_with("billing_period=") || !rel.ends_with(".parquet") {
            continue;
        }
        let data = ctx.runtime.block_on(async {
            let r = ctx
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            r.body.collect().await.unwrap().into_bytes()
        });
        add_parquet(&mut sums, rel, data);
    }
    sums
}

/// A FOCUS row valid under the strict profile, as (column, value) in header order. Chinese
/// text in names, descriptions and tag keys is valid FOCUS.
pub fn valid_focus_row(version: &str) -> Vec<(&'static str, &'static str)> {
    let mut cols = vec![
        ("AvailabilityZone", "ap-guangzhou-3"),
        ("BilledCost", "1.5"),
        ("BillingAccountId", "400040004004"),
        ("BillingAccountName", "示例科技有限公司"),
        ("BillingCurrency", "CNY"),
        ("BillingPeriodStart", "2025-11-30T16:00:00Z"),
        ("BillingPeriodEnd", "2025-12-31T16:00:00Z"),
        ("ChargeCategory", "Usage"),
        ("ChargeClass", ""),
        ("ChargeDescription", "云服务器 按量计费, \"标准型\""),
        ("ChargeFrequency", "Usage-Based"),
        ("ChargePeriodStart", "2025-12-01T00:00:00Z"),
        ("ChargePeriodEnd", "2025-12-01T01:00:00Z"),
        ("ConsumedQuantity", "1"),
        ("ConsumedUnit", "Hours"),
        ("ContractedCost", "1.5"),
        ("ContractedUnitPrice", "1.5"),
        ("EffectiveCost", "1.5"),
        ("InvoiceIssuerName", "腾讯云"),
        ("ListCost", "2"),
        ("ListUnitPrice", "2"),
        ("PricingCategory", "Standard"),
        ("PricingQuantity", "1"),
        ("PricingUnit", "Hours"),
        ("ProviderName", "腾讯云"),
        ("PublisherName", "腾讯云"),
        ("RegionId", "ap-guangzhou"),
        ("RegionName", "华南地区（广州）"),
        ("ResourceId", "ins-0001"),
        ("ResourceName", "生产-订单服务"),
        ("ResourceType", "云服务器实例"),
        ("ServiceCategory", "Compute"),
        ("ServiceName", "云服务器"),
        ("SkuId", "sku-cvm-s5"),
        ("SkuPriceId", "sku-cvm-s5-hour"),
        ("SubAccountId", "400040004004"),
        ("SubAccountName", "主账号"),
        ("Tags", "{\"项目\":\"电商\",\"env\":\"生产\",\"keep\":true}"),
    ];
    if version >= "1.1" {
        cols.extend([
            ("ServiceSubcategory", "Virtual Machines"),
            ("SkuMeter", "计算时长"),
            ("SkuPriceDetails", "{\"CoreCount\":2,\"x_机型\":\"S5\"}"),
        ]);
    }
    if version >= "1.2" {
        cols.extend([("InvoiceId", "INV-202512-01")]);
    }
    if version >= "1.3" {
        cols.extend([
            ("ServiceProviderName", "腾讯云"),
            ("HostProviderName", "腾讯云"),
        ]);
    }
    cols
}

/// Writes `body` at `dir/key` (folders made) with its modification time set `seconds` after a
/// fixed instant: the delivery order the snapshot rules read from LastModified.
pub fn put_at(dir: &Path, key: &str, body: &[u8], seconds: u64) {
    let path = dir.join(key);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, body).unwrap();
    let t =
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_000_000 + seconds);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// [`local_lake_sums`] with the decimals normalised, for comparing lakes with each other.
pub fn normalized_sums(lake: &Path) -> Sums {
    local_lake_sums(lake)
        .into_iter()
        .map(|(k, (rows, cost))| (k, (rows, cost.normalize())))
        .collect()
}

/// The repository's Tencent pipeline with `families` (TOML `[[family]]` tables) appended,
/// written into `dir`; returns its path for `--pipeline`.
pub fn pipeline_with(dir: &Path, families: &str) -> String {
    let mut text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/tencent.toml"),
    )
    .unwrap();
    text.push_str(families);
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// `csv` with `tail` appended to every data line (not the header), CRLF-terminated: rows whose
/// fields no longer line up with the header, so not one of them can be loaded.
pub fn misaligned(csv: &str, tail: &str) -> Vec<u8> {
    let lines: Vec<String> = csv
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                l.to_string()
            } else {
                format!("{l}{tail}")
            }
        })
        .collect();
    (lines.join("\r\n") + "\r\n").into_bytes()
}
