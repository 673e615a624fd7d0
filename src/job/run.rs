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
//! 4. the ledger is rewritten.
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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_array::RecordBatch;

use crate::conformance::mapping::Mapping;
use crate::conformance::rules::{month_bounds, FileContext, Profile, RuleCounts};
use crate::conformance::validate::{CheckContext, CheckMode, RowTally, Validator};
use crate::ingest::decode::{
    format_decimal, parse_offset, CsvDecoder, DecodeOptions, MappedInput, RowProblem,
};
use crate::ingest::write::{PartitionedWriter, WriteOptions, WrittenPart};
use crate::ingest::{fetch, unpack};
use crate::job::report::{
    LakeGap, ObjectReport, Outcome, Reconciliation, RunReport, StageSeconds, Totals,
};
use crate::state::classify::{Accounts, BillFile, Pipeline};
use crate::state::ledger::{Ledger, LedgerEntry, OutputFile};
use crate::state::lock::{self, LockOptions};
use crate::state::plan::{self, Action, PlanOptions, PlannedObject};
use crate::store::lake::{self, Lake};
use crate::store::s3::{S3Context, S3Options};
use crate::store::source::{self, ObjectInfo, Source};
use crate::{Error, Result};

pub const QUARANTINE_DIR: &str = "_quarantine";
const PROBLEMS_IN_REPORT: usize = 5;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub source: String,
    pub dest: String,
    pub pipeline: Option<PathBuf>,
    pub s3: S3Options,
    pub write: WriteOptions,
    pub batch_rows: usize,
    pub plan: PlanOptions,
    /// Objects loaded at the same time (each has its own bounded pipeline).
    pub jobs: usize,
    pub lock: LockOptions,
    /// Attempts at reading one object when its download breaks off (connection reset,
    /// truncated body); requests that fail outright are retried by the S3 client itself.
    pub fetch_attempts: u32,
    /// Decompression bounds (zip-bomb guards).
    pub limits: unpack::Limits,
    /// Conformance profile instead of the pipeline's (`strict`, `tencent`, ...).
    pub profile: Option<String>,
    /// Gatekeeping (`--quarantine-on error`): rows with error findings are held out.
    pub quarantine_on_error: bool,
}

impl RunOptions {
    pub fn new(source: impl Into<String>, dest: impl Into<String>) -> RunOptions {
        RunOptions {
            source: source.into(),
            dest: dest.into(),
            pipeline: None,
            s3: S3Options::default(),
            write: WriteOptions::default(),
            batch_rows: DecodeOptions::default().batch_rows,
            plan: PlanOptions::default(),
            jobs: 1,
            lock: LockOptions::default(),
            fetch_attempts: 4,
            limits: unpack::Limits::default(),
            profile: None,
            quarantine_on_error: false,
        }
    }
}

struct Context {
    pipeline: Pipeline,
    profile: Profile,
    source: Arc<Source>,
    /// The source's listing, taken before the lake is touched: a missing bucket, bad
    /// credentials or an unreachable endpoint fail the run before anything is written.
    listing: Vec<ObjectInfo>,
    lake: Arc<Lake>,
    /// Shared by the jobs; held only to read an entry or to record and save one.
    ledger: Mutex<Ledger>,
    decode: DecodeOptions,
    period_offset_secs: i64,
    /// Every FOCUS column of any known version (see `validate::CheckContext`).
    column_versions: Arc<std::collections::HashMap<String, String>>,
}

fn open(opts: &RunOptions, writable: bool) -> Result<Context> {
    let pipeline = Pipeline::load(opts.pipeline.as_deref())?;
    // One S3 client for source and destination, made only if either needs it.
    let shared: Mutex<Option<S3Context>> = Mutex::new(None);
    let s3 = || -> Result<S3Context> {
        let mut guard = shared
            .lock()
            .map_err(|_| Error::Config("S3 client lock poisoned".into()))?;
        if let Some(ctx) = guard.as_ref() {
            return Ok(ctx.clone());
        }
        let ctx = S3Context::connect(&opts.s3)?;
        *guard = Some(ctx.clone());
        Ok(ctx)
    };
    let source: Arc<Source> = Arc::from(source::open(&opts.source, s3)?);
    let listing = source.list()?;
    let lake: Arc<Lake> = Arc::from(lake::open(&opts.dest, writable, s3)?);
    let ledger = Mutex::new(Ledger::load(lake.as_ref())?);
    let decode = DecodeOptions {
        delimiter: pipeline.csv.delimiter.as_bytes()[0],
        null_values: pipeline
            .csv
            .null_values
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        naive_offset_secs: parse_offset(&pipeline.csv.naive_time_offset)?,
        batch_rows: opts.batch_rows.max(1),
        max_record_bytes: pipeline.csv.max_record_bytes,
    };
    let period_offset_secs = parse_offset(&pipeline.partition.period_utc_offset)?;
    let profile_name = opts.profile.as_deref().unwrap_or(&pipeline.profile);
    let mut profile = Profile::load(profile_name, pipeline.schema_dir.as_deref())?;
    if opts.quarantine_on_error {
        profile.quarantine_on = Some(crate::conformance::rules::QuarantineOn::Error);
    }
    let column_versions = Arc::new(crate::conformance::schema::column_versions(
        &crate::conformance::schema::focus_versions(pipeline.schema_dir.as_deref())?,
    ));
    Ok(Context {
        column_versions,
        profile,
        pipeline,
        source,
        listing,
        lake,
        ledger,
        decode,
        period_offset_secs,
    })
}

/// The report of a run that failed before it started (configuration, listing, lock): no
/// objects, the error.
pub fn failed_report(command: &str, opts: &RunOptions, error: &str) -> RunReport {
    RunReport {
        error: Some(error.to_string()),
        ..new_report(command, opts)
    }
}

fn new_report(command: &str, opts: &RunOptions) -> RunReport {
    RunReport {
        command: command.into(),
        billpipe_version: env!("CARGO_PKG_VERSION").into(),
        source: opts.source.clone(),
        dest: opts.dest.clone(),
        pipeline: String::new(),
        started_at: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        seconds: 0.0,
        objects: Vec::new(),
        totals: Totals::default(),
        lake_gaps: Vec::new(),
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
    let mut report = new_report("plan", opts);
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

fn lock_ledger(ledger: &Mutex<Ledger>) -> Result<std::sync::MutexGuard<'_, Ledger>> {
    ledger
        .lock()
        .map_err(|_| Error::Config("ledger lock poisoned by a panicked job".into()))
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
    let mut report = new_report("run", opts);
    let mut ctx = open(opts, true)?;
    report.pipeline = ctx.pipeline.origin.clone();
    let waited = Instant::now();
    let _lock = lock::acquire(ctx.lake.clone(), "run", &opts.lock)?;
    // Another run may have committed between opening and locking: plan from the latest ledger,
    // and from a fresh listing if we waited for the lock.
    *lock_ledger(&ctx.ledger)? = Ledger::load(ctx.lake.as_ref())?;
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
        .map_err(|_| Error::Config("a job panicked".into()))?;
    report.error = failure.into_inner().ok().flatten();
    report.lake_gaps = LakeGap::find(&*lock_ledger(&ctx.ledger)?, |m| opts.plan.in_range(m));
    report.seconds = start.elapsed().as_secs_f64();
    report.compute_totals();
    Ok(report)
}

/// Loads one object, starting over when its download breaks off mid-way.
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
            Err(Error::Fetch(why)) if attempt < attempts => {
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
            Err(Error::Fetch(why)) => {
                return Err(Error::Rejected(format!(
                    "reading the object failed {attempts} times, last: {why}"
                )))
            }
            other => return other,
        }
    }
}

/// What reading one file produced, before anything is published.
impl Staged {
    /// Removes the staged files of a snapshot that will not be published.
    fn discard(self) {
        for p in &self.parts {
            let _ = std::fs::remove_file(&p.staged);
        }
        if let Some((path, _)) = &self.quarantine {
            let _ = std::fs::remove_file(path);
        }
    }
}

struct Staged {
    parts: Vec<WrittenPart>,
    /// The unit's quarantine file in staging (rows held out, cells loaded as null) and the
    /// number of rows held out.
    quarantine: Option<(PathBuf, u64)>,
    tally: RowTally,
    problems: Vec<String>,
    notes: Vec<String>,
    bytes_read: u64,
    rules: RuleCounts,
    stages: StageSeconds,
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

/// How much smaller than the snapshot it replaces a snapshot of the same family may be.
/// Month-to-date files only grow, a final holds every day of its dailies, and a restated bill
/// changes amounts, not the number of charges: a file with under half the rows of the one it
/// would replace is far likelier a truncated export or a wrong file than a real bill, and
/// loading it would silently drop most of a month. (Files of different formats — a FOCUS
/// daily and a native monthly — count rows differently and are not compared.) `state reset` for the unit, or `--force`, accepts such a file on purpose.
const SHRINK_LIMIT: (u64, u64) = (1, 2);

fn check_shrink(ctx: &Context, bill: &BillFile, staged: &Staged, opts: &RunOptions) -> Result<()> {
    let previous = lock_ledger(&ctx.ledger)?.get(&bill.unit).cloned();
    let Some(prev) = previous else { return Ok(()) };
    let format_of = |family: &str| {
        ctx.pipeline
            .families
            .iter()
            .find(|f| f.name == family)
            .map(|f| f.mapping.as_ref().map(|m| m.name.clone()))
    };
    let same_format = format_of(&prev.family).is_some_and(|f| Some(f) == format_of(&bill.family));
    if opts.plan.force || prev.reset || !same_format {
        return Ok(());
    }
    let before = prev.rows_loaded + prev.rows_quarantined;
    let now = staged.tally.rows_read;
    if now * SHRINK_LIMIT.1 < before * SHRINK_LIMIT.0 {
        return Err(Error::Rejected(format!(
            "{now} rows, under half of the {before} rows of the snapshot it would replace ({}, {}); a truncated or wrong file would drop most of the month, so the lake keeps what it had. If the bill really shrank, accept it with `billpipe state reset --account {} --month {}` (or --force)",
            prev.rank, prev.source.key, bill.unit.account, bill.unit.month
        )));
    }
    Ok(())
}

/// What the write thread hands back: the partition files in staging and its busy seconds.
type Written = Result<(Vec<WrittenPart>, f64)>;

/// The decode → write half of one snapshot's pipeline, set up by its first CSV member.
struct Sink {
    schema: arrow_schema::SchemaRef,
    validator: Validator,
    tx: std::sync::mpsc::SyncSender<RecordBatch>,
    writer: std::thread::JoinHandle<Written>,
}

/// Runs fetch (+ decompress) → decode → validate → write for one object into staging.
fn read_snapshot(ctx: &Context, bill: &BillFile, opts: &RunOptions) -> Result<Staged> {
    let schema = &ctx.pipeline.schema;
    let stem = bill.unit.file_stem();
    let quarantine_path = ctx
        .lake
        .staging()
        .join(format!("{stem}.quarantine.csv.tmp"));
    let mut quarantine = Quarantine::new(&quarantine_path);
    let mut sink: Option<Sink> = None;
    let mut notes = Vec::new();
    let mut decode_time = std::time::Duration::ZERO;
    let mut rule_counts = RuleCounts::new();
    let mut tally = RowTally::default();
    let part = &ctx.pipeline.partition;
    let spill = ctx.lake.staging().join("spill");
    let mapped = match &bill.mapping {
        Some(m) => Some(mapped_input(m.clone(), &bill.unit.month)?),
        None => None,
    };
    let mut decode_options = ctx.decode.clone();
    if let Some(m) = &bill.mapping {
        decode_options.naive_offset_secs = parse_offset(&m.time_offset)?;
    }
    // Every CSV member (one for a plain file, several in a zip) of every object of the
    // snapshot (one, or its parts) feeds the same writer, in part order.
    // The first failure, and whether the download itself failed (which explains best).
    let mut failed: Option<(Error, bool)> = None;
    let (mut bytes_read, mut fetch_seconds) = (0u64, 0f64);
    for object in bill.objects() {
        let key = &object.key;
        let (reader, fetcher) = match fetch::spawn(ctx.source.clone(), object.clone()) {
            Ok(f) => f,
            Err(e) => {
                failed = Some((e, false));
                break;
            }
        };
        let unpacked =
            unpack::for_each_member(reader, key, &opts.limits, &spill, &mut |name, input| {
                let started = Instant::now();
                let decoder =
                    CsvDecoder::new(input, name, schema, decode_options.clone(), mapped.as_ref())
                        .map_err(|e| member_error(name, key, e))?;
                fault_point("fetch");
                let layout = decoder.layout().clone();
                let sink = match &mut sink {
                    Some(s) if s.schema != layout.schema => {
                        return Err(Error::Rejected(format!(
                            "{name}: its columns differ from the first CSV member's"
                        )))
                    }
                    Some(s) => s,
                    None => {
                        let check = CheckContext {
                            file: FileContext {
                                name_period: month_bounds(&bill.unit.month, ctx.period_offset_secs),
                            },
                            column_versions: ctx.column_versions.clone(),
                            mode: CheckMode::Load,
                        };
                        let (validator, header_notes) = Validator::new(
                            schema,
                            &layout,
                            &[&part.period_column, &part.account_column],
                            &ctx.profile,
                            &check,
                        )?;
                        notes.extend(header_notes.notes);
                        rule_counts.extend(header_notes.rules);
                        let writer = PartitionedWriter::new(
                            ctx.lake.staging(),
                            &stem,
                            layout.schema.clone(),
                            &part.period_column,
                            &part.account_column,
                            ctx.period_offset_secs,
                            opts.write.clone(),
                        )?;
                        let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
                        let writer = spawn_writer(writer, rx)?;
                        sink.insert(Sink {
                            schema: layout.schema.clone(),
                            validator,
                            tx,
                            writer,
                        })
                    }
                };
                let mut waiting = std::time::Duration::ZERO;
                for item in decoder {
                    let decoded = item.map_err(|e| member_error(name, key, e))?;
                    let mut problems = decoded.problems;
                    let kept = sink.validator.check(
                        decoded.batch,
                        &decoded.findings,
                        &mut problems,
                        &mut rule_counts,
                        &mut tally,
                    )?;
                    quarantine.add(name, &problems)?;
                    if bill.accounts == Accounts::One {
                        same_account(&kept, &part.account_column, &bill.unit.account)?;
                    }
                    let t = Instant::now();
                    if kept.num_rows() > 0 && sink.tx.send(kept).is_err() {
                        return Err(Error::Rejected("the writer stopped".into()));
                        // its error wins below
                    }
                    waiting += t.elapsed();
                    fault_point("write");
                }
                decode_time += started.elapsed().saturating_sub(waiting);
                Ok(())
            });
        let fetched = fetcher
            .join()
            .map_err(|_| Error::Rejected("the fetch thread panicked".into()))
            .and_then(|r| r);
        match (fetched, unpacked) {
            // A broken download explains best; it may be worth another try.
            (Err(e), _) => {
                failed = Some((fetch_failure(e), true));
                break;
            }
            (Ok(f), Ok(member_notes)) => {
                bytes_read += f.bytes;
                fetch_seconds += f.seconds;
                notes.extend(member_notes);
            }
            (Ok(_), Err(e)) => {
                failed = Some((e, false));
                break;
            }
        }
    }
    // Close the writer and collect everything, then decide which error (if any) explains best:
    // a broken download, then the writer's own error, then the decoder's.
    let written = match sink {
        Some(Sink { tx, writer, .. }) => {
            drop(tx);
            Some(
                writer
                    .join()
                    .map_err(|_| Error::Rejected("the write thread panicked".into()))
                    .and_then(|r| r),
            )
        }
        None => None,
    };
    let discard = |written: &Option<Written>| {
        if let Some(Ok((parts, _))) = written {
            for p in parts {
                let _ = std::fs::remove_file(&p.staged);
            }
        }
        let _ = std::fs::remove_file(&quarantine_path);
    };
    if let Some((e, from_fetch)) = failed {
        discard(&written);
        return Err(match (from_fetch, written) {
            (false, Some(Err(writer))) => writer,
            _ => e,
        });
    }
    let (parts, write_seconds) = match written {
        Some(Ok(w)) => w,
        Some(Err(e)) => {
            let _ = std::fs::remove_file(&quarantine_path);
            return Err(e);
        }
        None => (Vec::new(), 0.0),
    };
    let (problems, recorded) = quarantine.finish()?;
    // The writer's own sums are the lake's: they must be what the checks let through.
    let written_cost: i128 = parts.iter().map(|p| p.billed_cost).sum();
    let written_rows: u64 = parts.iter().map(|p| p.rows).sum();
    if written_cost != tally.cost_loaded || written_rows != tally.rows_loaded {
        for p in &parts {
            let _ = std::fs::remove_file(&p.staged);
        }
        let _ = std::fs::remove_file(&quarantine_path);
        return Err(Error::Rejected(format!(
            "internal check failed: {written_rows} rows / BilledCost {} written, but {} rows / {} passed the checks; nothing published",
            format_decimal(written_cost, ctx.pipeline.schema.decimal_scale),
            tally.rows_loaded,
            format_decimal(tally.cost_loaded, ctx.pipeline.schema.decimal_scale),
        )));
    }
    if tally.rows_loaded == 0 {
        let _ = std::fs::remove_file(&quarantine_path);
        return Err(Error::Rejected(format!(
            "no row of its {} could be loaded (every row held out; first: {}); an empty snapshot would wipe the month, so the lake keeps what it had",
            tally.rows_read,
            problems.first().map(String::as_str).unwrap_or("-")
        )));
    }
    Ok(Staged {
        parts,
        quarantine: recorded.then_some((quarantine_path, tally.rows_held_out)),
        tally,
        problems,
        notes,
        bytes_read,
        rules: rule_counts,
        stages: StageSeconds {
            fetch: fetch_seconds,
            decode: decode_time.as_secs_f64(),
            write: write_seconds,
            commit: 0.0,
        },
    })
}

/// A file named for one account holds only that account: rows of another would land in that
/// account's partition beside its own file and count twice. The object is rejected, naming both.
fn same_account(batch: &RecordBatch, column: &str, expected: &str) -> Result<()> {
    use arrow_array::{Array, StringArray};
    let Some(accounts) = batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
    else {
        return Ok(());
    };
    let other =
        (0..accounts.len()).find(|&i| accounts.is_valid(i) && accounts.value(i) != expected);
    match other {
        None => Ok(()),
        Some(i) => {
            let line = batch
                .column_by_name(crate::ingest::decode::SOURCE_LINE_COLUMN)
                .and_then(|c| c.as_any().downcast_ref::<arrow_array::Int64Array>())
                .map(|l| l.value(i).to_string())
                .unwrap_or_else(|| "?".into());
            Err(Error::Rejected(format!(
                "line {line}, column {column}: the row is of account {:?}, but the name says the file is account {expected}'s (a file of this family holds one account; its rows would count twice beside the other account's own file)",
                accounts.value(i)
            )))
        }
    }
}

/// A native file's mapping plus its bill month's bounds: the month in the mapping's time zone,
/// as UTC instants (start inclusive, end exclusive, as FOCUS defines them).
fn mapped_input(mapping: Arc<Mapping>, month: &str) -> Result<MappedInput> {
    let offset = parse_offset(&mapping.time_offset)?;
    let bad = || Error::Config(format!("bad bill month {month:?}"));
    let (start, end) = month_bounds(month, offset).ok_or_else(bad)?;
    let utc = |micros: i64| {
        chrono::DateTime::from_timestamp_micros(micros)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .ok_or_else(bad)
    };
    Ok(MappedInput {
        mapping,
        period: (utc(start)?, utc(end)?),
    })
}

/// Prefixes a decoder's message with the zip member it is about (a plain file's name is the key,
/// which the report already shows).
fn member_error(name: &str, key: &str, e: Error) -> Error {
    match e {
        Error::Rejected(why) if name != key => Error::Rejected(format!(
            "{}: {why}",
            name.rsplit('#').next().unwrap_or(name)
        )),
        other => other,
    }
}

/// The write stage's thread: batches in, partition files out, with its busy time.
fn spawn_writer(
    mut writer: PartitionedWriter,
    rx: std::sync::mpsc::Receiver<RecordBatch>,
) -> Result<std::thread::JoinHandle<Written>> {
    std::thread::Builder::new()
        .name("billpipe-write".into())
        .spawn(move || {
            let mut busy = std::time::Duration::ZERO;
            for batch in rx {
                let t = Instant::now();
                if let Err(e) = writer.write(&batch) {
                    writer.abandon();
                    return Err(e);
                }
                busy += t.elapsed();
            }
            let t = Instant::now();
            let parts = writer.finish()?;
            Ok((parts, (busy + t.elapsed()).as_secs_f64()))
        })
        .map_err(|e| Error::io("write thread", e))
}

/// Crash-test hook: with `BILLPIPE_FAULT_KILL_AT=<point>` in the environment, the process
/// SIGKILLs itself the first time it reaches that point of the commit protocol (`fetch`,
/// `write`, `publish`, `cleanup`, `ledger`), so tests can prove a kill anywhere leaves the lake
/// consistent. Without the variable this is one environment lookup per call.
fn fault_point(point: &str) {
    if std::env::var("BILLPIPE_FAULT_KILL_AT").is_ok_and(|p| p == point) {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        // SIGKILL is delivered before `kill` returns; never go on past the point.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}

/// A broken-off download can be tried again; anything else the source says is final for this
/// object (the S3 client has already retried requests that failed outright).
fn fetch_failure(e: Error) -> Error {
    match e {
        Error::Fetch(why) => Error::Fetch(why),
        other => Error::Rejected(format!("reading the object failed: {other}")),
    }
}

/// Reading an object into staging concerns that object alone: whatever fails there (a staged
/// file that cannot be written, a Parquet or Arrow error, a mapping that does not fit) rejects
/// it, and the run goes on. A broken-off download stays retryable. A run that lost the lake's
/// lock stops: its staging folder may be gone because the new owner cleared it.
fn object_failure(ctx: &Context, e: Error) -> Error {
    if let Err(lost) = ctx.lake.fence().check("the lake") {
        return lost;
    }
    match e {
        Error::Rejected(_) | Error::Fetch(_) | Error::Locked(_) => e,
        other => Error::Rejected(other.to_string()),
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
    let was_there = |path: &str| previous.is_some_and(|p| p.outputs.iter().any(|o| o.path == path));
    let mut restored = true;
    for o in done.iter().filter(|o| !was_there(&o.path)) {
        restored &= ctx.lake.delete(&o.path).is_ok();
    }
    if restored && !done.iter().any(|o| was_there(&o.path)) {
        Error::Rejected(format!("publishing it failed, the lake is unchanged: {e}"))
    } else {
        e
    }
}

/// A partition holds the snapshot of one unit. Another unit's file there is the same account
/// and month delivered twice — a reseller's consolidated bill and the customer's own bill in
/// one lake — and publishing beside it would count that money twice: the object is rejected,
/// naming both, and the lake keeps what it had.
fn no_other_unit_there(ctx: &Context, staged: &Staged, stem: &str) -> Result<()> {
    let own = format!("{stem}.parquet");
    for part in &staged.parts {
        let dir = format!("{}/", part.partition.dir());
        let other = ctx
            .lake
            .list(&dir)?
            .into_iter()
            .map(|(path, _)| path)
            .find(|path| path.ends_with(".parquet") && !path.ends_with(&format!("/{own}")));
        if let Some(other) = other {
            return Err(Error::Rejected(format!(
                "partition {dir} already holds {other}, a snapshot of another unit for the same account and month (a reseller's consolidated bill and the customer's own bill in one lake?); publishing {own} beside it would count that money twice — load such bills into separate lakes"
            )));
        }
    }
    Ok(())
}

/// Publishes a staged snapshot and records it in the ledger (see the module docs).
fn commit(ctx: &Context, bill: &BillFile, staged: Staged, entry: &mut ObjectReport) -> Result<()> {
    let stem = bill.unit.file_stem();
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
    let mut outputs = Vec::new();
    let mut total_cost: i128 = 0;
    let mut rows = 0;
    for part in &staged.parts {
        if part.partition.period != bill.unit.month {
            entry.notes.push(format!(
                "{} rows have billing period {}, not the {} the file name says",
                part.rows, part.partition.period, bill.unit.month
            ));
        }
        let rel = format!("{}/{stem}.parquet", part.partition.dir());
        if let Err(e) = ctx.lake.publish(&part.staged, &rel) {
            return Err(unpublish(ctx, previous.as_ref(), &outputs, &staged, e));
        }
        fault_point("publish");
        total_cost += part.billed_cost;
        rows += part.rows;
        outputs.push(OutputFile {
            path: rel,
            rows: part.rows,
            billed_cost: format_decimal(part.billed_cost, scale),
            bytes: part.bytes,
        });
    }
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
    fault_point("cleanup");
    if let Some(prev) = &previous {
        for old in &prev.outputs {
            if !outputs.iter().any(|o| o.path == old.path) {
                ctx.lake.delete(&old.path)?;
            }
        }
    }
    let billed_cost = format_decimal(total_cost, scale);
    fault_point("ledger");
    let mut ledger = lock_ledger(&ctx.ledger)?;
    ledger.record(LedgerEntry {
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
    });
    ledger.save(ctx.lake.as_ref())?;
    drop(ledger);
    entry.rows_loaded = rows;
    entry.rows_quarantined = rows_quarantined;
    entry.reconciliation = Some(Reconciliation::new(&staged.tally, total_cost, scale));
    entry.billed_cost = Some(billed_cost);
    entry.bytes_written = outputs.iter().map(|o| o.bytes).sum();
    entry.outputs = outputs.into_iter().map(|o| o.path).collect();
    entry.quarantine = quarantine;
    Ok(())
}

/// What the lake does not show as delivered, for one snapshot, as CSV: source_key, line,
/// column, value, reason, row — `row` is `held out` (the row is not in the lake) or `loaded`
/// (the row is, with this cell null because its text did not type or map).
struct Quarantine {
    path: PathBuf,
    writer: Option<csv::Writer<std::fs::File>>,
    /// Examples for the report, rows held out first.
    held_sample: Vec<String>,
    nulled_sample: Vec<String>,
}

impl Quarantine {
    fn new(path: &Path) -> Quarantine {
        Quarantine {
            path: path.to_path_buf(),
            writer: None,
            held_sample: Vec::new(),
            nulled_sample: Vec::new(),
        }
    }

    fn add(&mut self, source_key: &str, problems: &[RowProblem]) -> Result<()> {
        if problems.is_empty() {
            return Ok(());
        }
        let io = |path: &Path, e: csv::Error| Error::io(path, std::io::Error::other(e));
        if self.writer.is_none() {
            let mut w = csv::Writer::from_path(&self.path).map_err(|e| io(&self.path, e))?;
            w.write_record(["source_key", "line", "column", "value", "reason", "row"])
                .map_err(|e| io(&self.path, e))?;
            self.writer = Some(w);
        }
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        for p in problems {
            let row = if p.held_out { "held out" } else { "loaded" };
            w.write_record([
                source_key,
                &p.line.to_string(),
                &p.column,
                &p.value,
                &p.reason,
                row,
            ])
            .map_err(|e| io(&self.path, e))?;
            let sample = if p.held_out {
                &mut self.held_sample
            } else {
                &mut self.nulled_sample
            };
            if sample.len() < PROBLEMS_IN_REPORT {
                let what = if p.held_out {
                    "held out"
                } else {
                    "loaded, cell null"
                };
                sample.push(format!(
                    "{what}: line {}, column {}: {} (value {:?})",
                    p.line, p.column, p.reason, p.value
                ));
            }
        }
        Ok(())
    }

    /// Examples for the report, and whether anything was recorded.
    fn finish(self) -> Result<(Vec<String>, bool)> {
        let recorded = self.writer.is_some();
        if let Some(mut w) = self.writer {
            w.flush().map_err(|e| Error::io(&self.path, e))?;
        }
        let mut sample = self.held_sample;
        sample.extend(self.nulled_sample);
        sample.truncate(PROBLEMS_IN_REPORT);
        Ok((sample, recorded))
    }
}

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
    for e in &chosen {
        if let Some(entry) = ledger.units.get_mut(&e.unit.to_string()) {
            entry.reset = true;
        }
    }
    if !chosen.is_empty() {
        ledger.save(lake.as_ref())?;
    }
    Ok(chosen)
}
