//! Loading one snapshot into staging: the object pipeline (`ingest::pipeline`) reads every
//! object of the snapshot into a [`LakeSink`] — a Parquet writer on its own thread plus the
//! unit's quarantine file — and the result is checked before anything is published: the writer's
//! own sums must equal what passed the checks, a snapshot needs at least one loadable row, and
//! a snapshot far smaller than the one it would replace is refused (`check_shrink`).
//! Publishing is `commit`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;

use crate::conformance::mapping::Mapping;
use crate::conformance::rules::{month_bounds, FileContext, RuleCounts};
use crate::conformance::schema::Schema;
use crate::conformance::validate::{CheckContext, CheckMode, RowTally};
use crate::error::Rejection;
use crate::ingest::decode::{
    format_decimal, parse_offset, DecodeOptions, Layout, MappedInput, RowProblem,
};
use crate::ingest::pipeline::{self, Reading, SchemaChoice, Sink};
use crate::ingest::write::{PartitionedWriter, WrittenPart};
use crate::job::context::{lock_ledger, Context, RunOptions};
use crate::job::report::StageSeconds;
use crate::state::classify::{Accounts, BillFile, Pipeline};
use crate::{Error, Result};

const PROBLEMS_IN_REPORT: usize = 5;

/// How one bill file is read: the pipeline's schema, its family's mapping with the bill month,
/// and date-times without a zone read in the mapping's time zone.
pub(crate) fn bill_reading<'a>(
    pipeline: &'a Pipeline,
    bill: &BillFile,
    mut decode: DecodeOptions,
    profile: &'a crate::conformance::rules::Profile,
    mut check: CheckContext,
    spill: PathBuf,
    limits: crate::ingest::unpack::Limits,
) -> Result<Reading<'a>> {
    let mapped = match &bill.mapping {
        Some(m) => {
            decode.naive_offset_secs = parse_offset(&m.time_offset)?;
            Some(mapped_input(m.clone(), &bill.unit.month)?)
        }
        None => None,
    };
    let offset = parse_offset(&pipeline.partition.period_utc_offset)?;
    check.file = FileContext {
        name_period: month_bounds(&bill.unit.month, offset),
    };
    Ok(Reading {
        schema: SchemaChoice::Fixed(&pipeline.schema),
        mapped,
        decode,
        limits,
        spill,
        profile,
        check,
        required: Vec::new(),
    })
}

/// What reading one file produced, before anything is published.
impl Staged {
    /// Removes the staged files of a snapshot that will not be published.
    pub(crate) fn discard(self) {
        for p in &self.parts {
            let _ = std::fs::remove_file(&p.staged);
        }
        if let Some((path, _)) = &self.quarantine {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub(crate) struct Staged {
    pub(crate) parts: Vec<WrittenPart>,
    /// The unit's quarantine file in staging (rows held out, cells loaded as null) and the
    /// number of rows held out.
    pub(crate) quarantine: Option<(PathBuf, u64)>,
    pub(crate) tally: RowTally,
    pub(crate) problems: Vec<String>,
    pub(crate) notes: Vec<String>,
    pub(crate) bytes_read: u64,
    pub(crate) rules: RuleCounts,
    pub(crate) stages: StageSeconds,
}

/// How much smaller than the snapshot it replaces a snapshot of the same family may be.
/// Month-to-date files only grow, a final holds every day of its dailies, and a restated bill
/// changes amounts, not the number of charges: a file with under half the rows of the one it
/// would replace is far likelier a truncated export or a wrong file than a real bill, and
/// loading it would silently drop most of a month. (Files of different formats — a FOCUS
/// daily and a native monthly — count rows differently and are not compared.) `state reset` for the unit, or `--force`, accepts such a file on purpose.
const SHRINK_LIMIT: (u64, u64) = (1, 2);

pub(crate) fn check_shrink(
    ctx: &Context,
    bill: &BillFile,
    staged: &Staged,
    opts: &RunOptions,
) -> Result<()> {
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
        return Err(Error::rejected(format!(
            "{now} rows, under half of the {before} rows of the snapshot it would replace ({}, {}); a truncated or wrong file would drop most of the month, so the lake keeps what it had. If the bill really shrank, accept it with `billpipe state reset --account {} --month {}` (or --force)",
            prev.rank, prev.source.key, bill.unit.account, bill.unit.month
        )));
    }
    Ok(())
}

/// What the write thread hands back: the partition files in staging and its busy seconds.
type Written = (Vec<WrittenPart>, f64);

/// The lake's side of the object pipeline: checked batches go to a Parquet writer on its own
/// thread (bounded channel: memory does not grow with the file), row problems to the unit's
/// quarantine file, and a single-account family's rows are held to the name's account.
struct LakeSink<'a> {
    ctx: &'a Context,
    stem: String,
    write: crate::ingest::write::WriteOptions,
    /// The account every row must carry (families of one account per file).
    account: Option<&'a str>,
    quarantine: Quarantine,
    writer: Option<(
        std::sync::mpsc::SyncSender<RecordBatch>,
        std::thread::JoinHandle<Result<Written>>,
    )>,
    /// What the writer produced, once closed.
    written: Option<Written>,
}

impl Sink for LakeSink<'_> {
    fn begin(&mut self, _schema: &Schema, layout: &Arc<Layout>, _: &CheckContext) -> Result<()> {
        let part = &self.ctx.pipeline.partition;
        let writer = PartitionedWriter::new(
            self.ctx.lake.staging(),
            &self.stem,
            layout.schema.clone(),
            &part.period_column,
            &part.account_column,
            self.ctx.period_offset_secs,
            self.write.clone(),
        )?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
        self.writer = Some((tx, spawn_writer(writer, rx)?));
        Ok(())
    }

    fn accept(&mut self, member: &str, rows: RecordBatch, problems: &[RowProblem]) -> Result<()> {
        self.quarantine.add(member, problems)?;
        if let Some(account) = self.account {
            same_account(&rows, &self.ctx.pipeline.partition.account_column, account)?;
        }
        if rows.num_rows() == 0 {
            return Ok(());
        }
        match &self.writer {
            // A send fails only when the writer stopped on an error of its own, which `close`
            // returns and which explains the failure better.
            Some((tx, _)) if tx.send(rows).is_ok() => Ok(()),
            _ => Err(Error::rejected("the writer stopped")),
        }
    }

    fn close(&mut self) -> Result<()> {
        let Some((tx, writer)) = self.writer.take() else {
            return Ok(());
        };
        drop(tx);
        let written = writer
            .join()
            .map_err(|_| Error::Internal("the write thread panicked".into()))
            .and_then(|r| r)?;
        self.written = Some(written);
        Ok(())
    }
}

/// Runs the object pipeline for every object of the snapshot into staging.
pub(crate) fn read_snapshot(ctx: &Context, bill: &BillFile, opts: &RunOptions) -> Result<Staged> {
    let stem = bill.unit.file_stem();
    let part = &ctx.pipeline.partition;
    let check = CheckContext {
        column_versions: ctx.column_versions.clone(),
        mode: CheckMode::Load,
        ..CheckContext::default()
    };
    let mut reading = bill_reading(
        &ctx.pipeline,
        bill,
        ctx.decode.clone(),
        &ctx.profile,
        check,
        ctx.lake.staging().join("spill"),
        opts.limits.clone(),
    )?;
    reading.required = vec![part.period_column.clone(), part.account_column.clone()];
    let quarantine_path = ctx
        .lake
        .staging()
        .join(format!("{stem}.quarantine.csv.tmp"));
    let mut sink = LakeSink {
        ctx,
        stem,
        write: opts.write.clone(),
        account: (bill.accounts == Accounts::One).then_some(bill.unit.account.as_str()),
        quarantine: Quarantine::new(&quarantine_path),
        writer: None,
        written: None,
    };
    let objects: Vec<_> = bill.objects().collect();
    let (read, result) = pipeline::read(&ctx.source, &objects, &reading, &mut sink);
    let written = sink.written.take();
    if let Err(e) = result {
        for p in written.iter().flat_map(|(parts, _)| parts) {
            let _ = std::fs::remove_file(&p.staged);
        }
        let _ = std::fs::remove_file(&quarantine_path);
        return Err(e);
    }
    let (parts, write_seconds) = written.unwrap_or_default();
    let tally = read.tally;
    let (problems, recorded) = sink.quarantine.finish()?;
    // The writer's own sums are the lake's: they must be what the checks let through.
    let written_cost: i128 = parts.iter().map(|p| p.billed_cost).sum();
    let written_rows: u64 = parts.iter().map(|p| p.rows).sum();
    if written_cost != tally.cost_loaded || written_rows != tally.rows_loaded {
        for p in &parts {
            let _ = std::fs::remove_file(&p.staged);
        }
        let _ = std::fs::remove_file(&quarantine_path);
        return Err(Error::rejected(format!(
            "internal check failed: {written_rows} rows / BilledCost {} written, but {} rows / {} passed the checks; nothing published",
            format_decimal(written_cost, ctx.pipeline.schema.decimal_scale),
            tally.rows_loaded,
            format_decimal(tally.cost_loaded, ctx.pipeline.schema.decimal_scale),
        )));
    }
    if tally.rows_loaded == 0 {
        let _ = std::fs::remove_file(&quarantine_path);
        return Err(Error::rejected(format!(
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
        notes: read.notes,
        bytes_read: read.bytes_read,
        rules: read.rules,
        stages: StageSeconds {
            fetch: read.fetch_seconds,
            decode: read.decode_seconds,
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
            let rejection = Rejection::new(format!(
                "the row is of account {:?}, but the name says the file is account {expected}'s (a file of this family holds one account; its rows would count twice beside the other account's own file)",
                accounts.value(i)
            ))
            .column(column);
            let line = batch
                .column_by_name(crate::ingest::decode::SOURCE_LINE_COLUMN)
                .and_then(|c| c.as_any().downcast_ref::<arrow_array::Int64Array>())
                .map(|l| l.value(i) as u64);
            Err(match line {
                Some(line) => rejection.line(line),
                None => rejection,
            }
            .into())
        }
    }
}

/// A native file's mapping plus its bill month's bounds: the month in the mapping's time zone,
/// as UTC instants (start inclusive, end exclusive, as FOCUS defines them).
pub(crate) fn mapped_input(mapping: Arc<Mapping>, month: &str) -> Result<MappedInput> {
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
/// The write stage's thread: batches in, partition files out, with its busy time.
fn spawn_writer(
    mut writer: PartitionedWriter,
    rx: std::sync::mpsc::Receiver<RecordBatch>,
) -> Result<std::thread::JoinHandle<Result<Written>>> {
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
