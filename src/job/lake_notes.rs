//! What a run's report says of the lake as a whole, beyond the objects it handled: units whose
//! snapshot lacks held-out rows (money not in the lake), and units whose every object has left
//! the bucket (kept as loaded).

use serde::Serialize;

/// Retained units named in a report, at most.
pub const EXAMPLES: usize = 5;

/// A unit the lake holds without all of its file's rows: money missing from the lake until a
/// corrected snapshot replaces it. Listed by every run (in its month range) and in `plan`.
#[derive(Debug, Clone, Serialize)]
pub struct LakeGap {
    pub unit: String,
    pub source_key: String,
    pub rows_held_out: u64,
    /// BilledCost of the held-out rows that could be read (unknown for old ledgers).
    pub billed_cost_held_out: Option<String>,
    pub rows_billed_cost_unreadable: u64,
    pub quarantine: Option<String>,
}

impl LakeGap {
    /// Units of `ledger` in the month range whose snapshot held rows out.
    pub fn find(
        ledger: &crate::state::ledger::Ledger,
        in_range: impl Fn(&str) -> bool,
    ) -> Vec<LakeGap> {
        ledger
            .units
            .values()
            .filter(|e| e.rows_quarantined > 0 && in_range(&e.unit.month))
            .map(|e| LakeGap {
                unit: e.unit.to_string(),
                source_key: e.source.key.clone(),
                rows_held_out: e.rows_quarantined,
                billed_cost_held_out: e.billed_cost_held_out.clone(),
                rows_billed_cost_unreadable: e.rows_cost_unreadable,
                quarantine: e.quarantine.clone(),
            })
            .collect()
    }
}

/// Units the lake holds whose every object has left the bucket (a lifecycle rule expiring old
/// bills, a cleaned-up prefix): kept, as the lake's history (see the README's retention); the
/// report counts them, with the first few, so their absence from the bucket is not silent.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RetainedUnits {
    pub count: u64,
    /// The first units (sorted), at most [`EXAMPLES`].
    pub examples: Vec<String>,
}

impl RetainedUnits {
    /// The units of `ledger` in range and in `shard` that no listed bill belongs to.
    pub fn find(
        ledger: &crate::state::ledger::Ledger,
        listed: &std::collections::HashSet<&crate::state::classify::SnapshotUnit>,
        in_scope: impl Fn(&crate::state::classify::SnapshotUnit) -> bool,
    ) -> RetainedUnits {
        let mut units: Vec<String> = ledger
            .units
            .values()
            .map(|e| &e.unit)
            .filter(|u| in_scope(u) && !listed.contains(u))
            .map(|u| u.to_string())
            .collect();
        units.sort();
        RetainedUnits {
            count: units.len() as u64,
            examples: units.into_iter().take(EXAMPLES).collect(),
        }
    }
}
