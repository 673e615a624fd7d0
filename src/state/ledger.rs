//! The ledger: what the lake holds, kept in the lake itself so a scheduled job in a fresh
//! container knows what is loaded without any local state.
//!
//! One entry per snapshot unit (unit, account, month): the source object whose snapshot the
//! lake shows, and the files that snapshot produced.
//!
//! ## Layout: a base plus a journal
//!
//! ```text
//! _billpipe/ledger.json                  the manifest: {"format": 2, ...}, says where entries are
//! _billpipe/ledger/base.jsonl            one entry per line (compact JSON), sorted by unit
//! _billpipe/ledger/journal/<name>.json   one entry per commit (pretty JSON)
//!     <name> = <UTC time YYYYMMDDTHHMMSS.ffffffZ>-<run id>-<seq, 10 digits>
//! ```
//!
//! Committing a snapshot PUTs one journal object holding its entry ([`Ledger::append`]): O(1)
//! in the number of units, and no object is read, modified and written back, so several
//! processes (shards committing disjoint units, each under its own lock) never overwrite each
//! other's commits. Run ids differ per process and the sequence per commit, so names never
//! collide. A `state reset` mark is a journal entry too (the unit's entry with `reset: true`).
//!
//! Loading ([`Ledger::load`]) reads the base, then lists the journal and applies its entries in
//! name order over it: the newest entry of a unit wins. Name order is time order for the
//! commits that matter: within a run, names increase strictly (the time never goes back, the
//! sequence grows); across runs, a run writes names after the newest journal name it loaded
//! (its clock is raised to that time, plus 1 µs), so a run that follows another one on the lake
//! (it took the lock after the other released it) wins for any unit both committed, even with a
//! clock that runs behind. The only clock assumption left is for runs committing the *same*
//! unit concurrently, which the lock (and, for shards, disjoint units) rules out. Entries in the
//! journal always win over the base: whatever compaction did not fold was written after it read
//! the journal.
//!
//! ## Compaction
//!
//! [`Ledger::compact`] folds the journal into a new base: it writes the base from the entries
//! loaded and appended by this handle (one atomic PUT), then deletes the journal objects it
//! read or wrote, oldest first, and nothing else: what other processes appended meanwhile stays
//! and still wins over the base. A kill between the base and the deletes leaves folded entries
//! in the journal: applying them again over a base that already holds them changes nothing, and
//! since deletes go oldest first, what is left of a unit's entries always ends with its newest.
//! It is O(units), so it is never part of a commit: a run (unsharded, holding the lake's lock)
//! compacts at its end when [`Ledger::wants_compaction`] (more journal objects than
//! max(1,000, base entries / 64)): each compaction follows at least that many commits, so its
//! cost is at most 64 entries rewritten per commit, and a load never reads more than a few
//! thousand journal objects (one GET each on S3) beside the base. `billpipe state compact`
//! compacts on demand.
//!
//! ## Crash safety
//!
//! The journal entry is written after the snapshot's files are published, so the ledger is
//! never ahead of the lake. If a run dies between publishing and the journal write, the lake
//! shows the new snapshot and the ledger the old one; the next run loads the same object again
//! and rewrites the same files: idempotent. A PUT is atomic (the store's promise), so a journal
//! object is whole or absent.
//!
//! ## Migration from the single-file ledger (format 1)
//!
//! Before the journal, `_billpipe/ledger.json` held every entry and was rewritten after each
//! commit. A load by the lock's holder migrates such a lake: it writes the base from those
//! entries first, then replaces `ledger.json` with the format-2 manifest. Killed in between, the
//! old file is still there and is migrated again (the base is rewritten from it). Loads without
//! the lock (`plan`, `state`, `totals`) read the old file as it is. The manifest keeps the old
//! file's name so that an older billpipe refuses the lake ("format 2 is not supported") instead
//! of taking it for empty and loading everything again, and so that `state` and `totals` still
//! recognise a lake by it. A new lake gets the manifest before its first journal entry.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::classify::{SnapshotRank, SnapshotUnit};
use crate::store::lake::Lake;
use crate::store::source::ObjectInfo;
use crate::{Error, Result};

/// The manifest (format 2) or, in lakes not yet migrated, the whole ledger (format 1).
pub const LEDGER_PATH: &str = "_billpipe/ledger.json";
/// Compacted entries, one JSON object per line, sorted by unit.
pub const BASE_PATH: &str = "_billpipe/ledger/base.jsonl";
/// One object per committed entry.
pub const JOURNAL_DIR: &str = "_billpipe/ledger/journal/";
const FORMAT_VERSION: u32 = 2;
const LEGACY_FORMAT: u32 = 1;
/// Journal objects below which a run never compacts.
pub const COMPACT_MIN_JOURNAL: usize = 1000;
/// A run compacts once the journal has more than this fraction of the base's entries.
pub const COMPACT_BASE_DIVISOR: usize = 64;
/// Journal objects read at once (S3 answers each GET in milliseconds, not microseconds).
const READ_THREADS: usize = 16;
/// `YYYYMMDDTHHMMSS.ffffffZ`: fixed width, so names sort by time.
const NAME_TIME: &str = "%Y%m%dT%H%M%S%.6fZ";
const NAME_TIME_LEN: usize = 23;

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

/// The ledger as loaded: every unit's newest entry, and what this handle knows of the journal.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Keyed by the unit's display form `unit/account/month`.
    pub units: BTreeMap<String, LedgerEntry>,
    /// Journal objects loaded or written by this handle, in name order: what compaction folds.
    journal: Vec<String>,
    /// Entries in the base when it was loaded or last written.
    base_entries: usize,
    /// The lake has the format-2 manifest.
    manifest: bool,
    /// The lake still has a format-1 `ledger.json` (read without the lock, not migrated).
    legacy: bool,
    /// Names this handle writes sort after this time (the newest loaded, then the last written).
    clock: Option<DateTime<Utc>>,
    seq: u64,
}

/// The old single-file ledger, and (with `units` empty) the manifest that replaced it.
#[derive(Serialize, Deserialize)]
struct LedgerFile {
    format: u32,
    #[serde(default)]
    units: BTreeMap<String, LedgerEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layout: Option<String>,
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Compaction {
    /// Entries in the new base.
    pub base_entries: usize,
    /// Journal objects folded into it and deleted.
    pub folded: usize,
}

fn ledger_error(lake: &Lake, rel: &str, message: impl ToString) -> Error {
    Error::Ledger {
        path: format!("{}/{rel}", lake.uri().trim_end_matches('/')),
        message: message.to_string(),
    }
}

/// The journal's object names, in name order (leftover temporary files and foreign names
/// skipped).
fn list_journal(lake: &Lake) -> Result<Vec<String>> {
    let mut names: Vec<String> = lake
        .list(JOURNAL_DIR)?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name_time(name).is_some())
        .collect();
    names.sort();
    Ok(names)
}

/// The time a journal object's name starts with, if it is a journal name.
fn name_time(name: &str) -> Option<DateTime<Utc>> {
    let file = name.strip_prefix(JOURNAL_DIR)?;
    if !file.ends_with(".json") {
        return None;
    }
    let stamp = file.get(..NAME_TIME_LEN)?;
    NaiveDateTime::parse_from_str(stamp, NAME_TIME)
        .ok()
        .map(|t| t.and_utc())
}

impl Ledger {
    /// Reads the lake's ledger: the base (or a format-1 `ledger.json`), then the journal over
    /// it. A load by the holder of the lake's lock migrates a format-1 lake (module docs).
    ///
    /// The journal is listed before the base is read: a compaction running meanwhile (by the
    /// holder of the main lock, while this load holds none) has then folded whatever it deleted
    /// into a base this load reads, unless it wrote that base after this load read it; then a
    /// listed journal object is gone when it is read, and the load starts over.
    pub fn load(lake: &Lake) -> Result<Ledger> {
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        loop {
            let names = list_journal(lake)?;
            let mut ledger = Ledger::read_base(lake)?;
            if ledger.read_journal(lake, &names)? {
                if ledger.legacy && lake.fence().check("the ledger").is_ok() {
                    ledger.migrate(lake)?;
                }
                return Ok(ledger);
            }
            if attempt == ATTEMPTS {
                return Err(ledger_error(
                    lake,
                    JOURNAL_DIR,
                    format!("journal objects vanished while read, {ATTEMPTS} times (a compaction running?); try again"),
                ));
            }
            attempt += 1;
        }
    }

    /// The manifest and base, or a format-1 ledger.
    fn read_base(lake: &Lake) -> Result<Ledger> {
        let mut ledger = Ledger::default();
        if let Some(bytes) = lake.get(LEDGER_PATH)? {
            let file: LedgerFile =
                serde_json::from_slice(&bytes).map_err(|e| ledger_error(lake, LEDGER_PATH, e))?;
            match file.format {
                FORMAT_VERSION => ledger.manifest = true,
                LEGACY_FORMAT => {
                    ledger.legacy = true;
                    ledger.base_entries = file.units.len();
                    ledger.units = file.units;
                    return Ok(ledger);
                }
                other => {
                    return Err(ledger_error(
                        lake,
                        LEDGER_PATH,
                        format!("format {other} is not supported"),
                    ))
                }
            }
        }
        let Some(bytes) = lake.get(BASE_PATH)? else {
            return Ok(ledger);
        };
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let entry: LedgerEntry = serde_json::from_slice(line)
                .map_err(|e| ledger_error(lake, BASE_PATH, format!("line {}: {e}", i + 1)))?;
            ledger.units.insert(entry.unit.to_string(), entry);
        }
        ledger.base_entries = ledger.units.len();
        Ok(ledger)
    }

    /// Reads the journal objects `names` (several at once) and applies them in name order.
    /// `false` if one of them is gone (see [`Ledger::load`]).
    fn read_journal(&mut self, lake: &Lake, names: &[String]) -> Result<bool> {
        type Read = Result<Option<Vec<(String, LedgerEntry)>>>;
        let chunk = names.len().div_ceil(READ_THREADS).max(1);
        let read: Vec<Read> = std::thread::scope(|scope| {
            let handles: Vec<_> = names
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || -> Read {
                        let mut out = Vec::with_capacity(part.len());
                        for name in part {
                            let Some(bytes) = lake.get(name)? else {
                                return Ok(None);
                            };
                            let entry: LedgerEntry = serde_json::from_slice(&bytes)
                                .map_err(|e| ledger_error(lake, name, e))?;
                            out.push((name.clone(), entry));
                        }
                        Ok(Some(out))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(ledger_error(lake, JOURNAL_DIR, "reader panicked")))
                })
                .collect()
        });
        for part in read {
            let Some(part) = part? else {
                return Ok(false);
            };
            for (name, entry) in part {
                self.units.insert(entry.unit.to_string(), entry);
                self.journal.push(name);
            }
        }
        self.clock = self.journal.last().and_then(|n| name_time(n));
        Ok(true)
    }

    /// Writes the base from a format-1 ledger's entries, then the manifest over the old file.
    fn migrate(&mut self, lake: &Lake) -> Result<()> {
        self.write_base(lake)?;
        self.write_manifest(lake)?;
        self.legacy = false;
        tracing::info!(
            "migrated {LEDGER_PATH} ({} entries) to {BASE_PATH} and {JOURNAL_DIR}",
            self.units.len()
        );
        Ok(())
    }

    fn write_base(&mut self, lake: &Lake) -> Result<()> {
        let mut bytes = Vec::with_capacity(self.units.len() * 512);
        for entry in self.units.values() {
            serde_json::to_writer(&mut bytes, entry)
                .map_err(|e| ledger_error(lake, BASE_PATH, e))?;
            bytes.push(b'\n');
        }
        lake.put(BASE_PATH, &bytes)?;
        self.base_entries = self.units.len();
        Ok(())
    }

    fn write_manifest(&mut self, lake: &Lake) -> Result<()> {
        let manifest = LedgerFile {
            format: FORMAT_VERSION,
            units: BTreeMap::new(),
            layout: Some(format!(
                "entries are in {BASE_PATH} (one per line, sorted by unit) and {JOURNAL_DIR}*.json \
                 (one per commit, applied over the base in name order: the newest entry of a unit wins)"
            )),
        };
        let bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|e| ledger_error(lake, LEDGER_PATH, e))?;
        lake.put(LEDGER_PATH, &bytes)?;
        self.manifest = true;
        Ok(())
    }

    pub fn get(&self, unit: &SnapshotUnit) -> Option<&LedgerEntry> {
        self.units.get(&unit.to_string())
    }

    /// Marks, in memory only, the units whose files are named by one of `stems` for reloading,
    /// as `state reset` would (their last commit was interrupted after publishing, so the lake
    /// may not hold what their entry says); returns the stems of the units marked.
    pub fn mark_for_reload(
        &mut self,
        stems: &std::collections::HashSet<String>,
    ) -> std::collections::HashSet<String> {
        let mut marked = std::collections::HashSet::new();
        for entry in self.units.values_mut() {
            let stem = entry.unit.file_stem();
            if stems.contains(&stem) {
                entry.reset = true;
                marked.insert(stem);
            }
        }
        marked
    }

    /// Records `entry` in memory only (the lake learns of it through [`Ledger::append`]).
    pub fn record(&mut self, entry: LedgerEntry) {
        self.units.insert(entry.unit.to_string(), entry);
    }

    /// Commits `entry` to the lake (one new journal object), then records it. O(1) in the number
    /// of units; needs the lake's lock, as every write does.
    pub fn append(&mut self, lake: &Lake, entry: LedgerEntry) -> Result<()> {
        if self.legacy {
            self.migrate(lake)?;
        } else if !self.manifest {
            self.write_manifest(lake)?;
        }
        let name = self.next_name(lake.run_id());
        let bytes = serde_json::to_vec_pretty(&entry).map_err(|e| ledger_error(lake, &name, e))?;
        lake.put(&name, &bytes)?;
        self.journal.push(name);
        self.record(entry);
        Ok(())
    }

    /// A journal name after every name this handle loaded or wrote (module docs).
    fn next_name(&mut self, run_id: &str) -> String {
        let now = Utc::now();
        let t = match self.clock {
            Some(last) if now <= last => last + chrono::Duration::microseconds(1),
            _ => now,
        };
        self.clock = Some(t);
        self.seq += 1;
        format!(
            "{JOURNAL_DIR}{}-{run_id}-{:010}.json",
            t.format(NAME_TIME),
            self.seq
        )
    }

    /// Journal objects this handle loaded or wrote.
    pub fn journal_len(&self) -> usize {
        self.journal.len()
    }

    /// Whether the journal outgrew its bound: more than max(1,000, base entries / 64) objects.
    pub fn wants_compaction(&self) -> bool {
        self.journal.len() > COMPACT_MIN_JOURNAL.max(self.base_entries / COMPACT_BASE_DIVISOR)
    }

    /// Folds the journal into a new base, then deletes the journal objects folded (those this
    /// handle loaded or wrote, oldest first; see the module docs). O(units): only for the holder
    /// of the lake's main lock, never within a commit.
    pub fn compact(&mut self, lake: &Lake) -> Result<Compaction> {
        if self.legacy {
            self.migrate(lake)?;
        }
        if !self.manifest {
            self.write_manifest(lake)?;
        }
        self.write_base(lake)?;
        let folded = std::mem::take(&mut self.journal);
        for (i, name) in folded.iter().enumerate() {
            if let Err(e) = lake.delete(name) {
                // The rest stay in the journal and are folded again next time.
                self.journal = folded[i..].to_vec();
                return Err(e);
            }
        }
        Ok(Compaction {
            base_entries: self.base_entries,
            folded: folded.len(),
        })
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
