//! Wires the stages together for `billpipe run`, `plan` and `state`.
//!
//! A run lists the source first (so a missing bucket or bad credentials fail before the lake is
//! touched), takes the lake's lock, plans from the ledger, then loads the planned objects,
//! `--jobs` at a time. Per object, three threads form a bounded pipeline, so memory does not grow
//! with the file: fetch (source bytes → channel of 1 MiB chunks, decompressed by `unpack`),
//! decode + validate (the job's thread: CSV → typed batches, bad rows to the quarantine), write
//! (batches → Parquet in staging). A download that breaks off is started over (`Error::Fetch`).
//!
//! Commit protocol, per snapshot, after the whole file has been read without a file-level error:
//! 1. each partition file is published over the unit's previous file in that partition
//!    (atomic rename / PUT), so readers see the old snapshot or the new one, never both;
//! 2. the quarantine file of the unit is published (or the old one removed);
//! 3. files of the previous snapshot in partitions the new one no longer touches are removed;
//! 4. the unit's ledger entry is written (one new journal object, see `state::ledger`).
//!
//! A crash before 1 leaves the lake as it was (staging is cleared by the next run); a crash
//! after 1 leaves whole new files in place and the old ledger entry, so the next run reloads
//! the same object and rewrites the same paths.
//!
//! A failure while one object is read, staged or published is that object's rejection and the
//! run goes on: every output path is checked before the first publish, and files published at
//! paths the unit did not have before are removed again (`unpublish`), so no partition file is
//! left without a ledger entry. Only what concerns the whole lake stops the run: listing, the
//! ledger write, a lost lock (the lake refuses writes then), or a failure after a previous file
//! of the unit was already replaced — the crash case above.
//!
//! At its end, a run folds the ledger's journal into its base when the journal outgrew its
//! bound (`Ledger::wants_compaction`), still holding the lock; a failure there is logged, not
//! the run's: the ledger is whole either way.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::conformance::rules::RuleCounts;
use crate::job::commit::{self, commit, object_failure};
pub use crate::job::context::RunOptions;
use crate::job::context::{lock_ledger, open, Context};
use crate::job::load::{check_shrink, read_snapshot};
use crate::job::report::{
    JobCommand, LakeGap, ObjectReport, Outcome, RetainedUnits, RunReport, SkipSummary,
    StageSeconds, Totals,
};
use crate::state::classify::{BillFile, SnapshotUnit};
use crate::state::ledger::Ledger;
use crate::state::lock;
use crate::state::plan::{self, Action, PlannedObject};
use crate::state::shard::Shard;
use crate::{Error, Result};

pub use crate::job::commit::QUARANTINE_DIR;

/// The report of a run that failed before it started (configuration, listing, lock): no
/// objects, the error.
pub fn failed_report(command: JobCommand, opts: &RunOptions, error: &str) -> RunReport {
    RunReport {
        error: Some(error.to_string()),
        ..new_report(command, opts)
    }
}

fn new_report(command: JobCommand, opts: &RunOptions) -> RunReport {
    RunReport {
        command,
        billpipe_version: env!("CARGO_PKG_VERSION").into(),
        source: opts.source.clone(),
        dest: opts.dest.clone(),
        pipeline: String::new(),
        started_at: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        seconds: 0.0,
        objects: Vec::new(),
        totals: Totals::default(),
        skipped: SkipSummary::default(),
        report_skipped: opts.report_skipped,
        lake_gaps: Vec::new(),
        repairs: Vec::new(),
        retained: Default::default(),
        error: None,
        exit_code: None,
    }
}

fn object_report(p: &PlannedObject, outcome: Outcome) -> ObjectReport {
    ObjectReport {
        key: p.object.key.clone(),
        size: p.object.size,
        etag: p.object.etag.clone(),
        family: p.bill.as_ref().map(|b| b.family.clone()),
        snapshot_unit: p.bill.as_ref().map(|b| b.unit.to_string()),
        outcome,
        reason: p.reason.clone(),
        rejection: None,
        rows_loaded: 0,
        rows_quarantined: 0,
        billed_cost: None,
        bytes_read: 0,
        bytes_written: 0,
        outputs: Vec::new(),
        quarantine: None,
        problems: Vec::new(),
        notes: Vec::new(),
        seconds: 0.0,
        stages: StageSeconds::default(),
        rules: RuleCounts::new(),
        reconciliation: None,
        near_miss: p.near_miss,
    }
}

fn outcome_of(action: Action) -> Outcome {
    match action {
        Action::Ingest => Outcome::Ingest,
        Action::Replace => Outcome::Replace,
        Action::Skip => Outcome::Skip,
    }
}

/// `billpipe plan`: what `run` would do with every object, changing nothing.
pub fn plan_only(opts: &RunOptions) -> Result<RunReport> {
    let start = Instant::now();
    let mut report = new_report(JobCommand::Plan, opts);
    let ctx = open(opts, false)?;
    report.pipeline = ctx.pipeline.origin.clone();
    let ledger = lock_ledger(&ctx.ledger)?;
    for p in plan::plan(&ctx.pipeline, &ctx.listing, &ledger, &opts.plan) {
        report.objects.push(object_report(&p, outcome_of(p.action)));
    }
    report.lake_gaps = LakeGap::find(&ledger, |m| opts.plan.in_range(m));
    report.seconds = start.elapsed().as_secs_f64();
    report.compute_totals();
    Ok(report)
}

/// `billpipe run`. Errors that stop the run are returned in `report.error`, with the objects
/// handled so far, so a report is written even for a failed run. Configuration errors (before
/// anything was listed) and a lake locked by another run are returned as `Err`.
pub fn run(opts: &RunOptions) -> Result<RunReport> {
    run_with_progress(opts, &mut |_| {})
}

/// What a run tells a progress display as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The plan is made: this many objects and bytes will be loaded.
    Planned { objects: u64, bytes: u64 },
    /// One object is done (loaded, rejected or skipped after being planned).
    Done(Box<ObjectReport>),
}

/// [`run`] with a callback for progress bars or log lines.
pub fn run_with_progress(
    opts: &RunOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<RunReport> {
    let start = Instant::now();
    let mut report = new_report(JobCommand::Run, opts);
    let mut ctx = open(opts, true)?;
    report.pipeline = ctx.pipeline.origin.clone();
    let waited = Instant::now();
    let _lock = lock::acquire(ctx.lake.clone(), JobCommand::Run.name(), &opts.lock)?;
    // The ledger is read once the lock is held (another run may have committed until then),
    // and the source listed again if we waited for the lock.
    *lock_ledger(&ctx.ledger)? = Ledger::load(ctx.lake.as_ref())?;
    let unrecorded = interrupted_commits(&ctx, &mut report.repairs)?;
    if waited.elapsed() > std::time::Duration::from_secs(2) {
        ctx.listing = ctx.source.list()?;
    }
    let listing = std::mem::take(&mut ctx.listing);
    let planned = plan::plan(
        &ctx.pipeline,
        &listing,
        &*lock_ledger(&ctx.ledger)?,
        &opts.plan,
    );
    let (not_loading, loading) = split_unrecorded(&unrecorded, &planned);
    clear_unrecorded(
        &ctx,
        opts.plan.shard,
        not_loading,
        "this run loads no snapshot of the unit (its bill is no longer in the bucket, or outside --from/--to)",
        &mut report.repairs,
    );
    {
        let listed: HashSet<&SnapshotUnit> = planned
            .iter()
            .filter_map(|p| p.bill.as_ref().map(|b| &b.unit))
            .collect();
        report.retained = RetainedUnits::find(&*lock_ledger(&ctx.ledger)?, &listed, |u| {
            opts.plan.in_range(&u.month) && opts.plan.shard.is_none_or(|s| s.takes(u))
        });
    }
    let to_load: Vec<usize> = (0..planned.len())
        .filter(|i| planned[*i].action != Action::Skip)
        .collect();
    progress(Progress::Planned {
        objects: to_load.len() as u64,
        bytes: to_load.iter().map(|i| planned[*i].object.size).sum(),
    });
    // Until a job takes an object, it counts as not attempted (a run stopped by a failure
    // must not report loads it never made).
    let results: Mutex<Vec<ObjectReport>> = Mutex::new(
        planned
            .iter()
            .map(|p| match p.action {
                Action::Skip => object_report(p, Outcome::Skip),
                _ => ObjectReport {
                    reason: format!(
                        "not attempted: the run stopped first (planned: {})",
                        p.reason
                    ),
                    ..object_report(p, Outcome::Skip)
                },
            })
            .collect(),
    );
    let index_of: std::collections::HashMap<&str, usize> = planned
        .iter()
        .enumerate()
        .map(|(i, p)| (p.object.key.as_str(), i))
        .collect();
    let next = AtomicUsize::new(0);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let progress = Mutex::new(progress);
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs.max(1).min(to_load.len().max(1)) {
            scope.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = to_load.get(n) else { break };
                if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    break;
                }
                let p = &planned[i];
                if p.bill.is_none() {
                    continue;
                }
                // The planned object, then (if it is rejected) the unit's next-best objects in
                // turn, until one loads: what a fresh load of the bucket would end with.
                let mut candidate = Some((i, outcome_of(p.action), None));
                let mut fallbacks = p.fallbacks.iter().filter_map(|k| index_of.get(k.as_str()));
                while let Some((j, outcome, because)) = candidate.take() {
                    let q = &planned[j];
                    let Some(bill) = &q.bill else { break };
                    let mut entry = object_report(q, outcome);
                    if let Some(because) = because {
                        entry.reason = because;
                    }
                    let t0 = Instant::now();
                    match load_with_retries(&ctx, bill, opts, &mut entry) {
                        Ok(()) => {}
                        Err(Error::Rejected(why)) => {
                            entry.outcome = Outcome::Reject;
                            entry.reason = format!("rejected: {why}");
                            entry.rejection = Some(why.object(q.object.key.clone()));
                            candidate = fallbacks.next().map(|&k| {
                                let loaded = lock_ledger(&ctx.ledger)
                                    .map(|l| l.get(&bill.unit).is_some())
                                    .unwrap_or(false);
                                let outcome =
                                    if loaded { Outcome::Replace } else { Outcome::Ingest };
                                (
                                    k,
                                    outcome,
                                    Some(format!(
                                        "the next-best snapshot of {}: {} was rejected",
                                        bill.unit, q.object.key
                                    )),
                                )
                            });
                        }
                        Err(e) => {
                            entry.outcome = Outcome::Reject;
                            entry.reason = format!("failed: {e}");
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert_with(|| format!("{}: {e}", q.object.key));
                            }
                        }
                    }
                    entry.seconds = t0.elapsed().as_secs_f64();
                    if entry.outcome == Outcome::Reject {
                        tracing::warn!(key = %q.object.key, "{}", entry.reason);
                    } else {
                        tracing::info!(key = %q.object.key, rows = entry.rows_loaded, "{}", entry.reason);
                    }
                    if let Ok(mut cb) = progress.lock() {
                        (*cb)(Progress::Done(Box::new(entry.clone())));
                    }
                    if let Ok(mut r) = results.lock() {
                        // The other parts of a snapshot share its fate.
                        for other in &bill.other_parts {
                            let Some(&k) = index_of.get(other.key.as_str()) else {
                                continue;
                            };
                            r[k].outcome = entry.outcome;
                            r[k].reason = match entry.outcome {
                                Outcome::Reject => format!(
                                    "rejected with its snapshot, led by {}",
                                    q.object.key
                                ),
                                _ => format!(
                                    "loaded as a part of the snapshot led by {}",
                                    q.object.key
                                ),
                            };
                        }
                        r[j] = entry;
                    }
                }
            });
        }
    });
    report.objects = results
        .into_inner()
        .map_err(|_| Error::Internal("a job panicked".into()))?;
    report.error = failure.into_inner().ok().flatten();
    if report.error.is_none() && !loading.is_empty() {
        clear_unrecorded(
            &ctx,
            opts.plan.shard,
            still_unrecorded(&ctx, loading)?,
            "every snapshot of the unit this run tried was rejected",
            &mut report.repairs,
        );
    }
    {
        let mut ledger = lock_ledger(&ctx.ledger)?;
        // Only a whole-lake run compacts: a shard holds its own lock only, and compaction
        // rewrites what every shard reads.
        if ctx.lake.scope().is_none() && ledger.wants_compaction() {
            match ledger.compact(ctx.lake.as_ref()) {
                Ok(c) => tracing::info!(
                    "ledger compacted: {} journal entries folded into a base of {}",
                    c.folded,
                    c.base_entries
                ),
                Err(e) => tracing::warn!("compacting the ledger failed (it stays whole): {e}"),
            }
        }
        report.lake_gaps = LakeGap::find(&ledger, |m| opts.plan.in_range(m));
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.compute_totals();
    Ok(report)
}

/// Loads one object, starting over when its download breaks off mid-way.
/// A commit's intent object still there means that commit was interrupted after it may have
/// published (see `commit`): the lake may hold files of a snapshot its ledger entry does not
/// describe. Such units are reloaded as `state reset` would have them (whatever the plan would
/// otherwise say: the object unchanged, or a sharp drop), so the lake ends as a fresh load
/// would. Units of other shards are theirs to reload. Returns the interrupted units that have
/// no ledger entry (a first load), named by their file stem.
fn interrupted_commits(ctx: &Context, repairs: &mut Vec<String>) -> Result<HashSet<String>> {
    let prefix = format!("{}/", commit::PUBLISHING_DIR);
    let stems: HashSet<String> = ctx
        .lake
        .list(&prefix)?
        .into_iter()
        .filter_map(|(path, _)| {
            path.strip_prefix(&prefix)?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    if stems.is_empty() {
        return Ok(stems);
    }
    let marked = lock_ledger(&ctx.ledger)?.mark_for_reload(&stems);
    tracing::info!(
        "{} interrupted commit(s) found in {prefix}; {} loaded unit(s) among them are reloaded",
        stems.len(),
        marked.len()
    );
    let mut sorted: Vec<&String> = marked.iter().collect();
    sorted.sort();
    for stem in sorted {
        repairs.push(format!(
            "{stem}: a commit of this unit was interrupted (its intent is in {prefix}); the unit is reloaded, even if its bill did not change"
        ));
    }
    Ok(stems.difference(&marked).cloned().collect())
}

/// The interrupted first loads (`unrecorded`, by file stem), split by whether this run loads a
/// snapshot of their unit. Those it does not load (their bill left the bucket, or is outside
/// `--from/--to`) have their files removed before loading: no ledger entry names them and a
/// fresh load would not have them. Those it loads are looked at again at the end
/// ([`still_unrecorded`]).
fn split_unrecorded<'a>(
    unrecorded: &'a HashSet<String>,
    planned: &[PlannedObject],
) -> (Vec<&'a String>, Vec<&'a String>) {
    let loading: HashSet<String> = planned
        .iter()
        .filter(|p| p.action != Action::Skip)
        .filter_map(|p| p.bill.as_ref().map(|b| b.unit.file_stem()))
        .collect();
    let mut stems: Vec<&String> = unrecorded.iter().collect();
    stems.sort();
    stems.into_iter().partition(|s| !loading.contains(*s))
}

/// Of the interrupted first loads this run tried to load, those it did not: every snapshot it
/// tried was rejected, so the unit still has no ledger entry. A fresh load would have nothing
/// of the unit either. Only intents that name their unit (billpipe since session 13), so the
/// ledger can say the unit was not loaded meanwhile.
fn still_unrecorded<'a>(ctx: &Context, tried: Vec<&'a String>) -> Result<Vec<&'a String>> {
    let units: Vec<(&String, Option<SnapshotUnit>)> = tried
        .into_iter()
        .map(|stem| {
            (
                stem,
                commit::read_intent(ctx, stem).ok().and_then(|i| i.unit),
            )
        })
        .collect();
    let ledger = lock_ledger(&ctx.ledger)?;
    Ok(units
        .into_iter()
        .filter(|(_, unit)| unit.as_ref().is_some_and(|u| ledger.get(u).is_none()))
        .map(|(stem, _)| stem)
        .collect())
}

/// Removes the files of interrupted first loads `stems` (see [`split_unrecorded`]), with
/// the intent that lists them. A shard removes those of its own units only (the intent names
/// its unit; one written by billpipe before session 13 does not, and is left to a whole-lake
/// run).
fn clear_unrecorded(
    ctx: &Context,
    shard: Option<Shard>,
    stems: Vec<&String>,
    why: &str,
    repairs: &mut Vec<String>,
) {
    for stem in stems {
        let intent = commit::read_intent(ctx, stem);
        let theirs = |intent: &commit::Intent| {
            shard.is_some_and(|s| intent.unit.as_ref().is_none_or(|u| !s.takes(u)))
        };
        if intent.as_ref().is_ok_and(theirs) || (shard.is_some() && intent.is_err()) {
            continue;
        }
        let cleared = intent.and_then(|intent| {
            let paths = intent.paths;
            for path in &paths {
                ctx.lake.delete(path)?;
            }
            ctx.lake.delete(&commit::intent_path(stem))?;
            Ok(paths.len())
        });
        let said = match cleared {
            Ok(n) => format!(
                "{stem}: an interrupted first load left up to {n} file(s) that no ledger entry names, and {why}; removed"
            ),
            Err(e) => format!("{stem}: an interrupted first load's files not removed: {e}"),
        };
        tracing::warn!("{said}");
        repairs.push(said);
    }
}

fn load_with_retries(
    ctx: &Context,
    bill: &BillFile,
    opts: &RunOptions,
    entry: &mut ObjectReport,
) -> Result<()> {
    let attempts = opts.fetch_attempts.max(1);
    let mut attempt = 1;
    loop {
        match load_snapshot(ctx, bill, opts, entry) {
            Err(why @ Error::Fetch { .. }) if attempt < attempts => {
                // Exponential backoff with jitter: 0.5 s, 1 s, 2 s ... plus up to 50 %.
                let base = 500u64 << (attempt - 1).min(6);
                let jitter = (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos() as u64)
                    .unwrap_or(0))
                    % (base / 2 + 1);
                tracing::warn!(key = %bill.object.key, attempt, "download broke off ({why}); retrying in {} ms", base + jitter);
                std::thread::sleep(std::time::Duration::from_millis(base + jitter));
                attempt += 1;
            }
            Err(why @ Error::Fetch { .. }) => {
                return Err(Error::rejected(format!(
                    "reading the object failed {attempts} times, last: {why}"
                )))
            }
            other => return other,
        }
    }
}

fn load_snapshot(
    ctx: &Context,
    bill: &BillFile,
    opts: &RunOptions,
    entry: &mut ObjectReport,
) -> Result<()> {
    let staged = read_snapshot(ctx, bill, opts).map_err(|e| object_failure(ctx, e))?;
    entry.bytes_read = staged.bytes_read;
    entry.notes = staged.notes.clone();
    entry.problems = staged.problems.clone();
    entry.stages = staged.stages.clone();
    entry.rules = staged.rules.clone();
    if let Err(e) = check_shrink(ctx, bill, &staged, opts) {
        staged.discard();
        return Err(e);
    }
    let t = Instant::now();
    commit(ctx, bill, staged, entry)?;
    entry.stages.commit = t.elapsed().as_secs_f64();
    Ok(())
}
