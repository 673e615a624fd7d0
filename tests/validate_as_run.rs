//! `validate` judges what `run` loads, read the same way (one object pipeline): a native zip
//! mapped by its family, and a zip whose members include a `.csv.gz`, give the same findings per
//! rule and the same row count in both commands.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use billpipe::generate::{object_name, write_focus_csv, GenerateOptions};
use common::*;

/// rule id -> (severity, count)
type Findings = BTreeMap<String, (String, u64)>;

fn findings(rules: &serde_json::Value) -> Findings {
    rules
        .as_object()
        .unwrap_or_else(|| panic!("no rules in {rules}"))
        .iter()
        .map(|(id, r)| {
            (
                id.clone(),
                (
                    r["severity"].as_str().unwrap_or("").to_string(),
                    r["count"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Runs `file` (alone in a source folder) and validates it; returns both findings and row counts.
fn run_and_validate(file: &Path) -> ((Findings, u64), (Findings, u64, serde_json::Value)) {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let copy = src.path().join(file.file_name().unwrap());
    std::fs::copy(file, &copy).unwrap();
    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    let o = &report["objects"][0];
    assert!(
        matches!(o["outcome"].as_str(), Some("ingest")),
        "{o}\n{}{}",
        out.stdout,
        out.stderr
    );
    let run_rows = o["rows_loaded"].as_u64().unwrap() + o["rows_quarantined"].as_u64().unwrap();
    let out = billpipe(&["validate", "--json", copy.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", out.stdout, out.stderr));
    let f = v["files"][0].clone();
    (
        (findings(&o["rules"]), run_rows),
        (findings(&f["rules"]), f["rows"].as_u64().unwrap(), f),
    )
}

#[test]
fn a_native_zip_is_judged_with_its_familys_mapping_as_run_loads_it() {
    let file = Path::new("testdata/native/100010445724-202511-by_used_time-bill_details.zip");
    let ((run, run_rows), (verdict, rows, v)) = run_and_validate(file);
    assert_eq!(v["family"], "detail-monthly", "{v}");
    assert_eq!(v["profile"], "tencent", "{v}");
    assert!(v["file_error"].is_null(), "{v}");
    assert!(rows > 0, "{v}");
    assert_eq!(rows, run_rows, "{v}");
    assert_eq!(verdict, run, "{v}");
}

#[test]
fn a_zip_with_a_gzipped_member_is_judged_with_the_findings_run_reports() {
    let opts = GenerateOptions {
        account: "800000000003".into(),
        month: "2025-11".into(),
        through_day: None,
        rows_per_day: 20,
        seed: 3,
        // Defects so that there is something to find.
        bad_rows: vec![5, 40, 77],
        restated: false,
        gaps: false,
    };
    let mut csv = Vec::new();
    write_focus_csv(&opts, &mut csv).unwrap();
    let parts = split_csv(&csv, 2);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&parts[1]).unwrap();
    let gz = gz.finish().unwrap();
    let zipped = zip_of(&[("bill/part-1.csv", &parts[0]), ("bill/part-2.csv.gz", &gz)]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join(object_name("800000000003", "2025-11", None).unwrap());
    std::fs::write(&path, zipped).unwrap();
    let ((run, run_rows), (verdict, rows, v)) = run_and_validate(&path);
    assert_eq!(v["family"], "focus-monthly", "{v}");
    assert!(!verdict.is_empty(), "{v}");
    assert_eq!(rows, run_rows, "{v}");
    assert_eq!(verdict, run, "{v}");
}
