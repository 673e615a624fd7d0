//! The ledger: what the lake holds, kept in the lake itself (`<dest>/_billpipe/ledger.json`) so
//! a scheduled job in a fresh container knows what is loaded without any local state.
//!
//! One entry per snapshot unit (unit, account, month): the source object whose snapshot the
//! lake shows, and the files that snapshot produced. It is rewritten (atomically) after each
//! snapshot is published, so it is never ahead of the lake. If a run dies between publishing
//! and the ledger write, the lake already shows the new snapshot and the ledger the old one;
//! the next run then loads the same object again and rewrites the same files: idempotent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::classify::{SnapshotRank, SnapshotUnit};
use crate::store::lake::Lake;
use crate::store::source::ObjectInfo;
use crate::{Error, Result};

pub const LEDGER_PATH: &str = "_billpipe/ledger.json";
const FORMAT_VERSION: u32 = 1;

/// One output file of a loaded snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path relative to the lake root.
    pub path: String,
    pub rows: u64,
    pub billed_cost: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub unit: SnapshotUnit,
    /// The object the snapshot was loaded from (its first part, for a snapshot in parts).
    pub source: ObjectInfo,
    /// The snapshot's other parts, in part order (empty for a snapshot in one object).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<ObjectInfo>,
    pub family: String,
    pub rank: SnapshotRank,
    pub outputs: Vec<OutputFile>,
    /// Quarantine file of this snapshot (rows held out, cells loaded as null), if any.
    pub quarantine: Option<String>,
    pub rows_loaded: u64,
    /// Rows held out of the lake (not placeable or countable, or gatekept).
    pub rows_quarantined: u64,
    pub billed_cost: String,
    /// BilledCost of the held-out rows whose BilledCost could be read (absent in ledgers
    /// written before reconciliation was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_cost_held_out: Option<String>,
    /// Held-out rows whose BilledCost could not be read.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_cost_unreadable: u64,
    pub loaded_at: String,
    /// Set by `billpipe state reset`: the next run reloads this unit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub format: u32,
    /// Keyed by the unit's display form `unit/account/month`.
    pub units: BTreeMap<String, LedgerEntry>,
}

impl Ledger {
    pub fn load(lake: &Lake) -> Result<Ledger> {
        match lake.get(LEDGER_PATH)? {
            None => Ok(Ledger {
                format: FORMAT_VERSION,
                units: BTreeMap::new(),
            }),
            Some(bytes) => {
                let ledger: Ledger = serde_json::from_slice(&bytes).map_err(|e| Error::Ledger {
                    path: format!("{}/{LEDGER_PATH}", lake.uri().trim_end_matches('/')),
                    message: e.to_string(),
                })?;
                if ledger.format != FORMAT_VERSION {
                    return Err(Error::Ledger {
                        path: LEDGER_PATH.into(),
                        message: format!("format {} is not supported", ledger.format),
                    });
                }
                Ok(ledger)
            }
        }
    }

    pub fn save(&self, lake: &Lake) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Ledger {
            path: LEDGER_PATH.into(),
            message: e.to_string(),
        })?;
        lake.put(LEDGER_PATH, &bytes)
    }

    pub fn get(&self, unit: &SnapshotUnit) -> Option<&LedgerEntry> {
        self.units.get(&unit.to_string())
    }

    pub fn record(&mut self, entry: LedgerEntry) {
        self.units.insert(entry.unit.to_string(), entry);
    }
}
