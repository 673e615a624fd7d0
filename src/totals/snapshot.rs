//! Which snapshot a lake file is, told from the ledger: final or month-to-date (through which
//! day), from which source object, loaded when, with how many rows held out.

use std::collections::HashMap;
use std::path::Path;

use chrono::{Datelike, NaiveDate};

use super::{FileSnapshot, NOT_IN_LEDGER};
use crate::state::classify::{Pipeline, SnapshotRank};
use crate::state::ledger::LedgerEntry;
use crate::Result;

/// `data_lag_days` of every family of the pipeline, to turn a month-to-date file's delivery date
/// into the last day it covers. Without `--pipeline` a default that does not load is no error
/// (the snapshot then shows the delivery date instead).
pub(super) fn family_lags(pipeline: Option<&Path>) -> Result<HashMap<String, u32>> {
    let loaded = match pipeline {
        Some(p) => Some(Pipeline::load(Some(p))?),
        None => Pipeline::load(None).ok(),
    };
    Ok(loaded
        .map(|p| {
            p.families
                .iter()
                .map(|f| (f.name.clone(), f.data_lag_days))
                .collect()
        })
        .unwrap_or_default())
}

/// The snapshot(s) behind one lake file: every ledger entry listing it (normally exactly one).
pub(super) fn describe_file(
    rel: &str,
    entries: Option<&Vec<&LedgerEntry>>,
    lags: &HashMap<String, u32>,
) -> Vec<FileSnapshot> {
    let Some(entries) = entries.filter(|e| !e.is_empty()) else {
        return vec![FileSnapshot {
            file: rel.to_string(),
            snapshot: NOT_IN_LEDGER.into(),
            unit: None,
            source_key: None,
            source_etag: None,
            loaded_at: None,
            rows_held_out: None,
            quarantine: None,
            reload_pending: false,
        }];
    };
    entries
        .iter()
        .map(|e| FileSnapshot {
            file: rel.to_string(),
            snapshot: snapshot_text(e, lags),
            unit: Some(e.unit.to_string()),
            source_key: Some(e.source.key.clone()),
            source_etag: Some(e.source.etag.clone()),
            loaded_at: Some(e.loaded_at.clone()),
            rows_held_out: Some(e.rows_quarantined),
            quarantine: e.quarantine.clone(),
            reload_pending: e.reset,
        })
        .collect()
}

/// `final`, or `month-to-date through day N` where N is the last day the file covers (its
/// delivery date less the family's `data_lag_days`).
fn snapshot_text(e: &LedgerEntry, lags: &HashMap<String, u32>) -> String {
    let date = match &e.rank {
        SnapshotRank::Final => return "final".into(),
        SnapshotRank::Cumulative(d) => d,
    };
    let Ok(delivered) = NaiveDate::parse_from_str(date, "%Y%m%d") else {
        return format!("month-to-date ({date})");
    };
    let covered = lags
        .get(&e.family)
        .and_then(|lag| delivered.checked_sub_days(chrono::Days::new(u64::from(*lag))));
    match covered {
        Some(c) if c.format("%Y-%m").to_string() == e.unit.month => {
            format!("month-to-date through day {}", c.day())
        }
        _ => format!("month-to-date, delivered {}", delivered.format("%Y-%m-%d")),
    }
}
