//! Publishing a staged snapshot and recording it in the ledger (the commit protocol in
//! `job::run`'s docs; the ledger entry is one new journal object, see `state::ledger`), and undoing a publish that failed half-way so no partition file is left
//! without a ledger entry.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;

use crate::fault;
use crate::ingest::decode::format_decimal;
use crate::job::context::{lock_ledger, Context};
use crate::job::load::Staged;
use crate::job::report::{ObjectReport, Reconciliation};
use crate::state::classify::{BillFile, SnapshotUnit};
use crate::state::ledger::{LedgerEntry, OutputFile};
use crate::{Error, Result};

/// Where each unit's quarantine file goes (`_quarantine/<unit>.csv`).
pub const QUARANTINE_DIR: &str = "_quarantine";

/// Where a commit writes, before publishing, the paths it is about to publish
/// (`<unit>.json`, a JSON list), and removes it once the ledger has the snapshot. A run killed
/// in between leaves files no ledger entry names; if the bucket then holds another snapshot
/// of the unit (a reseller's re-delivery without a customer), that snapshot's commit finds
/// them here and removes those it does not replace, so the lake equals a fresh load.
pub(crate) const PUBLISHING_DIR: &str = "_billpipe/publishing";

/// The intent object of the unit whose files are named `stem`.
pub(crate) fn intent_path(stem: &str) -> String {
    format!("{PUBLISHING_DIR}/{stem}.json")
}

/// An intent object: the unit and the paths its commit was about to publish. Intents of
/// billpipe before session 13 are the list of paths alone (`unit` is then unknown, and only a
/// whole-lake run clears such an interrupted first load, see `job::run`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Intent {
    pub unit: Option<SnapshotUnit>,
    pub paths: Vec<String>,
}

/// The intent a killed commit of the unit named `stem` left (see [`PUBLISHING_DIR`]): the
/// paths it may have published, empty if there is none. Only the unit's own paths are
/// accepted — a partition file named after it, or its quarantine file —, so a damaged or
/// hand-edited intent cannot make a commit delete another unit's files, or anything outside
/// the lake.
pub(crate) fn read_intent(ctx: &Context, stem: &str) -> Result<Intent> {
    let intent = intent_path(stem);
    let Some(bytes) = ctx.lake.get(&intent)? else {
        return Ok(Intent::default());
    };
    let not_ours = |why: String| {
        Error::rejected(format!(
            "{intent}: {why}; it should list the paths a commit of this unit was about to publish — remove it if nothing was published by hand"
        ))
    };
    let read: Intent = serde_json::from_slice(&bytes)
        .or_else(|_| serde_json::from_slice(&bytes).map(|paths| Intent { unit: None, paths }))
        .map_err(|e| not_ours(format!("not a list of paths ({e})")))?;
    // The unit decides which shard may clear the intent, so it must be the unit itself: its
    // file stem, and a month as billpipe writes it (`202512` or `2025--12` give the same stem
    // as `2025-12`, and another shard).
    if let Some(unit) = read.unit.as_ref().filter(|u| {
        u.file_stem() != stem
            || u.month
                .parse::<crate::values::Month>()
                .map(|m| m.to_string())
                != Ok(u.month.clone())
    }) {
        return Err(not_ours(format!("it names unit {unit}, not {stem}")));
    }
    let paths = &read.paths;
    let file = format!("{stem}.parquet");
    let quarantine = format!("{QUARANTINE_DIR}/{stem}.csv");
    for path in paths {
        let partition_file = path
            .rsplit_once('/')
            .is_some_and(|(dir, name)| name == file && dir.starts_with("billing_period="));
        if !(partition_file || *path == quarantine) || ctx.lake.check_path(path).is_err() {
            return Err(not_ours(format!(
                "{path:?} is not one of this unit's files"
            )));
        }
    }
    Ok(read)
}

/// Reading an object into staging concerns that object alone: whatever fails there (a staged
/// file that cannot be written, a Parquet or Arrow error, a mapping that does not fit) rejects
/// it, and the run goes on. A broken-off download stays retryable. A run that lost the lake's
/// lock stops: its staging folder may be gone because the new owner cleared it.
pub(crate) fn object_failure(ctx: &Context, e: Error) -> Error {
    if let Err(lost) = ctx.lake.fence().check("the lake") {
        return lost;
    }
    match e {
        Error::Rejected(_) | Error::Fetch { .. } | Error::Locked(_) => e,
        other => Error::rejected(other.to_string()),
    }
}

/// Publishing failed with `e` after the files `done` were published. Staged files are removed,
/// and so are published files at paths the unit's previous snapshot did not have. If that
/// leaves the lake as it was, the object is rejected and the run goes on; if a file of the
/// previous snapshot was already replaced (or the lock is lost), the lake is where a crash at
/// this point would leave it — the old ledger entry, so the next run reloads the object — and
/// the run stops.
fn unpublish(
    ctx: &Context,
    previous: Option<&LedgerEntry>,
    done: &[OutputFile],
    staged: &Staged,
    e: Error,
) -> Error {
    for p in &staged.parts {
        let _ = std::fs::remove_file(&p.staged);
    }
    if let Some((path, _)) = &staged.quarantine {
        let _ = std::fs::remove_file(path);
    }
    if matches!(e, Error::Locked(_)) {
        return e;
    }
    let before: HashSet<&str> = previous
        .iter()
        .flat_map(|p| p.outputs.iter().map(|o| o.path.as_str()))
        .collect();
    let was_there = |path: &str| before.contains(path);
    let mut restored = true;
    for o in done.iter().filter(|o| !was_there(&o.path)) {
        restored &= ctx.lake.delete(&o.path).is_ok();
    }
    if restored && !done.iter().any(|o| was_there(&o.path)) {
        Error::rejected(format!("publishing it failed, the lake is unchanged: {e}"))
    } else {
        e
    }
}

/// A partition holds the snapshot of one unit. Another unit's file there is the same account
/// and month delivered twice — a reseller's consolidated bill and the customer's own bill in
/// one lake — and publishing beside it would count that money twice: the object is rejected,
/// naming both, and the lake keeps what it had.
///
/// A month with many of the snapshot's partitions (a reseller's bill) is listed once, whole —
/// a few pages on S3 — instead of once per customer folder.
///
/// Checked before publishing, in every partition (`dirs`), and again after, in the partitions
/// the unit's previous snapshot did not have: two commits running at once (`--jobs`, or two
/// shards, a reseller's bill and a customer's own in different shards) could both pass the
/// first check and publish side by side. After publishing, the later of two always sees the
/// other's file, and takes its own back.
fn no_other_unit_there<'a>(
    ctx: &Context,
    dirs: impl Iterator<Item = &'a str>,
    stem: &str,
) -> Result<()> {
    const LIST_MONTH_FROM: usize = 16;
    let own = format!("{stem}.parquet");
    let mut months: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for dir in dirs {
        let month = dir.split_once('/').map_or(dir, |(m, _)| m);
        months.entry(month).or_default().push(dir);
    }
    for (month, dirs) in months {
        let prefixes = if dirs.len() >= LIST_MONTH_FROM {
            vec![format!("{month}/")]
        } else {
            dirs.iter().map(|d| format!("{d}/")).collect()
        };
        let dirs: HashSet<&str> = dirs.into_iter().collect();
        for prefix in prefixes {
            for (path, _) in ctx.lake.list(&prefix)? {
                let Some((dir, name)) = path.rsplit_once('/') else {
                    continue;
                };
                if name.ends_with(".parquet") && name != own && dirs.contains(dir) {
                    return Err(Error::rejected(format!(
                        "partition {dir}/ already holds {path}, a snapshot of another unit for the same account and month (a reseller's consolidated bill and the customer's own bill in one lake?); publishing {own} beside it would count that money twice — load such bills into separate lakes"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Publishes a staged snapshot and records it in the ledger (see the module docs).
pub(crate) fn commit(
    ctx: &Context,
    bill: &BillFile,
    staged: Staged,
    entry: &mut ObjectReport,
) -> Result<()> {
    let stem = bill.unit.file_stem();
    let started = std::time::Instant::now();
    let scale = ctx.pipeline.schema.decimal_scale;
    let previous = lock_ledger(&ctx.ledger)?.get(&bill.unit).cloned();
    let quarantine_rel = format!("{QUARANTINE_DIR}/{stem}.csv");
    // Every path is checked before anything is published: one the lake cannot hold (a name
    // too long) rejects the object, with the lake untouched.
    let mut paths = staged
        .parts
        .iter()
        .map(|p| format!("{}/{stem}.parquet", p.partition.dir()))
        .chain(std::iter::once(quarantine_rel.clone()));
    if let Err(e) = paths.try_for_each(|rel| ctx.lake.check_path(&rel)) {
        return Err(unpublish(ctx, previous.as_ref(), &[], &staged, e));
    }
    let dirs: Vec<String> = staged.parts.iter().map(|p| p.partition.dir()).collect();
    if let Err(e) = no_other_unit_there(ctx, dirs.iter().map(String::as_str), &stem) {
        return Err(unpublish(ctx, previous.as_ref(), &[], &staged, e));
    }
    let checked = started.elapsed();
    fault::point("checked");
    for part in &staged.parts {
        if part.partition.period != bill.unit.month {
            entry.notes.push(format!(
                "{} rows have billing period {}, not the {} the file name says",
                part.rows, part.partition.period, bill.unit.month
            ));
        }
    }
    let files: Vec<(PathBuf, String)> = staged
        .parts
        .iter()
        .map(|p| {
            let rel = format!("{}/{stem}.parquet", p.partition.dir());
            (p.staged.clone(), rel)
        })
        .collect();
    // The paths about to be published, and those an earlier, killed commit of this unit may
    // have left: all of them are this unit's, and the clean-up below removes those it does
    // not replace. Written first, so no kill can leave a file it does not name, and a run that
    // finds it knows the lake may not hold what the ledger says (`job::run` reloads the unit).
    // Costs ~1.5 ms a unit on disk (300 one-account units: 2.3 → 2.7 s).
    let intent_rel = intent_path(&stem);
    let left = match read_intent(ctx, &stem) {
        Ok(left) => left.paths,
        Err(e) => return Err(unpublish(ctx, previous.as_ref(), &[], &staged, e)),
    };
    {
        let paths: BTreeSet<&str> = files
            .iter()
            .map(|(_, rel)| rel.as_str())
            .chain([quarantine_rel.as_str()])
            .chain(left.iter().map(String::as_str))
            .collect();
        let intent = Intent {
            unit: Some(bill.unit.clone()),
            paths: paths.into_iter().map(String::from).collect(),
        };
        let written = serde_json::to_vec(&intent)
            .map_err(|e| Error::rejected(format!("{intent_rel}: {e}")))
            .and_then(|bytes| ctx.lake.put(&intent_rel, &bytes));
        if let Err(e) = written {
            return Err(unpublish(ctx, previous.as_ref(), &[], &staged, e));
        }
    }
    // The files this snapshot replaces: set aside, not freed by the renames (`store::set_aside`).
    let had: HashSet<&str> = previous
        .iter()
        .flat_map(|p| p.outputs.iter().map(|o| o.path.as_str()))
        .collect();
    let left_here: HashSet<&str> = left.iter().map(String::as_str).collect();
    ctx.lake.set_aside(
        files
            .iter()
            .map(|(_, rel)| rel.as_str())
            .filter(|rel| had.contains(rel) || left_here.contains(rel)),
    );
    let mut outputs = Vec::new();
    let mut total_cost: i128 = 0;
    let mut rows = 0;
    let published = ctx.lake.publish_all(&files, &mut |i| {
        fault::point("publish");
        let part = &staged.parts[i];
        total_cost += part.billed_cost;
        rows += part.rows;
        outputs.push(OutputFile {
            path: files[i].1.clone(),
            rows: part.rows,
            billed_cost: format_decimal(part.billed_cost, scale),
            bytes: part.bytes,
        });
        Ok(())
    });
    if let Err(e) = published {
        return Err(unpublish(ctx, previous.as_ref(), &outputs, &staged, e));
    }
    // Stores may publish in any order; the ledger lists a snapshot's files by path.
    outputs.sort_by(|a, b| a.path.cmp(&b.path));
    let new_dirs = outputs
        .iter()
        .filter(|o| !had.contains(o.path.as_str()))
        .filter_map(|o| o.path.rsplit_once('/').map(|(dir, _)| dir));
    if let Err(e) = no_other_unit_there(ctx, new_dirs, &stem) {
        return Err(unpublish(ctx, previous.as_ref(), &outputs, &staged, e));
    }
    let (quarantine, rows_quarantined) = match &staged.quarantine {
        Some((path, n)) => {
            if let Err(e) = ctx.lake.publish(path, &quarantine_rel) {
                return Err(unpublish(ctx, previous.as_ref(), &outputs, &staged, e));
            }
            (Some(quarantine_rel.clone()), *n)
        }
        None => {
            // Also when the ledger says there was none: a killed commit may have left one.
            ctx.lake.delete(&quarantine_rel)?;
            (None, 0)
        }
    };
    let publish_done = started.elapsed();
    fault::point("cleanup");
    // The previous snapshot's files and a killed commit's that this one did not replace. A
    // set, not a scan of `outputs` per old file: a reseller's re-delivery replaces 20,000
    // files, and the scan (20,000 x 20,000 path comparisons) was 1.5 s of its commit.
    let now: HashSet<&str> = outputs
        .iter()
        .map(|o| o.path.as_str())
        .chain(quarantine.as_deref())
        .collect();
    let old = previous
        .iter()
        .flat_map(|p| p.outputs.iter().map(|o| o.path.as_str()))
        .chain(left.iter().map(String::as_str));
    for path in old.filter(|p| !now.contains(p)).collect::<BTreeSet<_>>() {
        ctx.lake.delete(path)?;
    }
    let billed_cost = format_decimal(total_cost, scale);
    let cleaned = started.elapsed();
    fault::point("ledger");
    let mut ledger = lock_ledger(&ctx.ledger)?;
    ledger.append(
        ctx.lake.as_ref(),
        LedgerEntry {
            unit: bill.unit.clone(),
            source: bill.object.clone(),
            parts: bill.other_parts.clone(),
            family: bill.family.clone(),
            rank: bill.rank.clone(),
            outputs: outputs.clone(),
            quarantine: quarantine.clone(),
            rows_loaded: rows,
            rows_quarantined,
            billed_cost: billed_cost.clone(),
            billed_cost_held_out: Some(format_decimal(staged.tally.cost_held_out, scale)),
            rows_cost_unreadable: staged.tally.cost_unreadable_rows,
            loaded_at: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            reset: false,
        },
    )?;
    drop(ledger);
    // The ledger names every file now; an intent left behind only costs the next commit a
    // read, and deletes nothing it should not (this snapshot's paths are then its previous).
    if let Err(e) = ctx.lake.delete(&intent_rel) {
        tracing::warn!("{intent_rel}: not removed ({e}); the next run reloads the unit");
    }
    tracing::debug!(
        "commit of {} files: checked {:.3} s, published {:.3} s, old files removed {:.3} s, ledger {:.3} s",
        outputs.len(),
        checked.as_secs_f64(),
        (publish_done - checked).as_secs_f64(),
        (cleaned - publish_done).as_secs_f64(),
        (started.elapsed() - cleaned).as_secs_f64()
    );
    entry.rows_loaded = rows;
    entry.rows_quarantined = rows_quarantined;
    entry.reconciliation = Some(Reconciliation::new(&staged.tally, total_cost, scale));
    entry.billed_cost = Some(billed_cost);
    entry.bytes_written = outputs.iter().map(|o| o.bytes).sum();
    entry.outputs = outputs.into_iter().map(|o| o.path).collect();
    entry.quarantine = quarantine;
    Ok(())
}
