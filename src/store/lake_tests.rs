//! Unit tests of `lake`: nothing but the lock written before the lock is held, staging, other
//! runs' staging cleared, the fence (a lapsed or lost lease), paths checked before publishing.

use super::*;

fn lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::local(dir.path().join("lake"), true).unwrap();
    (dir, lake)
}

fn staging_base(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("lake/_billpipe/staging")
}

#[test]
fn nothing_but_the_lock_is_written_before_the_lock_is_held() {
    let (dir, lake) = lake();
    let locked = |r: Result<()>| matches!(r, Err(Error::Locked(_)));
    assert!(locked(lake.put("_billpipe/ledger.json", b"{}")));
    assert!(locked(lake.put_if_absent("_billpipe/x", b"{}")));
    assert!(locked(lake.delete("billing_period=2025-11/a/f.parquet")));
    assert!(locked(
        lake.publish(Path::new("/nonexistent"), "p/f.parquet")
    ));
    assert!(locked(lake.prepare_staging()));
    assert!(!staging_base(&dir).exists());
    // The lock protocol itself may write the lock.
    lake.put_if_absent(LOCK_PATH, b"{}").unwrap();
    assert!(matches!(
        lake.put_if_absent(LOCK_PATH, b"{}"),
        Err(Error::AlreadyExists { .. })
    ));
    lake.fence.hold(Instant::now(), Duration::from_secs(60));
    lake.put("_billpipe/ledger.json", b"{}").unwrap();
    lake.fence.close();
    assert!(locked(lake.put("_billpipe/ledger.json", b"{}")));
}

#[test]
fn a_lake_in_any_store_is_fenced_and_stages_in_the_temp_dir() {
    let store = Arc::new(crate::store::memory::MemoryStore::new("lake"));
    let lake = Lake::new(store.clone());
    assert!(matches!(lake.put("x", b"1"), Err(Error::Locked(_))));
    lake.put_if_absent(LOCK_PATH, b"{}").unwrap();
    assert!(lake.put_if_absent_is_exclusive());
    assert!(matches!(
        lake.put_if_absent(LOCK_PATH, b"{}"),
        Err(Error::AlreadyExists { .. })
    ));
    lake.fence.hold(Instant::now(), Duration::from_secs(60));
    lake.prepare_staging().unwrap();
    assert!(lake.staging().starts_with(std::env::temp_dir()));
    let staged = lake.staging().join("f.parquet");
    std::fs::write(&staged, b"PAR1").unwrap();
    lake.publish(&staged, "billing_period=2025-11/f.parquet")
        .unwrap();
    assert_eq!(
        lake.list("billing_period=").unwrap(),
        vec![("billing_period=2025-11/f.parquet".to_string(), 4)]
    );
    let staging = lake.staging().to_path_buf();
    drop(lake);
    assert!(!staging.exists());
    assert_eq!(store.list("").unwrap().len(), 2);
}

#[test]
fn the_lock_holder_clears_other_runs_staging_and_keeps_its_own() {
    let (dir, lake) = lake();
    let base = staging_base(&dir);
    let dead = base.join("dead-run");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join("part-0.parquet.tmp"), b"x").unwrap();
    std::fs::write(base.join("old.1.2.parquet.tmp"), b"x").unwrap();
    lake.fence.hold(Instant::now(), Duration::from_secs(60));
    lake.prepare_staging().unwrap();
    let left: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![lake.run_id.clone()]);
    lake.release_staging();
    assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
}

/// Temporary files of killed writers in the lake's own folders (the lock, the ledger, its
/// journal, shard locks) go once they are old; fresh ones may be a writer at work.
#[test]
fn the_lock_holder_removes_old_temporary_files_of_the_ledger() {
    let (dir, lake) = lake();
    let meta = dir.path().join("lake/_billpipe");
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    let mut stale = Vec::new();
    for folder in ["", "ledger", "ledger/journal", "locks"] {
        let folder = meta.join(folder);
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join("x.json.run.1.tmp");
        std::fs::write(&path, b"{").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(old).unwrap();
        stale.push(path);
    }
    let fresh = meta.join("ledger/journal/y.json.run.2.tmp");
    std::fs::write(&fresh, b"{").unwrap();
    let entry = meta.join("ledger/journal/20261202T000000Z-run-000001.json");
    std::fs::write(&entry, b"{}").unwrap();
    lake.fence.hold(Instant::now(), Duration::from_secs(60));
    lake.prepare_staging().unwrap();
    for path in &stale {
        assert!(!path.exists(), "{} removed", path.display());
    }
    assert!(
        fresh.exists() && entry.exists(),
        "fresh temporary files and entries stay"
    );
}

#[test]
fn a_lapsed_or_lost_lease_refuses_writes_for_good() {
    let fence = Fence::default();
    let lease = Duration::from_secs(5);
    let long_ago = Instant::now()
        .checked_sub(Duration::from_secs(10))
        .unwrap_or_else(Instant::now);
    fence.hold(long_ago, lease);
    if fence.lapsed() {
        assert!(fence.check("x").is_err());
        assert!(
            !fence.renew(Instant::now()),
            "a lapsed lease is not renewed"
        );
        assert!(fence.check("x").is_err());
    }
    fence.hold(Instant::now(), lease);
    assert!(fence.renew(Instant::now()));
    fence.check("x").unwrap();
    fence.check_rel(LOCK_PATH).unwrap();
    fence.lose("taken over by someone".into());
    let e = fence.check("the ledger").unwrap_err().to_string();
    assert!(
        e.contains("lost the lake's lock (taken over by someone)"),
        "{e}"
    );
    fence.close();
    assert!(
        fence.check("x").is_err(),
        "closing does not reopen a lost fence"
    );
    fence.check_rel(LOCK_PATH).unwrap();
}

#[test]
fn paths_are_checked_before_publishing() {
    check_rel_path(
        "billing_period=2025-11/billing_account_id=1/f.parquet",
        Some(10),
    )
    .unwrap();
    let long = format!("billing_period=2025-11/{}/f.parquet", "a".repeat(256));
    assert!(matches!(
        check_rel_path(&long, None),
        Err(Error::Rejected(_))
    ));
    assert!(matches!(
        check_rel_path("a/../b", None),
        Err(Error::Rejected(_))
    ));
    assert!(matches!(
        check_rel_path("a//b", None),
        Err(Error::Rejected(_))
    ));
    let deep = vec!["a".repeat(200); 5].join("/");
    check_rel_path(&deep, None).unwrap();
    assert!(matches!(
        check_rel_path(&deep, Some(100)),
        Err(Error::Rejected(_))
    ));
}
