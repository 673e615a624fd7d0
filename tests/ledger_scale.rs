//! The ledger at scale (issue #12): 10,000 customers × 20 months committed one by one through
//! the real API into a local lake, as 20 monthly runs (each takes the lock, loads the ledger,
//! appends one entry per customer, compacts at its end if the journal outgrew its bound), then
//! `state` (a full load), `state reset` of one account and `state compact`, timed.
//!
//! Ignored by default; `scripts/ledger-scale.sh` runs it. `BILLPIPE_LEDGER_CUSTOMERS` (10,000)
//! and `BILLPIPE_LEDGER_MONTHS` (20) scale it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use billpipe::job::state::{state, state_compact, state_reset, ResetFilter};
use billpipe::state::classify::{SnapshotRank, SnapshotUnit};
use billpipe::state::ledger::{Ledger, LedgerEntry, OutputFile};
use billpipe::state::lock::{self, LockOptions};
use billpipe::store::lake::Lake;
use billpipe::store::s3::S3Options;
use billpipe::store::source::ObjectInfo;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn entry(account: &str, month: &str) -> LedgerEntry {
    let stem = format!("tencent-{account}-{}", month.replace('-', ""));
    LedgerEntry {
        unit: SnapshotUnit {
            unit: "tencent".into(),
            account: account.into(),
            month: month.into(),
        },
        source: ObjectInfo {
            key: format!("billing/focus/FOCUS-bill_details-{account}-{month}.CSV"),
            size: 1_234_567,
            etag: "\"0123456789abcdef0123456789abcdef\"".into(),
            last_modified: Some("2025-12-01T00:00:00Z".into()),
        },
        parts: vec![],
        family: "focus-monthly".into(),
        rank: SnapshotRank::Final,
        outputs: vec![OutputFile {
            path: format!("billing_period={month}/billing_account_id={account}/{stem}.parquet"),
            rows: 12_345,
            billed_cost: "12345.678901".into(),
            bytes: 456_789,
        }],
        quarantine: None,
        rows_loaded: 12_345,
        rows_quarantined: 0,
        billed_cost: "12345.678901".into(),
        billed_cost_held_out: Some("0.000000".into()),
        rows_cost_unreadable: 0,
        loaded_at: "2025-12-01T00:00:00Z".into(),
        reset: false,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[test]
#[ignore = "minutes: run by scripts/ledger-scale.sh"]
fn ledger_of_200_000_units() {
    let customers = env_or("BILLPIPE_LEDGER_CUSTOMERS", 10_000);
    let months = env_or("BILLPIPE_LEDGER_MONTHS", 20);
    let total = customers * months;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let dest = root.to_str().unwrap().to_string();
    let opts = LockOptions::default();
    let mut n = 0;
    let started = Instant::now();
    for m in 0..months {
        let month = format!("{}-{:02}", 2024 + m / 12, m % 12 + 1);
        let lake = Arc::new(Lake::local(root.clone(), true).unwrap());
        let _lock = lock::acquire(lake.clone(), "bench", &opts).unwrap();
        let t = Instant::now();
        let mut ledger = Ledger::load(&lake).unwrap();
        let load = t.elapsed();
        let (base_before, journal_before) = (ledger.units.len(), ledger.journal_len());
        let t = Instant::now();
        for c in 0..customers {
            let e = entry(&format!("{:012}", 100_000_000_000u64 + c as u64), &month);
            let one = Instant::now();
            ledger.append(&lake, e).unwrap();
            n += 1;
            if n == 1000 || n == total {
                println!(
                    "commit of unit {n}: {} ({} units loaded before)",
                    ms(one.elapsed()),
                    n - 1
                );
            }
        }
        let commits = t.elapsed();
        let mut line = format!(
            "run {:2} ({month}): load {} units ({journal_before} in the journal) {}; {customers} commits {:.2} s ({} each)",
            m + 1,
            base_before,
            ms(load),
            commits.as_secs_f64(),
            ms(commits / customers.max(1) as u32),
        );
        if ledger.wants_compaction() {
            let t = Instant::now();
            let c = ledger.compact(&lake).unwrap();
            line.push_str(&format!(
                "; compacted {} into {} entries {}",
                c.folded,
                c.base_entries,
                ms(t.elapsed())
            ));
        }
        println!("{line}");
    }
    println!(
        "{total} units committed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let s3 = S3Options::default();
    let t = Instant::now();
    let ledger = state(&dest, &s3).unwrap();
    println!(
        "state (full load of {} units, {} journal objects): {}",
        ledger.units.len(),
        ledger.journal_len(),
        ms(t.elapsed())
    );
    assert_eq!(ledger.units.len(), total);
    let account = format!("{:012}", 100_000_000_042u64);
    let t = Instant::now();
    let reset = state_reset(
        &dest,
        &s3,
        &ResetFilter {
            account: Some(account.clone()),
            month: None,
        },
        &opts,
    )
    .unwrap();
    println!(
        "state reset --account {account} ({} units): {}",
        reset.len(),
        ms(t.elapsed())
    );
    assert_eq!(reset.len(), months);
    let t = Instant::now();
    let c = state_compact(&dest, &s3, &opts).unwrap();
    println!(
        "state compact ({} journal objects into {} entries): {}",
        c.folded,
        c.base_entries,
        ms(t.elapsed())
    );
    let base = std::fs::metadata(root.join("_billpipe/ledger/base.jsonl"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("base.jsonl: {:.1} MB", base as f64 / 1e6);
    let after = state(&dest, &s3).unwrap();
    assert_eq!(after.units.len(), total);
    assert_eq!(after.units.values().filter(|e| e.reset).count(), months);
}
