//! Wires the stages together for `billpipe run` and `billpipe plan`.
//!
//! Per snapshot to load, three threads form a bounded pipeline, so memory does not grow with
//! the file: fetch (source bytes → channel of 1 MiB chunks), decode + validate (this thread:
//! CSV → typed batches, bad rows to the quarantine), write (batches → Parquet in staging).
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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_array::RecordBatch;

use crate::classify::{BillFile, Pipeline};
use crate::decode::{format_decimal, parse_offset, CsvDecoder, DecodeOptions, RowProblem};
use crate::fetch;
use crate::lake::{self, Lake};
use crate::ledger::{Ledger, LedgerEntry, OutputFile};
use crate::plan::{self, Action, PlannedObject};
use crate::report::{ObjectReport, Outcome, RunReport, Totals};
use crate::s3::{S3Context, S3Options};
use crate::source::{self, Source};
use crate::validate::Validator;
use crate::write::{PartitionedWriter, WriteOptions, WrittenPart};
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
        }
    }
}

struct Context {
    pipeline: Pipeline,
    source: Arc<dyn Source>,
    lake: Box<dyn Lake>,
    ledger: Ledger,
    decode: DecodeOptions,
    period_offset_secs: i64,
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
    let source: Arc<dyn Source> = Arc::from(source::open(&opts.source, s3)?);
    let lake = lake::open(&opts.dest, writable, s3)?;
    let ledger = Ledger::load(lake.as_ref())?;
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
    Ok(Context {
        pipeline,
        source,
        lake,
        ledger,
        decode,
        period_offset_secs,
    })
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
        error: None,
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
    let listing = ctx.source.list()?;
    for p in plan::plan(&ctx.pipeline, &listing, &ctx.ledger) {
        report.objects.push(object_report(&p, outcome_of(p.action)));
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.compute_totals();
    Ok(report)
}

/// `billpipe run`. Errors that stop the run are returned in `report.error`, with the objects
/// handled so far, so a report is written even for a failed run. Configuration errors (before
/// anything was listed) are returned as `Err`.
pub fn run(opts: &RunOptions) -> Result<RunReport> {
    let start = Instant::now();
    let mut report = new_report("run", opts);
    let mut ctx = open(opts, true)?;
    report.pipeline = ctx.pipeline.origin.clone();
    let listing = match ctx.source.list() {
        Ok(l) => l,
        Err(e) => {
            report.error = Some(format!("listing {}: {e}", ctx.source.uri()));
            report.seconds = start.elapsed().as_secs_f64();
            return Ok(report);
        }
    };
    let planned = plan::plan(&ctx.pipeline, &listing, &ctx.ledger);
    for p in &planned {
        let mut entry = object_report(p, outcome_of(p.action));
        if p.action == Action::Skip {
            report.objects.push(entry);
            continue;
        }
        let Some(bill) = &p.bill else { continue };
        let t0 = Instant::now();
        match load_snapshot(&mut ctx, bill, opts, &mut entry) {
            Ok(()) => {}
            Err(Error::Rejected(why)) => {
                entry.outcome = Outcome::Reject;
                entry.reason = format!("rejected: {why}");
            }
            Err(e) => {
                entry.outcome = Outcome::Reject;
                entry.reason = format!("failed: {e}");
                report.error = Some(format!("{}: {e}", p.object.key));
                entry.seconds = t0.elapsed().as_secs_f64();
                report.objects.push(entry);
                break;
            }
        }
        entry.seconds = t0.elapsed().as_secs_f64();
        report.objects.push(entry);
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.compute_totals();
    Ok(report)
}

/// What reading one file produced, before anything is published.
struct Staged {
    parts: Vec<WrittenPart>,
    quarantine: Option<(PathBuf, u64)>,
    problems: Vec<String>,
    notes: Vec<String>,
    bytes_read: u64,
}

fn load_snapshot(
    ctx: &mut Context,
    bill: &BillFile,
    opts: &RunOptions,
    entry: &mut ObjectReport,
) -> Result<()> {
    let staged = read_snapshot(ctx, bill, opts)?;
    entry.bytes_read = staged.bytes_read;
    entry.notes = staged.notes.clone();
    entry.problems = staged.problems.clone();
    commit(ctx, bill, staged, entry)
}

/// Runs fetch → decode → validate → write for one object into staging.
fn read_snapshot(ctx: &Context, bill: &BillFile, opts: &RunOptions) -> Result<Staged> {
    let key = &bill.object.key;
    let schema = &ctx.pipeline.schema;
    let stem = bill.unit.file_stem();
    let (reader, fetcher) = fetch::spawn(ctx.source.clone(), bill.object.clone())?;
    // If anything below fails, the fetch thread's error (a truncated body, say) is the better
    // explanation than the parser's, so it is preferred.
    let fetch_error = |fetcher: std::thread::JoinHandle<Result<u64>>, other: Error| -> Error {
        match fetcher.join() {
            Ok(Err(e)) => Error::Rejected(format!("reading the object failed: {e}")),
            _ => other,
        }
    };
    let decoder = match CsvDecoder::new(reader, key, schema, ctx.decode.clone()) {
        Ok(d) => d,
        Err(e) => return Err(fetch_error(fetcher, e)),
    };
    let layout = decoder.layout().clone();
    let part = &ctx.pipeline.partition;
    let (validator, notes) = match Validator::new(
        schema,
        &layout,
        &[&part.period_column, &part.account_column],
    ) {
        Ok(v) => v,
        Err(e) => {
            drop(decoder);
            let _ = fetcher.join();
            return Err(e);
        }
    };
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
    let write_thread = std::thread::Builder::new()
        .name("billpipe-write".into())
        .spawn(move || {
            let mut writer = writer;
            for batch in rx {
                if let Err(e) = writer.write(&batch) {
                    writer.abandon();
                    return Err(e);
                }
            }
            writer.finish()
        })
        .map_err(|e| Error::io("write thread", e))?;

    let quarantine_path = ctx
        .lake
        .staging()
        .join(format!("{stem}.quarantine.csv.tmp"));
    let mut quarantine = Quarantine::new(&quarantine_path, key);
    let mut decode_result: Result<()> = Ok(());
    for item in decoder {
        let step = item.and_then(|decoded| {
            let mut problems = decoded.problems;
            let kept = validator.check(decoded.batch, &mut problems)?;
            quarantine.add(&problems)?;
            Ok(kept)
        });
        match step {
            Ok(kept) => {
                if kept.num_rows() > 0 && tx.send(kept).is_err() {
                    break; // the writer failed; its error is collected below
                }
            }
            Err(e) => {
                decode_result = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let written = write_thread
        .join()
        .map_err(|_| Error::Rejected("the write thread panicked".into()))?;
    let cleanup = |parts: &[WrittenPart], q: &Path| {
        for p in parts {
            let _ = std::fs::remove_file(&p.staged);
        }
        let _ = std::fs::remove_file(q);
    };
    if let Err(e) = decode_result {
        if let Ok(parts) = &written {
            cleanup(parts, &quarantine_path);
        }
        return Err(fetch_error(fetcher, e));
    }
    let parts = match written {
        Ok(parts) => parts,
        Err(e) => {
            let _ = std::fs::remove_file(&quarantine_path);
            return Err(fetch_error(fetcher, e));
        }
    };
    let bytes_read = match fetcher.join() {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            cleanup(&parts, &quarantine_path);
            return Err(Error::Rejected(format!("reading the object failed: {e}")));
        }
        Err(_) => {
            cleanup(&parts, &quarantine_path);
            return Err(Error::Rejected("the fetch thread panicked".into()));
        }
    };
    let (problems, rows_quarantined) = quarantine.finish()?;
    Ok(Staged {
        parts,
        quarantine: (rows_quarantined > 0).then_some((quarantine_path, rows_quarantined)),
        problems,
        notes: notes.notes,
        bytes_read,
    })
}

/// Publishes a staged snapshot and records it in the ledger (see the module docs).
fn commit(
    ctx: &mut Context,
    bill: &BillFile,
    staged: Staged,
    entry: &mut ObjectReport,
) -> Result<()> {
    let stem = bill.unit.file_stem();
    let scale = ctx.pipeline.schema.decimal_scale;
    let previous = ctx.ledger.get(&bill.unit).cloned();
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
        ctx.lake.publish(&part.staged, &rel)?;
        total_cost += part.billed_cost;
        rows += part.rows;
        outputs.push(OutputFile {
            path: rel,
            rows: part.rows,
            billed_cost: format_decimal(part.billed_cost, scale),
            bytes: part.bytes,
        });
    }
    let quarantine_rel = format!("{QUARANTINE_DIR}/{stem}.csv");
    let (quarantine, rows_quarantined) = match &staged.quarantine {
        Some((path, n)) => {
            ctx.lake.publish(path, &quarantine_rel)?;
            (Some(quarantine_rel.clone()), *n)
        }
        None => {
            if previous.as_ref().is_some_and(|p| p.quarantine.is_some()) {
                ctx.lake.delete(&quarantine_rel)?;
            }
            (None, 0)
        }
    };
    if let Some(prev) = &previous {
        for old in &prev.outputs {
            if !outputs.iter().any(|o| o.path == old.path) {
                ctx.lake.delete(&old.path)?;
            }
        }
    }
    let billed_cost = format_decimal(total_cost, scale);
    ctx.ledger.record(LedgerEntry {
        unit: bill.unit.clone(),
        source: bill.object.clone(),
        family: bill.family.clone(),
        rank: bill.rank.clone(),
        outputs: outputs.clone(),
        quarantine: quarantine.clone(),
        rows_loaded: rows,
        rows_quarantined,
        billed_cost: billed_cost.clone(),
        loaded_at: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    ctx.ledger.save(ctx.lake.as_ref())?;
    entry.rows_loaded = rows;
    entry.rows_quarantined = rows_quarantined;
    entry.billed_cost = Some(billed_cost);
    entry.bytes_written = outputs.iter().map(|o| o.bytes).sum();
    entry.outputs = outputs.into_iter().map(|o| o.path).collect();
    entry.quarantine = quarantine;
    Ok(())
}

/// Rejected rows of one file, as CSV: source_key, line, column, value, reason.
struct Quarantine {
    path: PathBuf,
    key: String,
    writer: Option<csv::Writer<std::fs::File>>,
    rows: std::collections::BTreeSet<u64>,
    sample: Vec<String>,
}

impl Quarantine {
    fn new(path: &Path, key: &str) -> Quarantine {
        Quarantine {
            path: path.to_path_buf(),
            key: key.to_string(),
            writer: None,
            rows: Default::default(),
            sample: Vec::new(),
        }
    }

    fn add(&mut self, problems: &[RowProblem]) -> Result<()> {
        if problems.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            let mut w = csv::Writer::from_path(&self.path)
                .map_err(|e| Error::io(&self.path, std::io::Error::other(e)))?;
            w.write_record(["source_key", "line", "column", "value", "reason"])
                .map_err(|e| Error::io(&self.path, std::io::Error::other(e)))?;
            self.writer = Some(w);
        }
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        for p in problems {
            w.write_record([
                &self.key,
                &p.line.to_string(),
                &p.column,
                &p.value,
                &p.reason,
            ])
            .map_err(|e| Error::io(&self.path, std::io::Error::other(e)))?;
            self.rows.insert(p.line);
            if self.sample.len() < PROBLEMS_IN_REPORT {
                self.sample.push(format!(
                    "line {}, column {}: {} (value {:?})",
                    p.line, p.column, p.reason, p.value
                ));
            }
        }
        Ok(())
    }

    /// Sample of problems and number of distinct rows quarantined.
    fn finish(self) -> Result<(Vec<String>, u64)> {
        if let Some(mut w) = self.writer {
            w.flush().map_err(|e| Error::io(&self.path, e))?;
        }
        Ok((self.sample, self.rows.len() as u64))
    }
}
