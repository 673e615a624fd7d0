//! `billpipe state`, `state reset` and `state compact`: the ledger of a lake, read; units marked
//! for reload; its journal folded into its base.

use std::sync::Arc;

use crate::state::ledger::{Compaction, Ledger, LedgerEntry};
use crate::state::lock::{self, LockOptions};
use crate::store::lake::{self, Lake};
use crate::store::s3::{S3Context, S3Options};
use crate::Result;

/// `billpipe state`: the ledger of a lake, read-only.
pub fn state(dest: &str, s3: &S3Options) -> Result<Ledger> {
    let lake = lake::open(dest, false, || S3Context::connect(s3))?;
    Ledger::load(lake.as_ref())
}

/// Which ledger entries `billpipe state reset` applies to.
#[derive(Debug, Clone, Default)]
pub struct ResetFilter {
    pub account: Option<String>,
    pub month: Option<String>,
}

/// Entries matching `filter`: what `state reset` would mark.
pub fn reset_candidates(ledger: &Ledger, filter: &ResetFilter) -> Vec<LedgerEntry> {
    ledger
        .units
        .values()
        .filter(|e| filter.account.as_ref().is_none_or(|a| &e.unit.account == a))
        .filter(|e| filter.month.as_ref().is_none_or(|m| &e.unit.month == m))
        .cloned()
        .collect()
}

/// `billpipe state reset`: marks matching units so the next run reloads them. The lake's files
/// stay until that reload replaces them, so readers never see a gap. Takes the lake's lock.
pub fn state_reset(
    dest: &str,
    s3: &S3Options,
    filter: &ResetFilter,
    lock: &LockOptions,
) -> Result<Vec<LedgerEntry>> {
    let lake: Arc<Lake> = Arc::from(lake::open(dest, true, || S3Context::connect(s3))?);
    let _lock = lock::acquire(lake.clone(), "state reset", lock)?;
    let mut ledger = Ledger::load(lake.as_ref())?;
    let chosen = reset_candidates(&ledger, filter);
    // One journal entry per unit (the reset mark), not a rewrite of the ledger.
    for e in &chosen {
        ledger.append(
            lake.as_ref(),
            LedgerEntry {
                reset: true,
                ..e.clone()
            },
        )?;
    }
    Ok(chosen)
}

/// `billpipe state compact`: folds the ledger's journal into its base now, whatever its size
/// (runs do it at their end once the journal outgrew its bound). Takes the lake's lock.
pub fn state_compact(dest: &str, s3: &S3Options, lock: &LockOptions) -> Result<Compaction> {
    let lake: Arc<Lake> = Arc::from(lake::open(dest, true, || S3Context::connect(s3))?);
    let _lock = lock::acquire(lake.clone(), "state compact", lock)?;
    let mut ledger = Ledger::load(lake.as_ref())?;
    ledger.compact(lake.as_ref())
}
