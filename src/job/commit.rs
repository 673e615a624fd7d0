//! Publishing a staged snapshot and recording it in the ledger (the commit protocol in
//! `job::run`'s docs; the ledger entry is one new journal object, see `state::ledger`), and undoing a publish that failed half-way so no partition file is left
//! without a ledger entry.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use crate::fault;
use crate::ingest::decode::format_decimal;
use crate::job::context::{lock_ledger, Context};
use crate::job::load::Staged;
use crate::job::report::{ObjectReport, Reconciliation};
use crate::state::classify::BillFile;
use crate::state::ledger::{LedgerEntry, OutputFile};
use crate::{Error, Result};

/// Where each unit's quarantine file goes (`_quarantine/<unit>.csv`).
pub const QUARANTINE_DIR: &str = "_quarantine";

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
fn no_other_unit_there(ctx: &Context, staged: &Staged, stem: &str) -> Result<()> {
    const LIST_MONTH_FROM: usize = 16;
    let own = format!("{stem}.parquet");
    let mut months: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for part in &staged.parts {
        let dir = part.partition.dir();
        let month = dir.split_once('/').map_or(dir.as_str(), |(m, _)| m);
        months
            .entry(month.to_string())
            .or_default()
            .push(dir.clone());
    }
    for (month, dirs) in months {
        let prefixes = if dirs.len() >= LIST_MONTH_FROM {
            vec![format!("{month}/")]
        } else {
            dirs.iter().map(|d| format!("{d}/")).collect()
        };
        let dirs: HashSet<String> = dirs.into_iter().collect();
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
    if let Err(e) = no_other_unit_there(ctx, &staged, &stem) {
        return Err(unpublish(ctx, previous.as_ref(), &[], &staged, e));
    }
    let checked = started.elapsed();
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
    let (quarantine, rows_quarantined) = match &staged.quarantine {
        Some((path, n)) => {
            if let Err(e) = ctx.lake.publish(path, &quarantine_rel) {
                return Err(unpublish(ctx, previous.as_ref(), &outputs, &staged, e));
            }
            (Some(quarantine_rel.clone()), *n)
        }
        None => {
            if previous.as_ref().is_some_and(|p| p.quarantine.is_some()) {
                ctx.lake.delete(&quarantine_rel)?;
            }
            (None, 0)
        }
    };
    let publish_done = started.elapsed();
    fault::point("cleanup");
    if let Some(prev) = &previous {
        // A set, not a scan of `outputs` per old file: a reseller's re-delivery replaces
        // 20,000 files, and the scan (20,000 x 20,000 path comparisons) was 1.5 s of its commit.
        let now: HashSet<&str> = outputs.iter().map(|o| o.path.as_str()).collect();
        for old in &prev.outputs {
            if !now.contains(old.path.as_str()) {
                ctx.lake.delete(&old.path)?;
            }
        }
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
