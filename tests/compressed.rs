//! Compressed objects (from a local folder and from the S3 server), recognised by content whatever their names say: gzip, zstd, zip with
//! several CSV members (and a .csv.gz inside), and the ways such input goes wrong: a zip bomb,
//! a truncated zip, a corrupt gzip, a member path climbing out with `../`.

mod common;

use std::io::Write;
use std::path::Path;

use billpipe::generate::{object_name, write_focus_csv, GenerateOptions};
use common::*;
use rust_decimal::Decimal;

fn csv(account: &str, through: Option<u32>, rows_per_day: u64, seed: u64) -> Vec<u8> {
    let opts = GenerateOptions {
        account: account.into(),
        month: "2025-11".into(),
        through_day: through,
        rows_per_day,
        seed,
        bad_rows: vec![],
        restated: false,
        gaps: false,
    };
    let mut out = Vec::new();
    write_focus_csv(&opts, &mut out).unwrap();
    out
}

fn totals_of(bytes: &[u8]) -> CsvTotals {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    csv_totals(f.path())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn put(dir: &Path, account: &str, through: Option<u32>, bytes: &[u8]) -> String {
    let name = object_name(account, "2025-11", through).unwrap();
    std::fs::write(dir.join(&name), bytes).unwrap();
    name
}

#[test]
fn compressed_objects_load_by_content_with_exact_totals() {
    let src = tempfile::tempdir().unwrap();
    let mut expected = Sums::new();
    let mut expect = |account: &str, data: &[u8]| {
        let t = totals_of(data);
        expected.insert(("2025-11".into(), account.into()), (t.rows, t.billed));
    };

    // A gzip object with a plain .CSV name.
    let a = csv("800000000001", Some(9), 30, 1);
    put(src.path(), "800000000001", Some(9), &gzip(&a));
    expect("800000000001", &a);
    // A zstd object.
    let b = csv("800000000002", Some(9), 30, 2);
    put(
        src.path(),
        "800000000002",
        Some(9),
        &zstd::encode_all(&b[..], 3).unwrap(),
    );
    expect("800000000002", &b);
    // A monthly as a zip of 3 CSV members (one of them gzipped inside), plus a non-CSV member.
    let c = csv("800000000003", None, 30, 3);
    let parts = split_csv(&c, 3);
    let gz = gzip(&parts[2]);
    let zipped = zip_of(&[
        ("bill/part-1.csv", &parts[0]),
        ("bill/part-2.CSV", &parts[1]),
        ("readme.txt", b"not a bill"),
        ("bill/part-3.csv.gz", &gz),
    ]);
    let zip_key = put(src.path(), "800000000003", None, &zipped);
    expect("800000000003", &c);

    for (how, out, report, lake) in run_local_and_s3(src.path()) {
        assert_eq!(out.code, 0, "{how}: {}{}", out.stdout, out.stderr);
        assert_eq!(local_lake_sums(lake.path()), expected);
        let z = report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["key"] == zip_key.as_str())
            .unwrap();
        let notes = z["notes"].to_string();
        assert!(
            notes.contains("skipped zip member \\\"readme.txt\\\" (not a CSV by name or content)"),
            "{notes}"
        );
        assert!(notes.contains("zip with 3 CSV member(s)"), "{notes}");
        // Lineage names the member.
        let files = lake_files(lake.path());
        let zfile = files
            .iter()
            .find(|f| f.to_str().unwrap().contains("800000000003"))
            .unwrap();
        let data = bytes::Bytes::from(std::fs::read(zfile).unwrap());
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
            .unwrap()
            .build()
            .unwrap();
        let mut members = std::collections::BTreeSet::new();
        for batch in reader {
            let batch = batch.unwrap();
            let keys = col::<arrow_array::StringArray>(&batch, "x_SourceKey");
            members.extend(keys.iter().flatten().map(str::to_string));
        }
        let want: std::collections::BTreeSet<String> =
            ["part-1.csv", "part-2.CSV", "part-3.csv.gz"]
                .iter()
                .map(|m| format!("{zip_key}#{m}"))
                .collect();
        assert_eq!(members, want);
    }
}

#[test]
fn bombs_broken_archives_and_escaping_paths_are_rejected_and_the_rest_loads() {
    let src = tempfile::tempdir().unwrap();
    let good = csv("810000000001", Some(5), 20, 4);
    put(src.path(), "810000000001", Some(5), &gzip(&good));

    // A zip bomb: a valid start, then 64 MiB of blank lines behind about 64 KiB (1000x).
    let mut bomb = csv("810000000002", Some(1), 1, 5);
    bomb.resize(64 << 20, b'\n');
    put(
        src.path(),
        "810000000002",
        Some(5),
        &zip_of(&[("bomb.csv", &bomb)]),
    );
    // A truncated zip.
    let whole = zip_of(&[("a.csv", &csv("810000000003", Some(5), 20, 6))]);
    put(
        src.path(),
        "810000000003",
        Some(5),
        &whole[..whole.len() / 2],
    );
    // A corrupt gzip (bytes flipped in the middle of the deflate stream).
    let mut corrupt = gzip(&csv("810000000004", Some(5), 20, 7));
    let mid = corrupt.len() / 2;
    for b in &mut corrupt[mid..mid + 16] {
        *b ^= 0x5a;
    }
    put(src.path(), "810000000004", Some(5), &corrupt);
    // A member whose path climbs out of the archive.
    put(
        src.path(),
        "810000000005",
        Some(5),
        &zip_of(&[("../../etc/evil.csv", &csv("810000000005", Some(5), 20, 8))]),
    );

    for (how, out, report, lake) in run_local_and_s3(src.path()) {
        assert_eq!(out.code, 3, "{how}: {}{}", out.stdout, out.stderr);
        let reason = |account: &str| {
            let o = report["objects"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["key"].as_str().unwrap().contains(account))
                .unwrap();
            assert_eq!(o["outcome"], "reject", "{o}");
            o["reason"].as_str().unwrap().to_string()
        };
        let r = reason("810000000002");
        assert!(r.contains("\"bomb.csv\"") && r.contains("zip bomb"), "{r}");
        let r = reason("810000000003");
        assert!(r.contains("not a readable zip"), "{r}");
        let r = reason("810000000004");
        assert!(r.contains("corrupt or truncated compressed data"), "{r}");
        let r = reason("810000000005");
        assert!(
            r.contains("\"../../etc/evil.csv\"") && r.contains("climbs out"),
            "{r}"
        );
        assert_eq!(report["totals"]["ingested"], 1);
        let t = totals_of(&good);
        let sums = local_lake_sums(lake.path());
        assert_eq!(sums.len(), 1);
        assert_eq!(
            sums[&("2025-11".to_string(), "810000000001".to_string())],
            (t.rows, t.billed)
        );
        assert!(t.billed > Decimal::ZERO);
        assert_eq!(
            std::fs::read_dir(lake.path().join("_billpipe/staging"))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().is_file())
                .count(),
            0
        );
    }
}
