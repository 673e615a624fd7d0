//! The plan stage: compares the listing with the ledger and decides, for every object, what a
//! run does with it and why. `billpipe plan` prints this; `billpipe run` carries it out.
//!
//! Rules, per snapshot unit (account, month):
//! - among the bill files listed for a unit, only the most complete one is a candidate: the
//!   final (monthly) file beats every cumulative (daily) one, a later daily beats an earlier
//!   one; the others are skipped as superseded;
//! - among snapshots of the same rank (two finals: a detail monthly and a bill pack, or the same
//!   file under two prefixes), the newest delivery wins: LastModified, then the key as a
//!   tie-break ([`Delivery`]);
//! - the candidate is ingested if the ledger knows nothing of the unit, replaces the loaded
//!   snapshot if it ranks higher or is a newer delivery of the same rank, or if it is the loaded
//!   object re-delivered (same key, other ETag or size); it is skipped if it is the loaded object
//!   unchanged, or if the loaded snapshot ranks higher (a late, older daily never rolls a month
//!   back) or is the newer delivery.
//!
//! Operators can widen or narrow this: `--from`/`--to` restrict a run to billing months (the
//! rest is skipped as out of range), `--force` reloads the best snapshot of every unit in range
//! even when unchanged (the result equals a fresh load), and `billpipe state reset` marks units
//! so the next run reloads them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::state::classify::{BillFile, Classification, Pipeline};
use crate::state::ledger::Ledger;
use crate::state::shard::Shard;
use crate::store::source::ObjectInfo;

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
    /// For an object to load: the unit's next-best objects (keys, best first) that would still
    /// improve on what the lake holds. If this one is rejected, the run loads the first of them
    /// that is not, so a bad newest file leaves the lake as a fresh load of the bucket would.
    pub fallbacks: Vec<String>,
}

/// Why a sharded run leaves an object to another shard, or `None` if it is this shard's: a
/// bill of a unit another shard takes, and (except on shard 0, which reports them once for
/// all) objects that are no bill of any unit.
fn other_shards(classified: &Classification, shard: Option<Shard>) -> Option<String> {
    let shard = shard?;
    match classified {
        Classification::Bill(bill) if !shard.takes(&bill.unit) => Some(format!(
            "another shard's: {} belongs to shard {} of {}",
            bill.unit,
            Shard::of(&bill.unit, shard.count),
            shard.count
        )),
        Classification::Bill(_) => None,
        _ if shard.reports_the_rest() => None,
        _ => Some(format!(
            "not a bill of any unit: shard 0 of {} reports it",
            shard.count
        )),
    }
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
    /// Only the units of this shard (`run --shard I/N`).
    pub shard: Option<Shard>,
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
        let classified = pipeline.classify(obj);
        if let Some(skip) = other_shards(&classified, options.shard) {
            out.push(PlannedObject {
                object: obj.clone(),
                reason: skip,
                bill: match classified {
                    Classification::Bill(bill) => Some(*bill),
                    _ => None,
                },
                action: Action::Skip,
                near_miss: false,
                fallbacks: Vec::new(),
            });
            continue;
        }
        match classified {
            Classification::Bill(bill) if !options.in_range(&bill.unit.month) => {
                out.push(PlannedObject {
                    object: obj.clone(),
                    reason: format!(
                        "out of range: billing month {} is outside --from/--to",
                        bill.unit.month
                    ),
                    bill: Some(*bill),
                    action: Action::Skip,
                    near_miss: false,
                    fallbacks: Vec::new(),
                })
            }
            Classification::Bill(bill) => by_unit.entry(bill.unit.clone()).or_default().push(*bill),
            Classification::Unrecognised(reason) => out.push(PlannedObject {
                object: obj.clone(),
                bill: None,
                action: Action::Skip,
                reason: format!("not a bill file: {reason}"),
                near_miss: false,
                fallbacks: Vec::new(),
            }),
            Classification::NearMiss(reason) => out.push(PlannedObject {
                object: obj.clone(),
                bill: None,
                action: Action::Skip,
                reason: format!("not loaded: {reason}"),
                near_miss: true,
                fallbacks: Vec::new(),
            }),
        }
    }
    let listed: std::collections::HashMap<&str, (&str, u64)> = listing
        .iter()
        .map(|o| (o.key.as_str(), (o.etag.as_str(), o.size)))
        .collect();
    for (unit, bills) in by_unit {
        // Parts of one delivery become one snapshot, led by its first part; best first.
        let mut snapshots = group_parts(bills);
        snapshots.sort_by(|a, b| Delivery::of(&b[0]).cmp(&Delivery::of(&a[0])));
        // The loaded snapshot competes only while the bucket still holds it as it was loaded:
        // a copy re-delivered with other content, or deleted, is no longer what the lake shows,
        // and a fresh load of the bucket would not pick it (it is then replaced by the best
        // snapshot the bucket holds, like any unit whose snapshot is gone).
        let recorded = ledger.get(&unit);
        let loaded = recorded.filter(|l| {
            std::iter::once(&l.source)
                .chain(l.parts.iter())
                .all(|o| listed.get(o.key.as_str()) == Some(&(o.etag.as_str(), o.size)))
        });
        let best = &snapshots[0][0];
        let same_snapshot = |l: &crate::state::ledger::LedgerEntry, b: &BillFile| {
            let loaded: Vec<&str> = std::iter::once(&l.source)
                .chain(l.parts.iter())
                .map(|o| o.key.as_str())
                .collect();
            b.objects().any(|o| loaded.contains(&o.key.as_str()))
        };
        let unchanged = |l: &crate::state::ledger::LedgerEntry, lead: &BillFile| {
            let mut had: Vec<(&str, &str, u64)> = std::iter::once(&l.source)
                .chain(l.parts.iter())
                .map(|o| (o.key.as_str(), o.etag.as_str(), o.size))
                .collect();
            let mut has: Vec<(&str, &str, u64)> = lead
                .objects()
                .map(|o| (o.key.as_str(), o.etag.as_str(), o.size))
                .collect();
            had.sort_unstable();
            has.sort_unstable();
            had == has
        };
        let (action, reason) = match loaded {
            None if recorded.is_some_and(|r| r.reset) => (
                Action::Replace,
                format!("reload requested by `state reset`, or its last commit was interrupted ({})", best.rank),
            ),
            None if recorded.is_some() && options.force => (
                Action::Replace,
                format!("reload forced by --force ({})", best.rank),
            ),
            None => match recorded {
                None => (
                    Action::Ingest,
                    format!("first snapshot of {unit} ({})", best.rank),
                ),
                Some(r) if same_snapshot(r, best) => (
                    Action::Replace,
                    format!(
                        "re-delivered (the loaded {} changed, or a part of it was added or removed) - replaces its earlier load",
                        r.source.key
                    ),
                ),
                Some(r) => (
                    Action::Replace,
                    format!(
                        "the loaded {} ({}) is no longer in the bucket as it was loaded: the best snapshot there ({}) replaces it",
                        r.rank, r.source.key, best.rank
                    ),
                ),
            },
            Some(l) if l.reset => (
                Action::Replace,
                format!("reload requested by `state reset`, or its last commit was interrupted ({})", best.rank),
            ),
            Some(l) if options.force => (
                Action::Replace,
                format!(
                    "reload forced by --force ({}; the lake held {})",
                    best.rank, l.rank
                ),
            ),
            Some(l) if same_snapshot(l, best) => {
                if unchanged(l, best) {
                    (Action::Skip, "unchanged since it was loaded".to_string())
                } else if best.other_parts.is_empty() && l.parts.is_empty() {
                    (
                        Action::Replace,
                        "re-delivered (same key, new content) - replaces its earlier load"
                            .to_string(),
                    )
                } else {
                    (
                        Action::Replace,
                        "a part of the snapshot changed, was added or removed - the whole snapshot is reloaded"
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
            Some(l) if Delivery::of(best) > Delivery::loaded(l) => (
                Action::Replace,
                format!(
                    "a newer delivery of the {} (modified {}) replaces the one loaded from {} (modified {})",
                    best.rank,
                    best.object.last_modified.as_deref().unwrap_or("?"),
                    l.source.key,
                    l.source.last_modified.as_deref().unwrap_or("?"),
                ),
            ),
            Some(l) => (
                Action::Skip,
                format!(
                    "superseded: the lake holds the newer {} ({})",
                    l.rank, l.source.key
                ),
            ),
        };
        let fallbacks: Vec<String> = if action == Action::Skip {
            Vec::new()
        } else {
            snapshots[1..]
                .iter()
                .map(|s| &s[0])
                .take_while(|b| match loaded {
                    None => true,
                    Some(l) if l.reset || options.force => true,
                    Some(l) => !unchanged(l, b) && Delivery::of(b) > Delivery::loaded(l),
                })
                .map(|b| b.object.key.clone())
                .collect()
        };
        for (n, snapshot) in snapshots.iter().enumerate() {
            let lead = &snapshot[0];
            for (i, bill) in snapshot.iter().enumerate() {
                let (action, reason, fallbacks) = match (n, i) {
                    (0, 0) => (action, reason.clone(), fallbacks.clone()),
                    (0, _) => (
                        Action::Skip,
                        format!(
                            "part {} of {} of the snapshot led by {} (loaded and replaced with it)",
                            i + 1,
                            snapshot.len(),
                            lead.object.key
                        ),
                        Vec::new(),
                    ),
                    _ => {
                        let reason = match loaded {
                            Some(l)
                                if l.source.key == bill.object.key && action != Action::Skip =>
                            {
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
                        (Action::Skip, reason, Vec::new())
                    }
                };
                out.push(PlannedObject {
                    object: bill.object.clone(),
                    bill: Some(bill.clone()),
                    action,
                    reason,
                    near_miss: false,
                    fallbacks,
                });
            }
        }
    }
    out.sort_by(|a, b| a.object.key.cmp(&b.object.key));
    out
}

/// Groups a unit's bill files into snapshots: files whose family declares a `part` and that
/// share rank, family and the rest of their key (folder included) are the parts of one
/// snapshot (sorted by part, numerically
/// where the parts are numbers); every other file is a snapshot on its own.
fn group_parts(bills: Vec<BillFile>) -> Vec<Vec<BillFile>> {
    let mut groups: BTreeMap<(String, String, String), Vec<BillFile>> = BTreeMap::new();
    let mut singles = Vec::new();
    for bill in bills {
        if bill.part.is_none() {
            singles.push(vec![bill]);
            continue;
        }
        let signature = bill.part_signature.clone().unwrap_or_default();
        let group = (format!("{:?}", bill.rank), bill.family.clone(), signature);
        groups.entry(group).or_default().push(bill);
    }
    for parts in groups.values_mut() {
        parts.sort_by(|a, b| {
            let key = |p: &Option<String>| {
                let p = p.clone().unwrap_or_default();
                (
                    p.trim_start_matches('0').len(),
                    p.trim_start_matches('0').to_string(),
                    p,
                )
            };
            key(&a.part)
                .cmp(&key(&b.part))
                .then_with(|| a.object.key.cmp(&b.object.key))
        });
    }
    for mut parts in groups.into_values() {
        let others: Vec<ObjectInfo> = parts[1..].iter().map(|b| b.object.clone()).collect();
        parts[0].other_parts = others;
        singles.push(parts);
    }
    singles
}

/// Which of two snapshots of one unit the lake should hold: the higher rank (final over
/// month-to-date, a later day over an earlier one); among equal ranks — two finals, such as a
/// detail monthly and a bill pack, or the same file under two prefixes — the newest delivery
/// (LastModified, compared as instants), then the smaller key, so that every run, incremental
/// or fresh, picks the same one.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery<'a> {
    rank: &'a crate::state::classify::SnapshotRank,
    modified: Option<i64>,
    key: std::cmp::Reverse<&'a str>,
}

impl<'a> Delivery<'a> {
    /// A snapshot by the file that leads it (its other parts included).
    fn of(bill: &'a BillFile) -> Delivery<'a> {
        Delivery::new(&bill.rank, &bill.object, bill.objects())
    }

    fn loaded(entry: &'a crate::state::ledger::LedgerEntry) -> Delivery<'a> {
        let all = std::iter::once(&entry.source).chain(entry.parts.iter());
        Delivery::new(&entry.rank, &entry.source, all)
    }

    /// A snapshot of several parts was delivered when its last part was.
    fn new(
        rank: &'a crate::state::classify::SnapshotRank,
        lead: &'a ObjectInfo,
        objects: impl Iterator<Item = &'a ObjectInfo>,
    ) -> Delivery<'a> {
        // RFC 3339 text does not sort as time ("…56.5Z" < "…56Z"): compare instants.
        let modified = objects
            .filter_map(|o| o.last_modified.as_deref())
            .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros())
            .max();
        Delivery {
            rank,
            modified,
            key: std::cmp::Reverse(lead.key.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::classify::SnapshotRank;
    use crate::state::ledger::LedgerEntry;

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
            parts: vec![],
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
        let late = vec![obj(D1, "a"), obj(M, "m")];
        let (a, why) = action_of(&plan(&p, &late, &ledger, &none), D1);
        assert_eq!(a, Action::Skip);
        assert!(why.contains("superseded"), "{why}");
        // ...but once the monthly is gone from the bucket, the lake follows the bucket (as a
        // fresh load would): the daily replaces it.
        let gone = vec![obj(D1, "a")];
        let (a, why) = action_of(&plan(&p, &gone, &ledger, &none), D1);
        assert_eq!(a, Action::Replace);
        assert!(why.contains("no longer in the bucket"), "{why}");
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

    #[test]
    fn among_finals_the_newest_delivery_wins() {
        let p = Pipeline::load(None).unwrap();
        let at = |key: &str, etag: &str, t: &str| ObjectInfo {
            last_modified: Some(t.into()),
            ..obj(key, etag)
        };
        let monthly = at(
            "1-202511-by_used_time-bill_details.zip",
            "m",
            "2025-12-02T01:00:00Z",
        );
        let pack = at(
            "1-202511-by_used_time-bill_pack.zip",
            "p",
            "2025-12-20T01:00:00.5Z",
        );
        let mut ledger = Ledger::default();
        loaded(&mut ledger, &p, &monthly);
        let none = PlanOptions::default();
        // The pack arrives later: it replaces the monthly.
        let listing = vec![monthly.clone(), pack.clone()];
        let (a, why) = action_of(&plan(&p, &listing, &ledger, &none), &pack.key);
        assert_eq!(a, Action::Replace, "{why}");
        loaded(&mut ledger, &p, &pack);
        assert_eq!(
            action_of(&plan(&p, &listing, &ledger, &none), &pack.key).0,
            Action::Skip
        );
        // Re-pushed under the same key with other rows: replaces its own load.
        let repushed = at(&pack.key, "p2", "2025-12-28T01:00:00Z");
        let listing = vec![monthly.clone(), repushed.clone()];
        assert_eq!(
            action_of(&plan(&p, &listing, &ledger, &none), &pack.key).0,
            Action::Replace
        );
        // An older final under another prefix is not a reason to roll back.
        let old = at(
            "old/1-202511-by_used_time-bill_details.zip",
            "o",
            "2025-12-20T01:00:00Z",
        );
        let listing = vec![monthly, pack.clone(), old.clone()];
        assert_eq!(
            action_of(&plan(&p, &listing, &ledger, &none), &old.key).0,
            Action::Skip
        );
        // Fractions of a second count: .5 s later is newer, whatever the text sorts as.
        let same_second = at(&old.key, "o", "2025-12-20T01:00:00.9Z");
        let listing = vec![pack, same_second.clone()];
        assert_eq!(
            action_of(&plan(&p, &listing, &ledger, &none), &same_second.key).0,
            Action::Replace
        );
    }
}
