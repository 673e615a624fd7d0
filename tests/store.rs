//! One behaviour suite for every [`Store`] backend: a local folder, memory, and S3 (a real
//! Garage server, from `scripts/test.sh` or `scripts/s3-server.sh`; without one the S3 cases
//! fail, as the other S3 tests do). Each behaviour is one generic function; `backends!` runs it
//! against all three. What differs by backend on purpose is asserted as such: `put_if_absent`
//! is exclusive locally and in memory, not on S3 (Garage ignores `If-None-Match`).

mod common;

use std::path::Path;
use std::sync::Arc;

use billpipe::store::local::LocalStore;
use billpipe::store::memory::MemoryStore;
use billpipe::store::s3::{S3Context, S3Location, S3Options, S3Store, MIN_PART_BYTES};
use billpipe::store::{ObjectInfo, Store};
use billpipe::Error;

/// A store under test, with what keeps it alive.
struct Subject {
    store: Arc<dyn Store>,
    /// Where local files for `put_file` are made (and, for the local store, its parent).
    work: tempfile::TempDir,
    /// The local store's root folder.
    root: Option<std::path::PathBuf>,
}

fn local() -> Subject {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    Subject {
        store: Arc::new(LocalStore::new(&root, "test")),
        work,
        root: Some(root),
    }
}

fn memory() -> Subject {
    Subject {
        store: Arc::new(MemoryStore::new("test")),
        work: tempfile::tempdir().unwrap(),
        root: None,
    }
}

/// A fresh bucket, the store rooted under `lake/` in it (an object outside the root shows that
/// keys are relative and listing stays inside), the smallest part size S3 allows, and listing
/// pages of 7 keys so pagination is exercised.
fn s3_with(list_v2: bool) -> Subject {
    let ctx = S3Context::connect(&S3Options {
        endpoint: Some(common::s3_endpoint()),
        region: Some("garage".into()),
        path_style: true,
        list_v2,
        part_bytes: MIN_PART_BYTES,
    })
    .unwrap();
    let bucket = common::s3_bucket(&ctx, "store");
    common::s3_put(&ctx, &bucket, "outside-the-root", b"x".to_vec());
    common::s3_put(&ctx, &bucket, "lake", b"x".to_vec());
    let location = S3Location {
        bucket,
        prefix: "lake/".into(),
    };
    Subject {
        store: Arc::new(S3Store::new(location, ctx).with_page_size(7)),
        work: tempfile::tempdir().unwrap(),
        root: None,
    }
}

fn s3() -> Subject {
    s3_with(false)
}

fn s3_v2() -> Subject {
    s3_with(true)
}

macro_rules! backends {
    ($($behaviour:ident),* $(,)?) => {
        mod local {
            $( #[test] fn $behaviour() { super::$behaviour(&super::local()); } )*
        }
        mod memory {
            $( #[test] fn $behaviour() { super::$behaviour(&super::memory()); } )*
        }
        mod s3 {
            $( #[test] fn $behaviour() { super::$behaviour(&super::s3()); } )*
        }
    };
}

backends!(
    lists_a_prefix_across_pages,
    lists_in_key_order,
    a_missing_object_reads_as_none,
    put_bytes_replaces_whole,
    put_file_moves_small_and_multipart_files,
    put_if_absent_refuses_what_exists,
    deletes_and_deleting_nothing_is_fine,
    streaming_a_replaced_object_fails_as_changed,
    streams_every_byte_and_stops_when_told,
    keys_with_spaces_and_unicode_round_trip,
);

/// S3's other listing (ListObjectsV2), paginated the same way.
#[test]
fn s3_lists_a_prefix_across_pages_with_list_v2() {
    lists_a_prefix_across_pages(&s3_v2());
}

fn keys(listing: &[ObjectInfo]) -> Vec<&str> {
    listing.iter().map(|o| o.key.as_str()).collect()
}

fn listed(s: &Subject, key: &str) -> ObjectInfo {
    let all = s.store.list(key).unwrap();
    all.into_iter()
        .find(|o| o.key == key)
        .unwrap_or_else(|| panic!("{key} is not listed"))
}

fn read_all(s: &Subject, object: &ObjectInfo) -> billpipe::Result<Vec<u8>> {
    let mut out = Vec::new();
    let n = s.store.stream(object, &mut |chunk| {
        out.extend_from_slice(&chunk);
        true
    })?;
    assert_eq!(n, out.len() as u64);
    Ok(out)
}

fn lists_a_prefix_across_pages(s: &Subject) {
    let store = &s.store;
    let mut want = Vec::new();
    for i in 0..25 {
        let key = format!("p/k{i:03}");
        store.put_bytes(&key, key.as_bytes()).unwrap();
        want.push(key);
    }
    store.put_bytes("pp", b"pp").unwrap();
    store.put_bytes("q/x", b"q").unwrap();
    let under_p = store.list("p/").unwrap();
    assert_eq!(keys(&under_p), want);
    assert!(under_p.iter().all(|o| o.size == 6 && !o.etag.is_empty()));
    assert!(under_p.iter().all(|o| o.last_modified.is_some()));
    // A prefix is a string prefix, not a folder.
    let p = store.list("p").unwrap();
    assert_eq!(p.len(), 26);
    assert_eq!(p.last().unwrap().key, "pp");
    assert_eq!(store.list("").unwrap().len(), 27);
    assert!(store.list("nothing/").unwrap().is_empty());
    assert!(store.list("p/k02").unwrap().len() == 5);
}

fn lists_in_key_order(s: &Subject) {
    let written = ["b", "a/c", "a b", "Z", "é", "a/b/c", "a-"];
    for key in written {
        s.store.put_bytes(key, key.as_bytes()).unwrap();
    }
    let mut want = written.to_vec();
    want.sort();
    assert_eq!(keys(&s.store.list("").unwrap()), want);
}

fn a_missing_object_reads_as_none(s: &Subject) {
    assert_eq!(s.store.get_bytes("no/such/key").unwrap(), None);
    s.store.put_bytes("there", b"1").unwrap();
    assert_eq!(s.store.get_bytes("there").unwrap(), Some(b"1".to_vec()));
}

fn put_bytes_replaces_whole(s: &Subject) {
    let key = "_billpipe/ledger.json";
    s.store.put_bytes(key, b"one").unwrap();
    let first = listed(s, key);
    s.store.put_bytes(key, b"second").unwrap();
    assert_eq!(s.store.get_bytes(key).unwrap(), Some(b"second".to_vec()));
    // One object, the new one: no temporary file beside it, a new ETag.
    let all = s.store.list("").unwrap();
    assert_eq!(keys(&all), vec![key]);
    assert_eq!(all[0].size, 6);
    assert_ne!(all[0].etag, first.etag);
    // Replacing while another thread reads: a reader sees either version whole, never a mix or
    // nothing.
    let store = s.store.clone();
    let reader = std::thread::spawn(move || {
        for _ in 0..50 {
            let got = store.get_bytes(key).unwrap();
            assert!(
                matches!(got.as_deref(), Some(b"second") | Some(b"third!")),
                "{got:?}"
            );
        }
    });
    for i in 0..20 {
        let bytes: &[u8] = if i % 2 == 0 { b"third!" } else { b"second" };
        s.store.put_bytes(key, bytes).unwrap();
    }
    reader.join().unwrap();
}

fn write(path: &Path, len: usize) -> Vec<u8> {
    let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(path, &bytes).unwrap();
    bytes
}

fn put_file_moves_small_and_multipart_files(s: &Subject) {
    let small = s.work.path().join("small.parquet");
    let small_bytes = write(&small, 1000);
    s.store
        .put_file(&small, "billing_period=2025-11/a/small.parquet")
        .unwrap();
    assert!(!small.exists(), "the local file is moved, not copied");
    // Above the part size (5 MiB on S3): uploaded in three parts.
    let big = s.work.path().join("big.parquet");
    let big_len = 2 * MIN_PART_BYTES as usize + 12345;
    let big_bytes = write(&big, big_len);
    s.store
        .put_file(&big, "billing_period=2025-11/a/big.parquet")
        .unwrap();
    assert!(!big.exists());
    assert_eq!(
        s.store
            .get_bytes("billing_period=2025-11/a/small.parquet")
            .unwrap(),
        Some(small_bytes)
    );
    let object = listed(s, "billing_period=2025-11/a/big.parquet");
    assert_eq!(object.size, big_len as u64);
    assert!(read_all(s, &object).unwrap() == big_bytes);
    // Replacing with a file.
    let again = s.work.path().join("again");
    write(&again, 10);
    s.store
        .put_file(&again, "billing_period=2025-11/a/big.parquet")
        .unwrap();
    assert_eq!(listed(s, "billing_period=2025-11/a/big.parquet").size, 10);
    // A missing local file is an error, and nothing is written.
    assert!(s.store.put_file(&again, "never").is_err());
    assert_eq!(s.store.get_bytes("never").unwrap(), None);
}

fn put_if_absent_refuses_what_exists(s: &Subject) {
    let key = "_billpipe/lock.json";
    s.store.put_if_absent(key, b"first").unwrap();
    let second = s.store.put_if_absent(key, b"second");
    let now = s.store.get_bytes(key).unwrap();
    if s.store.put_if_absent_is_exclusive() {
        match second {
            Err(Error::AlreadyExists { key: k }) => assert_eq!(k, key),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        assert_eq!(now, Some(b"first".to_vec()));
    } else {
        // Documented fallback (S3: Garage ignores If-None-Match, COS is unverified): the second
        // create may overwrite; callers read back what they wrote (see `lock`).
        assert!(
            s.store.uri().starts_with("s3://"),
            "only S3 is not exclusive"
        );
        match second {
            Ok(()) => assert_eq!(now, Some(b"second".to_vec())),
            Err(Error::AlreadyExists { key: k }) => {
                assert_eq!(k, key);
                assert_eq!(now, Some(b"first".to_vec()));
            }
            Err(e) => panic!("{e}"),
        }
    }
    // After a delete it can be created again.
    s.store.delete(key).unwrap();
    s.store.put_if_absent(key, b"third").unwrap();
    assert_eq!(s.store.get_bytes(key).unwrap(), Some(b"third".to_vec()));
    assert_eq!(keys(&s.store.list("").unwrap()), vec![key]);
}

fn deletes_and_deleting_nothing_is_fine(s: &Subject) {
    s.store.put_bytes("a/b/c.parquet", b"x").unwrap();
    s.store.put_bytes("keep", b"x").unwrap();
    s.store.delete("a/b/c.parquet").unwrap();
    assert_eq!(s.store.get_bytes("a/b/c.parquet").unwrap(), None);
    assert_eq!(keys(&s.store.list("").unwrap()), vec!["keep"]);
    s.store.delete("a/b/c.parquet").unwrap();
    s.store.delete("never/was").unwrap();
    if let Some(root) = &s.root {
        // Locally the folders a delete empties go too (globbing readers trip on them).
        assert!(!root.join("a").exists());
        assert!(root.exists());
    }
}

fn streaming_a_replaced_object_fails_as_changed(s: &Subject) {
    s.store.put_bytes("bill.csv", b"a,b\n1,2\n").unwrap();
    let old = listed(s, "bill.csv");
    s.store.put_bytes("bill.csv", b"a,b\n1,2\n3,4\n").unwrap();
    let e = read_all(s, &old).unwrap_err().to_string();
    assert!(e.contains("changed"), "{e}");
    // The object as listed now reads fine.
    let now = listed(s, "bill.csv");
    assert_eq!(read_all(s, &now).unwrap(), b"a,b\n1,2\n3,4\n");
    // Missing since it was listed: an error, not an empty object.
    s.store.delete("bill.csv").unwrap();
    assert!(read_all(s, &now).is_err());
}

fn streams_every_byte_and_stops_when_told(s: &Subject) {
    let path = s.work.path().join("bill.csv");
    let bytes = write(&path, 2_500_000);
    s.store.put_file(&path, "bill.csv").unwrap();
    let object = listed(s, "bill.csv");
    assert_eq!(object.size, bytes.len() as u64);
    assert!(read_all(s, &object).unwrap() == bytes);
    // A reader that goes away after the first chunk: `Ok` with what was sent, not "changed".
    let mut chunks = 0;
    let sent = s
        .store
        .stream(&object, &mut |_| {
            chunks += 1;
            false
        })
        .unwrap();
    assert_eq!(chunks, 1);
    assert!(sent > 0 && sent < object.size, "{sent}");
}

fn keys_with_spaces_and_unicode_round_trip(s: &Subject) {
    let odd = [
        "bills/a b/FOCUS 2025-11.csv",
        "bills/账单/2025年11月.csv",
        "bills/x+y%20z=1&2.csv",
        "bills/é/ü.csv.gz",
    ];
    for key in odd {
        s.store.put_bytes(key, key.as_bytes()).unwrap();
    }
    let mut want = odd.to_vec();
    want.sort();
    let all = s.store.list("bills/").unwrap();
    assert_eq!(keys(&all), want);
    for object in &all {
        assert_eq!(read_all(s, object).unwrap(), object.key.as_bytes());
        assert_eq!(
            s.store.get_bytes(&object.key).unwrap().unwrap(),
            object.key.as_bytes()
        );
    }
    s.store.delete("bills/账单/2025年11月.csv").unwrap();
    assert_eq!(s.store.list("bills/").unwrap().len(), 3);
}
