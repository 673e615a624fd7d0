//! The plan stage: compares the listing with the ledger and decides, for every object, what a
//! run does with it and why. `billpipe plan` prints this; `billpipe run` carries it out.
//!
//! Rules, per snapshot unit (account, month):
//! - among the bill files listed for a unit, only the most complete one is a candidate: the
//!   final (monthly) file beats every cumulative (daily) one, a later daily beats an earlier
//!   one; the others are skipped as superseded;
//! - the candidate is ingested if the ledger knows nothing of the unit, replaces the loaded
//!   snapshot if it ranks higher, or if it is the loaded object re-delivered (same key, other
//!   ETag or size); it is skipped if it is the loaded object unchanged, or if the loaded
//!   snapshot ranks higher (a late, older daily never rolls a month back).
//!
//! Operators can widen or narrow this: `--from`/`--to` restrict a run to billing months (the
//! rest is skipped as out of range), `--force` reloads the best snapshot of every unit in range
//! even when unchanged (the result equals a fresh load), and `billpipe state reset` marks units
//! so the next run reloads them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::classify::{BillFile, Classification, Pipeline};
use crate::ledger::Ledger;
use crate::source::ObjectInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// First load of a unit.
    Ingest,
    /// A newer snapshot (or a re-delivery) of a loaded unit.
    Replace,
    Skip,
}

#[derive(Debug, Clone)]
pub struct PlannedObject {
    pub object: ObjectInfo,
    pub bill: Option<BillFile>,
    pub action: Action,
    pub reason: String,
    /// Not recognised, but named like a bill (see `Classification::NearMiss`).
    pub near_miss: bool,
}

/// Operator choices that change the plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// First billing month (`YYYY-MM`) to consider.
    pub from: Option<String>,
    /// Last billing month (`YYYY-MM`) to consider.
    pub to: Option<String>,
    /// Reload even unchanged snapshots.
    pub force: bool,
}

impl PlanOptions {
    pub fn in_range(&self, month: &str) -> bool {
        self.from.as_deref().is_none_or(|f| month >= f)
            && self.to.as_deref().is_none_or(|t| month <= t)
    }
}

pub fn plan(
    pipeline: &Pipeline,
    listing: &[ObjectInfo],
    ledger: &Ledger,
    options: &PlanOptions,
) -> Vec<PlannedObject> {
    let mut out = Vec::new();
    let mut by_unit: BTreeMap<_, Vec<BillFile>> = BTreeMap::new();
    for obj in listing {
        match pipeline.classify(obj) {
            Classification::Bill(bill) if !options.in_range(&bill.unit.month) => {
                out.push(PlannedObject {
                    object: obj.clone(),
                    reason: format!(
                        "out of range: billing month {} is outside --from/--to",
                        bill.unit.month
                    ),
                    bill: Some(bill),
                    action: Action::Skip,
                    near_miss: false,
                })
            }
            Classification::Bill(bill) => by_unit.entry(bill.unit.clone()).or_default().push(bill),
            Classification::Unrecognised(reason) => out.push(PlannedObject {
                object: obj.clone(),
                bill: None,
                action: Action::Skip,
                reason: format!("not a bill file: {reason}"),
                near_miss: false,
            }),
            Classification::NearMiss(reason) => out.push(PlannedObject {
                object: obj.clone(),
                bill: None,
                action: Action::Skip,
                reason: format!("not loaded: {reason}"),
                near_miss: true,
            }),
        }
    }
    for (unit, mut bills) in by_unit {
        // Most complete first; ties (same rank under two prefixes) by newest modification.
        bills.sort_by(|a, b| {
            b.rank
                .cmp(&a.rank)
                .then_with(|| b.object.last_modified.cmp(&a.object.last_modified))
                .then_with(|| a.object.key.cmp(&b.object.key))
        });
        let loaded = ledger.get(&unit);
        let best = &bills[0];
        let (action, reason) = match loaded {
            None => (
                Action::Ingest,
                format!("first snapshot of {unit} ({})", best.rank),
            ),
            Some(l) if l.reset => (
                Action::Replace,
                format!("reload requested by `state reset` ({})", best.rank),
            ),
            Some(l) if options.force => (
                Action::Replace,
                format!(
                    "reload forced by --force ({}; the lake held {})",
                    best.rank, l.rank
                ),
            ),
            Some(l) if l.source.key == best.object.key => {
                if l.source.etag == best.object.etag && l.source.size == best.object.size {
                    (Action::Skip, "unchanged since it was loaded".to_string())
                } else {
                    (
                        Action::Replace,
                        "re-delivered (same key, new content) - replaces its earlier load"
                            .to_string(),
                    )
                }
            }
            Some(l) if best.rank > l.rank => (
                Action::Replace,
                format!(
                    "{} replaces the loaded {} ({})",
                    best.rank, l.rank, l.source.key
                ),
            ),
            Some(l) if best.rank < l.rank => (
                Action::Skip,
                format!(
                    "superseded: the lake holds the newer {} ({})",
                    l.rank, l.source.key
                ),
            ),
            Some(l) => (
                Action::Skip,
                format!(
                    "same snapshot ({}) already loaded from {}",
                    l.rank, l.source.key
                ),
            ),
        };
        for (i, bill) in bills.iter().enumerate() {
            if i == 0 {
                out.push(PlannedObject {
                    object: bill.object.clone(),
                    bill: Some(bill.clone()),
                    action,
                    reason: reason.clone(),
                    near_miss: false,
                });
                continue;
            }
            let reason = match loaded {
                Some(l) if l.source.key == bill.object.key && action != Action::Skip => {
                    format!(
                        "loaded earlier; replaced by the newer {} ({})",
                        best.rank, best.object.key
                    )
                }
                _ => format!(
                    "superseded by the newer {} ({})",
                    best.rank, best.object.key
                ),
            };
            out.push(PlannedObject {
                object: bill.object.clone(),
                bill: Some(bill.clone()),
                action: Action::Skip,
                reason,
                near_miss: false,
            });
        }
    }
    out.sort_by(|a, b| a.object.key.cmp(&b.object.key));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::SnapshotRank;
    use crate::ledger::LedgerEntry;

    fn obj(key: &str, etag: &str) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: 10,
            etag: etag.into(),
            last_modified: None,
        }
    }

    fn loaded(ledger: &mut Ledger, pipeline: &Pipeline, o: &ObjectInfo) {
        let Classification::Bill(b) = pipeline.classify(o) else {
            panic!()
        };
        ledger.record(LedgerEntry {
            unit: b.unit,
            source: o.clone(),
            family: b.family.clone(),
            rank: b.rank,
            outputs: vec![],
            quarantine: None,
            rows_loaded: 0,
            rows_quarantined: 0,
            billed_cost: "0".into(),
            billed_cost_held_out: None,
            rows_cost_unreadable: 0,
            loaded_at: String::new(),
            reset: false,
        });
    }

    fn action_of(p: &[PlannedObject], key: &str) -> (Action, String) {
        let o = p.iter().find(|o| o.object.key == key).unwrap();
        (o.action, o.reason.clone())
    }

    const D1: &str = "FOCUS-bill_details-1-20251202.CSV";
    const D2: &str = "FOCUS-bill_details-1-20251203.CSV";
    const M: &str = "FOCUS-bill_details-1-202512.CSV";

    #[test]
    fn snapshot_rules() {
        let p = Pipeline::load(None).unwrap();
        let mut ledger = Ledger::default();
        // Fresh lake: only the newest daily is loaded.
        let listing = vec![obj(D1, "a"), obj(D2, "b"), obj("notes.txt", "c")];
        let none = PlanOptions::default();
        let plan1 = plan(&p, &listing, &ledger, &none);
        assert_eq!(action_of(&plan1, D2).0, Action::Ingest);
        assert_eq!(action_of(&plan1, D1).0, Action::Skip);
        assert!(action_of(&plan1, "notes.txt")
            .1
            .starts_with("not a bill file"));

        loaded(&mut ledger, &p, &obj(D2, "b"));
        assert_eq!(
            action_of(&plan(&p, &listing, &ledger, &none), D2).0,
            Action::Skip
        );
        // Re-delivered with a new ETag: replaces itself.
        let redelivered = vec![obj(D2, "b2")];
        assert_eq!(
            action_of(&plan(&p, &redelivered, &ledger, &none), D2).0,
            Action::Replace
        );
        // The monthly replaces the daily.
        let with_monthly = vec![obj(D1, "a"), obj(D2, "b"), obj(M, "m")];
        assert_eq!(
            action_of(&plan(&p, &with_monthly, &ledger, &none), M).0,
            Action::Replace
        );
        loaded(&mut ledger, &p, &obj(M, "m"));
        // A late older daily after the monthly is superseded.
        let late = vec![obj(D1, "a")];
        let (a, why) = action_of(&plan(&p, &late, &ledger, &none), D1);
        assert_eq!(a, Action::Skip);
        assert!(why.contains("superseded"), "{why}");
        // --force reloads the best snapshot even though it is unchanged.
        let force = PlanOptions {
            force: true,
            ..PlanOptions::default()
        };
        let all = vec![obj(D1, "a"), obj(M, "m")];
        assert_eq!(
            action_of(&plan(&p, &all, &ledger, &force), M).0,
            Action::Replace
        );
        assert_eq!(
            action_of(&plan(&p, &all, &ledger, &force), D1).0,
            Action::Skip
        );
        // --from/--to: other months are out of range.
        let range = PlanOptions {
            from: Some("2026-01".into()),
            ..PlanOptions::default()
        };
        let (a, why) = action_of(&plan(&p, &all, &ledger, &range), M);
        assert_eq!(a, Action::Skip);
        assert!(why.starts_with("out of range"), "{why}");
        let _ = SnapshotRank::Final;
    }
}
