use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::store::memory::MemoryStore;
use crate::store::Store;

fn entry(account: &str, month: &str, etag: &str) -> LedgerEntry {
    LedgerEntry {
        unit: SnapshotUnit {
            unit: "tencent".into(),
            account: account.into(),
            month: month.into(),
        },
        source: ObjectInfo {
            key: format!("bills/{account}-{month}.csv"),
            size: 10,
            etag: etag.into(),
            last_modified: None,
        },
        parts: vec![],
        family: "focus-monthly".into(),
        rank: SnapshotRank::Final,
        outputs: vec![OutputFile {
            path: format!("billing_period={month}/billing_account_id={account}/t.parquet"),
            rows: 3,
            billed_cost: "1.50".into(),
            bytes: 100,
        }],
        quarantine: None,
        rows_loaded: 3,
        rows_quarantined: 0,
        billed_cost: "1.50".into(),
        billed_cost_held_out: None,
        rows_cost_unreadable: 0,
        loaded_at: "2025-12-01T00:00:00Z".into(),
        reset: false,
    }
}

/// A handle on `store` that may write (as if it held the lake's lock).
fn writer(store: &Arc<dyn Store>) -> Lake {
    let lake = Lake::new(store.clone());
    lake.fence().hold(Instant::now(), Duration::from_secs(600));
    lake
}

fn memory() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new("ledger"))
}

fn keys(store: &Arc<dyn Store>, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

fn etag_of(ledger: &Ledger, account: &str, month: &str) -> String {
    ledger
        .units
        .values()
        .find(|e| e.unit.account == account && e.unit.month == month)
        .map(|e| e.source.etag.clone())
        .unwrap_or_default()
}

#[test]
fn a_commit_is_one_journal_object_and_the_newest_entry_wins() {
    let store = memory();
    let lake = writer(&store);
    let mut ledger = Ledger::load(&lake).unwrap();
    assert!(ledger.units.is_empty());
    ledger.append(&lake, entry("1", "2025-11", "a")).unwrap();
    ledger.append(&lake, entry("2", "2025-11", "b")).unwrap();
    ledger.append(&lake, entry("1", "2025-11", "c")).unwrap();
    // The manifest, and one object per commit: nothing rewritten.
    assert!(store.get_bytes(LEDGER_PATH).unwrap().is_some());
    assert!(store.get_bytes(BASE_PATH).unwrap().is_none());
    let journal = keys(&store, JOURNAL_DIR);
    assert_eq!(journal.len(), 3);
    assert!(
        journal.iter().all(|k| k.contains(lake.run_id())),
        "{journal:?}"
    );
    let loaded = Ledger::load(&lake).unwrap();
    assert_eq!(loaded.units.len(), 2);
    assert_eq!(etag_of(&loaded, "1", "2025-11"), "c");
    assert_eq!(loaded.units, ledger.units);
    // The manifest tells an older billpipe this is not its format.
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.get_bytes(LEDGER_PATH).unwrap().unwrap()).unwrap();
    assert_eq!(manifest["format"], 2);
}

#[test]
fn a_later_run_wins_even_over_a_journal_name_from_the_future() {
    // A run whose clock ran ahead wrote an entry; the next run's clock is behind it.
    let store = memory();
    let lake = writer(&store);
    let mut ledger = Ledger::load(&lake).unwrap();
    ledger.append(&lake, entry("1", "2025-11", "old")).unwrap();
    let future = format!("{JOURNAL_DIR}29990101T000000.000000Z-other-0000000001.json");
    let ahead = serde_json::to_vec(&entry("1", "2025-11", "ahead")).unwrap();
    store.put_bytes(&future, &ahead).unwrap();
    let next = writer(&store);
    let mut ledger = Ledger::load(&next).unwrap();
    assert_eq!(etag_of(&ledger, "1", "2025-11"), "ahead");
    ledger
        .append(&next, entry("1", "2025-11", "newest"))
        .unwrap();
    assert_eq!(
        etag_of(&Ledger::load(&next).unwrap(), "1", "2025-11"),
        "newest"
    );
    // Leftover temporary files and foreign names in the journal are not entries.
    store
        .put_bytes(&format!("{JOURNAL_DIR}x.json.run.1.tmp"), b"{")
        .unwrap();
    store
        .put_bytes(&format!("{JOURNAL_DIR}README"), b"hello")
        .unwrap();
    assert_eq!(Ledger::load(&next).unwrap().units.len(), 1);
}

#[test]
fn a_reset_mark_is_a_journal_entry() {
    let store = memory();
    let lake = writer(&store);
    let mut ledger = Ledger::load(&lake).unwrap();
    let e = entry("1", "2025-11", "a");
    ledger.append(&lake, e.clone()).unwrap();
    ledger
        .append(
            &lake,
            LedgerEntry {
                reset: true,
                ..e.clone()
            },
        )
        .unwrap();
    let loaded = Ledger::load(&lake).unwrap();
    assert!(loaded.get(&e.unit).unwrap().reset);
}

fn legacy_bytes(entries: &[LedgerEntry]) -> Vec<u8> {
    let file = LedgerFile {
        format: LEGACY_FORMAT,
        units: entries
            .iter()
            .map(|e| (e.unit.to_string(), e.clone()))
            .collect(),
        layout: None,
    };
    serde_json::to_vec_pretty(&file).unwrap()
}

#[test]
fn a_single_file_ledger_is_migrated_by_the_lock_holder_only() {
    let store = memory();
    let old = [entry("1", "2025-10", "a"), entry("2", "2025-10", "b")];
    store.put_bytes(LEDGER_PATH, &legacy_bytes(&old)).unwrap();
    // Without the lock (plan, state, totals): read as it is, nothing written.
    let reader = Lake::new(store.clone());
    let read = Ledger::load(&reader).unwrap();
    assert_eq!(read.units.len(), 2);
    assert!(store.get_bytes(BASE_PATH).unwrap().is_none());
    // With it: base first, then the manifest over the old file.
    let lake = writer(&store);
    let mut ledger = Ledger::load(&lake).unwrap();
    assert_eq!(ledger.units, read.units);
    let base = String::from_utf8(store.get_bytes(BASE_PATH).unwrap().unwrap()).unwrap();
    assert_eq!(base.lines().count(), 2, "{base}");
    assert!(base.lines().next().unwrap().contains("\"account\":\"1\""));
    let manifest: LedgerFile =
        serde_json::from_slice(&store.get_bytes(LEDGER_PATH).unwrap().unwrap()).unwrap();
    assert_eq!(manifest.format, FORMAT_VERSION);
    assert!(manifest.units.is_empty());
    ledger.append(&lake, entry("1", "2025-10", "c")).unwrap();
    let again = Ledger::load(&Lake::new(store.clone())).unwrap();
    assert_eq!(again.units.len(), 2);
    assert_eq!(etag_of(&again, "1", "2025-10"), "c");
    assert_eq!(etag_of(&again, "2", "2025-10"), "b");
}

#[test]
fn a_migration_killed_after_the_base_is_done_again_from_the_old_file() {
    let store = memory();
    let old = [entry("1", "2025-10", "a"), entry("2", "2025-10", "b")];
    store.put_bytes(LEDGER_PATH, &legacy_bytes(&old)).unwrap();
    // The killed migration's base (here: a stale one) beside the old file.
    let stale = serde_json::to_string(&entry("9", "2025-01", "z")).unwrap();
    store.put_bytes(BASE_PATH, stale.as_bytes()).unwrap();
    let read = Ledger::load(&Lake::new(store.clone())).unwrap();
    assert_eq!(
        read.units.len(),
        2,
        "the old file is the truth until replaced"
    );
    let lake = writer(&store);
    Ledger::load(&lake).unwrap();
    let migrated = Ledger::load(&Lake::new(store.clone())).unwrap();
    assert_eq!(migrated.units, read.units);
    assert_eq!(migrated.base_entries, 2);
}

#[test]
fn a_migrated_lake_is_refused_by_an_older_reader() {
    // What billpipe 0.x (format 1) does with the manifest: it parses, then checks the format.
    let store = memory();
    let lake = writer(&store);
    let mut ledger = Ledger::load(&lake).unwrap();
    ledger.append(&lake, entry("1", "2025-10", "a")).unwrap();
    let old: LedgerFile =
        serde_json::from_slice(&store.get_bytes(LEDGER_PATH).unwrap().unwrap()).unwrap();
    assert_ne!(old.format, LEGACY_FORMAT);
    store
        .put_bytes(LEDGER_PATH, br#"{"format": 3, "units": {}}"#)
        .unwrap();
    let e = Ledger::load(&lake).unwrap_err().to_string();
    assert!(e.contains("format 3 is not supported"), "{e}");
}

#[test]
fn compaction_folds_and_deletes_only_what_it_read() {
    let store = memory();
    let lake = writer(&store);
    let mut ledger = Ledger::load(&lake).unwrap();
    for m in 1..=9 {
        ledger
            .append(&lake, entry("1", &format!("2025-0{m}"), "a"))
            .unwrap();
    }
    ledger.append(&lake, entry("1", "2025-01", "b")).unwrap();
    // Another process appends after this handle loaded.
    let other = writer(&store);
    let mut theirs = Ledger::load(&other).unwrap();
    theirs.append(&other, entry("2", "2025-01", "x")).unwrap();
    theirs.append(&other, entry("1", "2025-09", "y")).unwrap();
    let done = ledger.compact(&lake).unwrap();
    assert_eq!(
        done,
        Compaction {
            base_entries: 9,
            folded: 10
        }
    );
    let left = keys(&store, JOURNAL_DIR);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().all(|k| k.contains(other.run_id())));
    let loaded = Ledger::load(&Lake::new(store.clone())).unwrap();
    assert_eq!(loaded.units.len(), 10);
    assert_eq!(etag_of(&loaded, "1", "2025-01"), "b");
    assert_eq!(etag_of(&loaded, "2", "2025-01"), "x");
    assert_eq!(
        etag_of(&loaded, "1", "2025-09"),
        "y",
        "unfolded entries win over the base"
    );
    assert_eq!(loaded.base_entries, 9);
    assert_eq!(loaded.journal_len(), 2);
}

#[test]
fn a_compaction_killed_before_its_deletes_changes_nothing() {
    let store = memory();
    let lake = writer(&store);
    let mut ledger = Ledger::load(&lake).unwrap();
    ledger.append(&lake, entry("1", "2025-01", "a")).unwrap();
    ledger.append(&lake, entry("1", "2025-01", "b")).unwrap();
    ledger.append(&lake, entry("2", "2025-01", "c")).unwrap();
    let journal = keys(&store, JOURNAL_DIR);
    let saved: Vec<_> = journal
        .iter()
        .map(|k| (k.clone(), store.get_bytes(k).unwrap().unwrap()))
        .collect();
    let before = Ledger::load(&lake).unwrap().units;
    ledger.compact(&lake).unwrap();
    assert!(keys(&store, JOURNAL_DIR).is_empty());
    // Killed after the base (every journal object still there), or after the first delete
    // (deletes go oldest first: a suffix is left).
    for skip in 0..saved.len() {
        for (k, b) in &saved[skip..] {
            store.put_bytes(k, b).unwrap();
        }
        assert_eq!(Ledger::load(&lake).unwrap().units, before, "skip {skip}");
    }
}

#[test]
fn compaction_is_wanted_past_its_bound() {
    let mut ledger = Ledger {
        journal: vec!["x".into(); 1000],
        ..Default::default()
    };
    assert!(!ledger.wants_compaction());
    ledger.journal.push("y".into());
    assert!(ledger.wants_compaction());
    ledger.base_entries = 200_000;
    assert!(!ledger.wants_compaction());
    ledger.journal = vec!["x".into(); 200_000 / 64 + 1];
    assert!(ledger.wants_compaction());
}

fn two_writers(store: Arc<dyn Store>) {
    let a = writer(&store);
    let b = writer(&store);
    let mut la = Ledger::load(&a).unwrap();
    let mut lb = Ledger::load(&b).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..150 {
                la.append(&a, entry(&format!("a{i}"), "2025-11", "a"))
                    .unwrap();
            }
        });
        s.spawn(|| {
            for i in 0..150 {
                lb.append(&b, entry(&format!("b{i}"), "2025-11", "b"))
                    .unwrap();
            }
        });
    });
    let loaded = Ledger::load(&Lake::new(store.clone())).unwrap();
    assert_eq!(loaded.units.len(), 300);
    assert_eq!(keys(&store, JOURNAL_DIR).len(), 300);
}

#[test]
fn two_writers_lose_nothing_in_memory() {
    two_writers(memory());
}

#[test]
fn two_writers_lose_nothing_in_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    std::fs::create_dir_all(&root).unwrap();
    // Two handles, as two processes would have.
    let store: Arc<dyn Store> = Arc::new(crate::store::local::LocalStore::new(root.clone(), "t"));
    two_writers(store);
    let a = Lake::local(root.clone(), true).unwrap();
    let b = Lake::local(root, true).unwrap();
    for lake in [&a, &b] {
        lake.fence().hold(Instant::now(), Duration::from_secs(600));
    }
    let mut la = Ledger::load(&a).unwrap();
    let mut lb = Ledger::load(&b).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..50 {
                la.append(&a, entry(&format!("c{i}"), "2025-12", "c"))
                    .unwrap();
            }
        });
        s.spawn(|| {
            for i in 0..50 {
                lb.append(&b, entry(&format!("d{i}"), "2025-12", "d"))
                    .unwrap();
            }
        });
    });
    assert_eq!(Ledger::load(&a).unwrap().units.len(), 400);
}
