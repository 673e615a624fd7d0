//! The bad-input corpus (testdata/bad, made by scripts/make-bad-corpus.py): every broken object
//! is rejected with a message naming its line, and the good object beside them still loads.

mod common;

use common::*;

#[test]
fn every_broken_object_is_rejected_with_its_line_and_the_rest_loads() {
    let lake = tempfile::tempdir().unwrap();
    let (out, report) = run_job("testdata/bad", lake.path().to_str().unwrap(), &[]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let expected = [
        ("500000000001", "line 1: empty file, no header"),
        ("500000000002", "line 2: no data rows after the header"),
        (
            "500000000003",
            "line 4, column BillingAccountName: not valid UTF-8",
        ),
        (
            "500000000004",
            "line 1: the header is a single column; the file looks ';'-delimited",
        ),
        (
            "500000000005",
            "line 1: header column name \"ChargeCategory\" appears twice",
        ),
        (
            "500000000006",
            "line 3: unreadable CSV: a line longer than 8388608 bytes",
        ),
        (
            "500000000007",
            "line 5: the file ends inside a quoted field",
        ),
        ("500000000008", "line 1: header column 1 is not UTF-8"),
    ];
    let objects = report["objects"].as_array().unwrap();
    for (account, message) in expected {
        let o = objects
            .iter()
            .find(|o| o["key"].as_str().unwrap().contains(account))
            .unwrap_or_else(|| panic!("{account} not in the report"));
        assert_eq!(o["outcome"], "reject", "{o}");
        let reason = o["reason"].as_str().unwrap();
        assert!(
            reason.contains(message),
            "{account}: {reason:?} lacks {message:?}"
        );
        // The report's JSON carries the same as fields: object, line, column, reason.
        let r = &o["rejection"];
        assert_eq!(r["object"], o["key"], "{o}");
        let line: u64 = message[5..]
            .split([':', ','])
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(r["line"], line, "{o}");
        if let Some(column) = message.split(", column ").nth(1) {
            assert_eq!(r["column"], column.split(':').next().unwrap(), "{o}");
        }
        let why = r["reason"].as_str().unwrap();
        assert!(!why.starts_with("line ") && reason.ends_with(why), "{o}");
        assert!(out
            .stdout
            .contains(&format!("REJECT  {}", o["key"].as_str().unwrap())));
    }
    assert_eq!(report["totals"]["rejected"], 8);
    assert_eq!(report["totals"]["ingested"], 1);
    let sums = local_lake_sums(lake.path());
    assert_eq!(sums.len(), 1);
    let good = csv_totals(std::path::Path::new(
        "testdata/bad/FOCUS-bill_details-200020002001-20251203.CSV",
    ));
    let got = &sums[&("2025-12".to_string(), "200020002001".to_string())];
    assert_eq!(
        (got.0, got.1.normalize()),
        (good.rows, good.billed.normalize())
    );
    // Nothing of the rejected objects reached the lake or its staging area.
    assert_eq!(lake_files(lake.path()).len(), 1);
    assert_eq!(
        std::fs::read_dir(lake.path().join("_billpipe/staging"))
            .unwrap()
            .count(),
        0
    );
}
