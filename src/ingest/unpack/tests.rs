//! Unit tests of `unpack`: sniffing, member judging, gzip members and padding, zip members,
//! duplicates and bombs.

use super::*;

#[test]
fn members_are_judged_by_content_whatever_their_names() {
    assert_eq!(
        member_content(b"a,b,c,d,e\r\n1,2,3,4,5"),
        MemberContent::Bill
    );
    assert_eq!(member_content(&[0x1f, 0x8b, 8, 0]), MemberContent::Bill);
    assert_eq!(member_content(b"PK\x03\x04xlsx"), MemberContent::Archive);
    assert_eq!(member_content(b"Read me first.\n"), MemberContent::Other);
    assert_eq!(member_content(b"%PDF-1.7\n%\xE2\xE3"), MemberContent::Other);
    assert_eq!(member_content(b""), MemberContent::Other);
}

#[test]
fn sniffs_by_magic_bytes() {
    assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
    assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
    assert_eq!(sniff(b"PK\x03\x04rest"), Compression::Zip);
    assert_eq!(sniff(b"AvailabilityZone,"), Compression::Plain);
    assert_eq!(sniff(b""), Compression::Plain);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data)
        .and_then(|_| e.finish())
        .unwrap_or_default()
}

/// Everything `for_each_member` hands out, or its error.
fn unpacked(object: &[u8]) -> Result<(Vec<u8>, Vec<String>)> {
    let spill = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let mut out = Vec::new();
    let notes = for_each_member(
        object,
        "k",
        &Limits::default(),
        spill.path(),
        &mut |_, r| {
            r.read_to_end(&mut out)
                .map_err(|e| Error::rejected(e.to_string()))?;
            Ok(())
        },
    )?;
    Ok((out, notes))
}

#[test]
fn gzip_members_and_zero_padding_are_one_stream() {
    let mut object = gzip(b"a,b\r\n");
    object.extend(gzip(b"1,2\r\n"));
    assert_eq!(unpacked(&object).unwrap().0, b"a,b\r\n1,2\r\n");
    object.extend(vec![0u8; 70_000]); // more than one read-ahead buffer of zeros
    assert_eq!(unpacked(&object).unwrap().0, b"a,b\r\n1,2\r\n");
}

#[test]
fn anything_but_zeros_after_gzip_is_an_error_with_its_offset() {
    let body = gzip(b"a,b\r\n1,2\r\n");
    let end = body.len();
    let mut garbage = body.clone();
    garbage.extend(b"PK junk");
    let e = unpacked(&garbage).unwrap_err().to_string();
    assert!(
        e.contains(&format!("ends at byte {end} and is followed by byte 0x50")),
        "{e}"
    );
    let mut late = body.clone();
    late.extend([0, 0, 0, 7]);
    let e = unpacked(&late).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "3 zero byte(s) of padding, then byte 0x07 at byte {}",
            end + 3
        )),
        "{e}"
    );
    let truncated = &body[..end - 3];
    assert!(unpacked(truncated).is_err());
}

#[test]
fn a_zip_member_is_sniffed_like_an_object() {
    let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    let mut add = |name: &str, data: &[u8]| {
        use std::io::Write;
        w.start_file(name, opts).unwrap();
        w.write_all(data).unwrap();
    };
    add("a.csv", &gzip(b"x\r\n1\r\n"));
    add("__MACOSX/._a.csv", &[0, 5, 22, 7, 0, 2, 0, 0]);
    add("b.csv.gz", b"x\r\n2\r\n");
    let zipped = w.finish().unwrap().into_inner();
    let (out, notes) = unpacked(&zipped).unwrap();
    assert_eq!(out, b"x\r\n1\r\nx\r\n2\r\n");
    assert!(notes.contains(&"zip member \"a.csv\" is gzip-compressed".to_string()));
    assert!(notes
        .iter()
        .any(|n| n.contains("1 zip member(s) under __MACOSX/")));
}

#[test]
fn central_entries_keep_duplicate_names() {
    let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    for (name, data) in [("a.csv", &b"1"[..]), ("Z.csv", b"22")] {
        use std::io::Write;
        w.start_file(name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    let mut zipped = w.finish().unwrap().into_inner();
    for i in 0..zipped.len() - 5 {
        if &zipped[i..i + 5] == b"Z.csv" {
            zipped[i] = b'a';
        }
    }
    let e = unpacked(&zipped).unwrap_err().to_string();
    assert!(
        e.contains("zip holds 2 members named \"a.csv\" (entries #1, #2); the copies differ (1 bytes vs 2 bytes)"),
        "{e}"
    );
}
