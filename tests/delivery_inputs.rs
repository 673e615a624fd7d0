//! Delivery inputs that were loaded wrongly or refused for the wrong reason (issue 10, items 5,
//! 7 and 11), each loaded from a local folder into a local lake by the binary, with the lake's
//! BilledCost compared exactly (Decimal) with the source files':
//!
//! - a zip with two CSV members of one name is refused, naming the member, and the lake keeps
//!   its previous snapshot; members of one file name in different folders both load;
//! - a zip member's bytes decide how it is read (a `.csv` that is gzip), `__MACOSX/` is skipped,
//!   a gzip stream may end in zero padding (and be multi-member), anything else after it is
//!   refused;
//! - a local file's decode error after the first 10 MB is reported as itself, not as "file
//!   changed while it was read"; symbolic links to bills are followed; a folder whose name is
//!   not UTF-8 is read.

mod common;

use std::io::Write;
use std::path::Path;

use billpipe::generate::{object_name, write_focus_csv, GenerateOptions};
use common::*;
use rust_decimal::Decimal;

const MONTH: &str = "2025-11";

fn csv(account: &str, through: Option<u32>, rows_per_day: u64, seed: u64) -> Vec<u8> {
    let opts = GenerateOptions {
        account: account.into(),
        month: MONTH.into(),
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

fn name(account: &str, through: Option<u32>) -> String {
    object_name(account, MONTH, through).unwrap()
}

/// Rows and exact BilledCost of CSV bytes, summed independently of billpipe.
fn totals_of(parts: &[&[u8]]) -> (u64, Decimal) {
    let mut rows = 0;
    let mut billed = Decimal::ZERO;
    for part in parts {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), part).unwrap();
        let t = csv_totals(f.path());
        assert_eq!(t.bad_rows, 0);
        rows += t.rows;
        billed += t.billed;
    }
    assert!(billed > Decimal::ZERO);
    (rows, billed)
}

fn expect(sums: &mut Sums, account: &str, parts: &[&[u8]]) {
    sums.insert((MONTH.into(), account.into()), totals_of(parts));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A zip whose first two members are both named `member`: it is written with a stand-in name of
/// the same length for the second (the zip writer refuses duplicates), which is then renamed in
/// its local header and its central-directory entry.
fn zip_with_duplicate(member: &str, first: &[u8], second: &[u8]) -> Vec<u8> {
    let stand_in = format!("{}#", &member[..member.len() - 1]);
    let mut zipped = zip_of(&[(member, first), (&stand_in, second)]);
    let (from, to) = (stand_in.as_bytes(), member.as_bytes());
    let mut renamed = 0;
    for i in 0..=zipped.len() - from.len() {
        if &zipped[i..i + from.len()] == from {
            zipped[i..i + from.len()].copy_from_slice(to);
            renamed += 1;
        }
    }
    assert_eq!(
        renamed, 2,
        "the stand-in name appears in the local and the central header"
    );
    zipped
}

/// The report entry of the object whose key contains `part`.
fn object<'a>(report: &'a serde_json::Value, part: &str) -> &'a serde_json::Value {
    report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"].as_str().unwrap().contains(part))
        .unwrap_or_else(|| panic!("no object {part} in {report}"))
}

/// The reason of a rejected object.
fn rejected(report: &serde_json::Value, part: &str) -> String {
    let o = object(report, part);
    assert_eq!(o["outcome"], "reject", "{o}");
    o["reason"].as_str().unwrap().to_string()
}

/// The distinct `x_SourceKey` values in a lake's Parquet files.
fn source_keys(lake: &Path) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    for f in lake_files(lake) {
        let data = bytes::Bytes::from(std::fs::read(f).unwrap());
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = col::<arrow_array::StringArray>(&batch, "x_SourceKey");
            keys.extend(col.iter().flatten().map(str::to_string));
        }
    }
    keys
}

/// Item 5: two members of one name are never loaded silently as one (nor twice).
#[test]
fn zip_with_two_members_of_one_name_is_refused_naming_it_and_the_lake_keeps_its_snapshot() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let (a, b, c) = ("820000000001", "820000000002", "820000000003");
    let mut expected = Sums::new();

    // A: a daily through day 5, loaded first.
    let a5 = csv(a, Some(5), 20, 1);
    std::fs::write(src.path().join(name(a, Some(5))), &a5).unwrap();
    expect(&mut expected, a, &[&a5]);
    // B: a monthly in two members with the same file name in different folders: two entries,
    // both loaded, told apart in lineage by their folders.
    let b_month = csv(b, None, 10, 2);
    let b_parts = split_csv(&b_month, 2);
    let b_key = name(b, None);
    std::fs::write(
        src.path().join(&b_key),
        zip_of(&[("x/part.csv", &b_parts[0]), ("y/part.csv", &b_parts[1])]),
    )
    .unwrap();
    expect(&mut expected, b, &[&b_month]);

    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(local_lake_sums(lake.path()), expected);
    assert!(object(&report, &b_key)["notes"]
        .to_string()
        .contains("zip with 2 CSV member(s)"));
    let keys = source_keys(lake.path());
    assert!(keys.contains(&format!("{b_key}#x/part.csv")), "{keys:?}");
    assert!(keys.contains(&format!("{b_key}#y/part.csv")), "{keys:?}");

    // A's next daily: its one CSV added twice to the zip (an accidental re-add). C's monthly:
    // two different halves under one name.
    let a6 = csv(a, Some(6), 20, 1);
    std::fs::write(
        src.path().join(name(a, Some(6))),
        zip_with_duplicate("bill/part-1.csv", &a6, &a6),
    )
    .unwrap();
    let c_parts = split_csv(&csv(c, None, 10, 3), 2);
    std::fs::write(
        src.path().join(name(c, None)),
        zip_with_duplicate("part-1.csv", &c_parts[0], &c_parts[1]),
    )
    .unwrap();
    // D's monthly: one bill under two names (a copy saved as "bill (1).csv", another in a
    // folder) — the same money twice, whatever the names say.
    let d = "820000000004";
    let d_month = csv(d, None, 10, 4);
    std::fs::write(
        src.path().join(name(d, None)),
        zip_of(&[
            ("bill.csv", &d_month),
            ("bill (1).csv", &d_month),
            ("b/bill.csv", &d_month),
        ]),
    )
    .unwrap();
    // E's monthly: one bill plain and gzipped beside it (different bytes, the same rows).
    let e = "820000000005";
    let e_month = csv(e, None, 10, 5);
    std::fs::write(
        src.path().join(name(e, None)),
        zip_of(&[("bill.csv", &e_month), ("bill.csv.gz", &gzip(&e_month))]),
    )
    .unwrap();

    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let r = rejected(&report, &name(e, None));
    assert!(
        r.contains(
            "zip members \"bill.csv\" and \"bill.csv.gz\" are one bill, plain and compressed"
        ),
        "{r}"
    );
    let r = rejected(&report, &name(a, Some(6)));
    assert!(
        r.contains("zip holds 2 members named \"bill/part-1.csv\" (entries #1, #2); identical copies (same size and CRC-32): loading both would count this money twice"),
        "{r}"
    );
    assert!(r.contains("refusing the whole zip"), "{r}");
    let r = rejected(&report, &name(c, None));
    assert!(
        r.contains("zip holds 2 members named \"part-1.csv\" (entries #1, #2); the copies differ"),
        "{r}"
    );
    assert!(out.stdout.contains("part-1.csv"), "{}", out.stdout);
    let r = rejected(&report, &name(d, None));
    assert!(
        r.contains("zip members \"bill.csv\" and \"bill (1).csv\" are identical copies"),
        "{r}"
    );
    // Nothing of any of these zips reached the lake: A keeps its day-5 snapshot, C has none.
    assert_eq!(local_lake_sums(lake.path()), expected);
}

/// Item 7: member contents are sniffed, `__MACOSX/` is skipped, gzip may end in zero padding.
#[test]
fn zip_members_are_sniffed_macosx_is_skipped_and_gzip_zero_padding_loads() {
    let src = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let (d, e, f, g, h) = (
        "830000000001",
        "830000000002",
        "830000000003",
        "830000000004",
        "830000000005",
    );
    let mut expected = Sums::new();

    // D: a Finder-made zip: part-1.csv is really gzip, part-2.csv plain, and the AppleDouble
    // companion under __MACOSX/ ends in .csv too.
    let d_month = csv(d, None, 10, 4);
    let d_parts = split_csv(&d_month, 2);
    let apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02";
    let d_key = name(d, None);
    std::fs::write(
        src.path().join(&d_key),
        zip_of(&[
            ("bill/part-1.csv", &gzip(&d_parts[0])),
            ("__MACOSX/bill/._part-1.csv", apple_double),
            ("bill/part-2.csv", &d_parts[1]),
            ("__MACOSX/bill/._part-2.csv", apple_double),
        ]),
    )
    .unwrap();
    expect(&mut expected, d, &[&d_month]);
    // E: gzip padded with zeros to a 4 KiB block.
    let e_day = csv(e, Some(9), 30, 5);
    let mut padded = gzip(&e_day);
    padded.resize(padded.len().div_ceil(4096) * 4096 + 4096, 0);
    std::fs::write(src.path().join(name(e, Some(9))), &padded).unwrap();
    expect(&mut expected, e, &[&e_day]);
    // F: two gzip members (the CSV cut mid-line), then zero padding.
    let f_day = csv(f, Some(9), 30, 6);
    let cut = f_day.len() / 2;
    let mut multi = gzip(&f_day[..cut]);
    multi.extend(gzip(&f_day[cut..]));
    multi.extend([0u8; 100]);
    std::fs::write(src.path().join(name(f, Some(9))), &multi).unwrap();
    expect(&mut expected, f, &[&f_day]);
    // G: zeros, then a byte that is not.
    let mut late = gzip(&csv(g, Some(9), 30, 7));
    let g_end = late.len();
    late.extend([0, 0, 0, b'A']);
    std::fs::write(src.path().join(name(g, Some(9))), &late).unwrap();
    // H: text right after the gzip data.
    let mut trailing = gzip(&csv(h, Some(9), 30, 8));
    let h_end = trailing.len();
    trailing.extend(b"garbage\n");
    std::fs::write(src.path().join(name(h, Some(9))), &trailing).unwrap();

    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    let notes = object(&report, &d_key)["notes"].to_string();
    assert!(
        notes.contains("zip member \\\"bill/part-1.csv\\\" is gzip-compressed"),
        "{notes}"
    );
    assert!(
        notes.contains("skipped 2 zip member(s) under __MACOSX/"),
        "{notes}"
    );
    assert!(notes.contains("zip with 2 CSV member(s)"), "{notes}");
    assert!(!notes.contains("delimited"), "{notes}");
    assert!(object(&report, &name(f, Some(9)))["notes"]
        .to_string()
        .contains("gzip-compressed"));
    let r = rejected(&report, g);
    assert!(
        r.contains(&format!(
            "followed by 3 zero byte(s) of padding, then byte 0x41 at byte {}: only zeros may follow the gzip data",
            g_end + 3
        )),
        "{r}"
    );
    let r = rejected(&report, h);
    assert!(
        r.contains(&format!(
            "the gzip data ends at byte {h_end} and is followed by byte 0x67, which is neither another gzip member nor zero padding"
        )),
        "{r}"
    );
    assert_eq!(report["totals"]["ingested"], 3);
    assert_eq!(local_lake_sums(lake.path()), expected);
}

/// A monthly bill of about 28 MB whose first data row starting past byte 10.5 MiB has its
/// BillingAccountName replaced by `value`. Returns the file and that row's line. More than the
/// fetch channel holds (8 chunks of 1 MiB) follows the bad row, so the file is still being read
/// when the decoder gives up on it.
fn big_bill_with(account: &str, value: &[u8]) -> (Vec<u8>, u64) {
    let clean = csv(account, None, 1800, 11);
    assert!(clean.len() > 27_000_000, "{} bytes", clean.len());
    let after = 10 * (1 << 20) + (1 << 19);
    let start = after
        + clean[after..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap()
        + 2;
    let line = 1 + clean[..start].windows(2).filter(|w| *w == b"\r\n").count() as u64;
    let name_utf8 = "示例科技有限公司".as_bytes();
    let at = start
        + clean[start..]
            .windows(name_utf8.len())
            .position(|w| w == name_utf8)
            .unwrap();
    assert!(!clean[start..at].contains(&b'\n'));
    let mut out = clean[..at].to_vec();
    out.extend_from_slice(value);
    out.extend_from_slice(&clean[at + name_utf8.len()..]);
    (out, line)
}

/// Item 11: a local file's real cause, symbolic links, folder names that are not UTF-8.
#[test]
fn local_source_reports_the_real_cause_follows_symlinks_and_reads_non_utf8_folders() {
    use std::os::unix::ffi::OsStrExt;
    let src = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let lake = tempfile::tempdir().unwrap();
    let (i, j, k, l, m) = (
        "840000000001",
        "840000000002",
        "840000000003",
        "840000000004",
        "840000000005",
    );
    let mut expected = Sums::new();

    // I: "示例科技有限公司" in GBK, past the first 10 MB.
    let gbk = b"\xca\xbe\xc0\xfd\xbf\xc6\xbc\xbc\xd3\xd0\xcf\xde\xb9\xab\xcb\xbe";
    let (bill, gbk_line) = big_bill_with(i, gbk);
    std::fs::write(src.path().join(name(i, None)), bill).unwrap();
    // J: a 9 MiB line past the first 10 MB.
    let (bill, long_line) = big_bill_with(j, &vec![b'x'; 9 << 20]);
    std::fs::write(src.path().join(name(j, None)), bill).unwrap();
    // K: the bill is a symbolic link to a file kept elsewhere.
    let k_day = csv(k, Some(7), 25, 12);
    let target = elsewhere.path().join("kept.csv");
    std::fs::write(&target, &k_day).unwrap();
    std::os::unix::fs::symlink(&target, src.path().join(name(k, Some(7)))).unwrap();
    expect(&mut expected, k, &[&k_day]);
    // L: a bill in a folder named "账单" in GBK.
    let folder = std::ffi::OsStr::from_bytes(b"\xd5\xcb\xb5\xa5");
    std::fs::create_dir(src.path().join(folder)).unwrap();
    let l_day = csv(l, Some(7), 25, 13);
    std::fs::write(src.path().join(folder).join(name(l, Some(7))), &l_day).unwrap();
    expect(&mut expected, l, &[&l_day]);
    // A link back to the source folder itself is not walked again (nor forever).
    std::os::unix::fs::symlink(src.path(), src.path().join("again")).unwrap();
    // M: a symbolic link whose target is gone.
    std::os::unix::fs::symlink(
        elsewhere.path().join("gone.csv"),
        src.path().join(name(m, Some(7))),
    )
    .unwrap();

    let (out, report) = run_job(
        src.path().to_str().unwrap(),
        lake.path().to_str().unwrap(),
        &[],
    );
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(
        !out.stdout.contains("changed while it was read")
            && !report.to_string().contains("changed while it was read"),
        "{}",
        out.stdout
    );
    let r = rejected(&report, i);
    assert!(
        r.contains(&format!(
            "line {gbk_line}, column BillingAccountName: not valid UTF-8"
        )),
        "{r}"
    );
    assert!(gbk_line > 20_000, "{gbk_line}");
    let r = rejected(&report, j);
    assert!(
        r.contains(&format!("line {long_line}: ")) && r.contains("longer than 8388608 bytes"),
        "{r}"
    );
    let r = rejected(&report, m);
    assert!(
        r.contains("a symbolic link to ") && r.contains("gone.csv that cannot be followed"),
        "{r}"
    );
    assert!(r.contains("No such file or directory"), "{r}");
    let l_key = format!("\\xD5\\xCB\\xB5\\xA5/{}", name(l, Some(7)));
    assert_eq!(object(&report, &l_key)["outcome"], "ingest");
    assert_eq!(object(&report, &name(k, Some(7)))["outcome"], "ingest");
    assert_eq!(report["totals"]["objects"], 5);
    assert_eq!(report["totals"]["ingested"], 2);
    assert_eq!(local_lake_sums(lake.path()), expected);
}
