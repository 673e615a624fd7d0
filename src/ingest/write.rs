//! The write stage: typed record batches to one Parquet file per Hive partition
//! (`billing_period=YYYY-MM/billing_account_id=ID/`) for one snapshot.
//!
//! Files are written to a local staging folder first; `run` publishes them into the lake only
//! once the whole snapshot has been read, so a half-read file never reaches a reader. Every
//! snapshot unit owns one file per partition it touches (named after the unit), which lets a
//! newer snapshot replace it in place, atomically.
//!
//! Parquet settings: zstd, page-level statistics, row groups of 122,880 rows (DuckDB's default,
//! so the two compare like for like); FOCUS column names as they are.
//!
//! Partition values come from the rows, so any text must make a safe path segment. The account
//! is Hive-escaped (`%XX` for every byte but `A-Z a-z 0-9 - _ .`, as billpipe always did, so
//! existing lakes keep their paths). An escaped value over [`MAX_PARTITION_VALUE_BYTES`] (which
//! would break the 255-byte file-name limit: a 300-character id, 90 CJK characters) becomes its
//! longest escaped prefix of whole characters that fits, then `~`, then 32 hex digits of a
//! 128-bit FNV-1a hash of the whole value (see [`partition_value`]). Escaping never produces
//! `~`, so a capped folder cannot collide with an uncapped one, and the hash tells long values
//! with the same prefix apart. The folder is then not reversible by itself: the row's
//! `BillingAccountId` column always holds the full value, and is what readers should group by.
//! Two values of one snapshot that would share a folder are rejected, never merged.

//!
//! Memory does not grow with the number of partitions nor with the file. The first
//! [`WriteOptions::open_writers`] partitions of a snapshot stream into their own Parquet writer
//! (a bill of one account, or of a few, is written as it is read, as fast as ever); if those
//! writers together hold more than [`WriteOptions::memory_budget`] in unfinished row groups, the
//! largest closes its row group early. Rows of any further partition are held in memory, and
//! whenever they pass the same budget they are sorted by partition and spilled to a run file in
//! the staging folder (Arrow IPC, batches in partition order; the writer keeps which partition
//! each batch holds). `finish` then writes those partitions one at a time, reading every run
//! file once, front to back, side by side (a merge: each run is in partition order), so at most
//! one extra Parquet writer is open. Run files are removed at the end, on `abandon`, and when
//! the writer is dropped. Rows and BilledCost of every file are summed from the batches that
//! go into the Parquet writer itself, after the spill and read-back, so `run`'s check of these
//! sums against the decoder's tally catches a row lost or doubled anywhere on the way.
//!
//! A snapshot may spread over at most [`WriteOptions::max_partitions`] partitions (100,000: a
//! safety limit against a wrong partition column, not a memory bound).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;
use arrow_select::concat::concat_batches;
use arrow_select::interleave::interleave_record_batch;
use arrow_select::take::take_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::ingest::decode::year_month_from_days;
use crate::partition::PartitionKey;
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub zstd_level: i32,
    pub row_group_rows: usize,
    /// A snapshot spreading over more partitions than this is rejected: a safety limit (a wrong
    /// partition column would otherwise make a file per row), not a memory bound.
    pub max_partitions: usize,
    /// Partitions written straight to their own Parquet writer as rows arrive (the first ones
    /// seen); rows of the others go through memory and run files.
    pub open_writers: usize,
    /// Bytes of Arrow data held for partitions without an open writer before they are spilled
    /// to a run file; also the most the open writers may hold in unfinished row groups.
    pub memory_budget: usize,
}

impl Default for WriteOptions {
    /// 16 open writers and a 64 MiB budget, unless `BILLPIPE_WRITE_OPEN` (writers) or
    /// `BILLPIPE_WRITE_BUDGET` (bytes) say otherwise: knobs for tests and measurements.
    fn default() -> Self {
        let env = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        WriteOptions {
            zstd_level: 3,
            row_group_rows: 122_880,
            max_partitions: 100_000,
            open_writers: env("BILLPIPE_WRITE_OPEN", 16),
            memory_budget: env("BILLPIPE_WRITE_BUDGET", 64 << 20),
        }
    }
}

/// One finished partition file, still in staging.
#[derive(Debug, Clone)]
pub struct WrittenPart {
    pub partition: PartitionKey,
    pub staged: PathBuf,
    pub rows: u64,
    /// Sum of BilledCost, scaled by the schema's decimal scale.
    pub billed_cost: i128,
    pub bytes: u64,
}

struct Part {
    staged: PathBuf,
    writer: ArrowWriter<BufWriter<File>>,
    rows: u64,
    billed_cost: i128,
}

struct Partition {
    key: PartitionKey,
    /// Its streaming writer; `None` for a partition whose rows go through run files.
    direct: Option<Part>,
}

/// A run file: rows of the partitions without an open writer, sorted by partition.
struct Run {
    path: PathBuf,
    /// The partition (index into `parts`) of each batch of the file, in file order.
    batches: Vec<u32>,
}

/// Rows per batch written to a run file.
const RUN_BATCH_ROWS: usize = 8192;

/// Writes the batches of one snapshot, split by partition.
pub struct PartitionedWriter {
    staging: PathBuf,
    stem: String,
    schema: SchemaRef,
    props: WriterProperties,
    options: WriteOptions,
    period_col: usize,
    account_col: usize,
    cost_col: Option<usize>,
    period_offset_micros: i64,
    /// Every partition of the snapshot, in the order first seen.
    parts: Vec<Partition>,
    /// account -> (year * 12 + month - 1, index into `parts`)
    ids: HashMap<String, Vec<(i64, u32)>>,
    /// Partition folders, to reject two values that would share one.
    dirs: HashMap<String, u32>,
    open: usize,
    /// Rows waiting for a run file, with the partition of each row.
    held: Vec<(RecordBatch, Vec<u32>)>,
    held_bytes: usize,
    runs: Vec<Run>,
}

impl PartitionedWriter {
    pub fn new(
        staging: &Path,
        stem: &str,
        schema: SchemaRef,
        period_column: &str,
        account_column: &str,
        period_offset_secs: i64,
        options: WriteOptions,
    ) -> Result<PartitionedWriter> {
        let idx = |name: &str| {
            schema
                .index_of(name)
                .map_err(|_| Error::Config(format!("partition column {name} is not in the output")))
        };
        let level = ZstdLevel::try_new(options.zstd_level)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(options.row_group_rows))
            .set_created_by(format!("billpipe {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(PartitionedWriter {
            staging: staging.to_path_buf(),
            stem: stem.to_string(),
            period_col: idx(period_column)?,
            account_col: idx(account_column)?,
            cost_col: schema.index_of("BilledCost").ok(),
            schema,
            props,
            options,
            period_offset_micros: period_offset_secs * 1_000_000,
            parts: Vec::new(),
            ids: HashMap::new(),
            dirs: HashMap::new(),
            open: 0,
            held: Vec::new(),
            held_bytes: 0,
            runs: Vec::new(),
        })
    }

    /// The partition month of a period value, as year * 12 + month - 1.
    fn month_of(&self, micros: i64) -> i64 {
        let (y, m) =
            year_month_from_days((micros + self.period_offset_micros).div_euclid(86_400_000_000));
        y * 12 + m as i64 - 1
    }

    /// The index of the partition (month, account), added when new.
    fn id_of(&mut self, month: i64, account: &str) -> Result<u32> {
        if let Some(months) = self.ids.get(account) {
            if let Some((_, id)) = months.iter().find(|(m, _)| *m == month) {
                return Ok(*id);
            }
        }
        if self.parts.len() >= self.options.max_partitions {
            return Err(Error::Rejected(format!(
                "rows spread over more than {} partitions (a safety limit: is the partition column right?)",
                self.options.max_partitions
            )));
        }
        let key = PartitionKey {
            period: format!(
                "{:04}-{:02}",
                month.div_euclid(12),
                month.rem_euclid(12) + 1
            ),
            account: account.to_string(),
        };
        let id = self.parts.len() as u32;
        let dir = key.dir();
        if let Some(&other) = self.dirs.get(&dir) {
            return Err(Error::Rejected(format!(
                "partition values {:?} and {:?} would share the folder {dir}",
                self.parts[other as usize].key.account, key.account
            )));
        }
        let direct = if self.open < self.options.open_writers {
            self.open += 1;
            tracing::debug!("{}: streaming partition {dir}", self.stem);
            Some(self.open_part()?)
        } else {
            None
        };
        self.dirs.insert(dir, id);
        self.ids
            .entry(account.to_string())
            .or_default()
            .push((month, id));
        self.parts.push(Partition { key, direct });
        Ok(id)
    }

    /// A new Parquet file in staging.
    fn open_part(&self) -> Result<Part> {
        // Named by a process-wide counter, not by the unit (whose name may be long): the
        // staging folder is this run's alone, and jobs share it.
        let staged = self
            .staging
            .join(format!("part-{}.parquet.tmp", next_file_number()));
        let file = File::create(&staged).map_err(|e| Error::io(&staged, e))?;
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            self.schema.clone(),
            Some(self.props.clone()),
        );
        match writer {
            Ok(writer) => Ok(Part {
                staged,
                writer,
                rows: 0,
                billed_cost: 0,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&staged);
                Err(e.into())
            }
        }
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let periods = batch
            .column(self.period_col)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| Error::Config("period column is not a timestamp".into()))?;
        let accounts = batch
            .column(self.account_col)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Config("account column is not a string".into()))?;
        // The partition of every row; a row like the one before it costs no lookup.
        let mut ids = Vec::with_capacity(rows);
        let mut last: Option<(i64, usize, u32)> = None;
        for row in 0..rows {
            let month = self.month_of(periods.value(row));
            let id = match last {
                Some((m, r, id)) if m == month && accounts.value(r) == accounts.value(row) => id,
                _ => {
                    let id = self.id_of(month, accounts.value(row))?;
                    last = Some((month, row, id));
                    id
                }
            };
            ids.push(id);
        }
        // Bills are almost always one partition per file (per batch, at least).
        if ids.iter().all(|&id| id == ids[0]) {
            let id = ids[0];
            return if self.parts[id as usize].direct.is_some() {
                self.write_direct(id, batch)
            } else {
                self.hold(batch.clone(), ids)
            };
        }
        let mut direct: Vec<(u32, Vec<u32>)> = Vec::new();
        let mut held_rows = Vec::new();
        let mut held_ids = Vec::new();
        for (row, &id) in ids.iter().enumerate() {
            if self.parts[id as usize].direct.is_some() {
                match direct.iter_mut().find(|(d, _)| *d == id) {
                    Some((_, rows)) => rows.push(row as u32),
                    None => direct.push((id, vec![row as u32])),
                }
            } else {
                held_rows.push(row as u32);
                held_ids.push(id);
            }
        }
        for (id, rows) in direct {
            let part = take_record_batch(batch, &UInt32Array::from(rows))?;
            self.write_direct(id, &part)?;
        }
        if !held_rows.is_empty() {
            let rows = take_record_batch(batch, &UInt32Array::from(held_rows))?;
            self.hold(rows, held_ids)?;
        }
        Ok(())
    }

    fn write_direct(&mut self, id: u32, batch: &RecordBatch) -> Result<()> {
        let cost_col = self.cost_col;
        let part = self.parts[id as usize]
            .direct
            .as_mut()
            .ok_or_else(|| Error::Config("partition writer vanished".into()))?;
        write_counted(part, cost_col, batch)?;
        // Unfinished row groups of the open writers stay within the budget: the largest
        // closes its row group early when they do not.
        let mut total = 0;
        let mut largest: Option<(usize, usize)> = None;
        // The open writers are those of the first partitions seen.
        for (i, p) in self.parts[..self.open].iter().enumerate() {
            if let Some(d) = &p.direct {
                let size = d.writer.memory_size();
                total += size;
                if largest.is_none_or(|(_, s)| size > s) {
                    largest = Some((i, size));
                }
            }
        }
        if total > self.options.memory_budget {
            if let Some(d) = largest.and_then(|(i, _)| self.parts[i].direct.as_mut()) {
                d.writer.flush()?;
            }
        }
        Ok(())
    }

    /// Holds rows of partitions without an open writer; spills them when over the budget.
    fn hold(&mut self, batch: RecordBatch, ids: Vec<u32>) -> Result<()> {
        self.held_bytes += batch.get_array_memory_size();
        self.held.push((batch, ids));
        if self.held_bytes > self.options.memory_budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes the held rows to a new run file, sorted by partition.
    fn spill(&mut self) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        let mut order: Vec<(u32, usize, usize)> = Vec::new();
        for (b, (_, ids)) in self.held.iter().enumerate() {
            order.extend(ids.iter().enumerate().map(|(r, &id)| (id, b, r)));
        }
        // (partition, batch, row): rows of a partition keep their order.
        order.sort_unstable();
        let path = self
            .staging
            .join(format!("run-{}.arrow.tmp", next_file_number()));
        tracing::debug!(
            "{}: spilling {} rows ({} bytes) to {}",
            self.stem,
            order.len(),
            self.held_bytes,
            path.display()
        );
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        // Registered at once, so `abandon` and `drop` remove it even if writing fails.
        self.runs.push(Run {
            path,
            batches: Vec::new(),
        });
        let mut w = FileWriter::try_new_buffered(file, &self.schema)?;
        let held: Vec<&RecordBatch> = self.held.iter().map(|(b, _)| b).collect();
        let mut batches = Vec::new();
        let mut indices = Vec::with_capacity(RUN_BATCH_ROWS);
        for chunk in order.chunks(RUN_BATCH_ROWS) {
            indices.clear();
            indices.extend(chunk.iter().map(|&(_, b, r)| (b, r)));
            let sorted = interleave_record_batch(&held, &indices)?;
            // One batch per partition in the chunk.
            let mut start = 0;
            while start < chunk.len() {
                let id = chunk[start].0;
                let len = chunk[start..].iter().take_while(|t| t.0 == id).count();
                w.write(&sorted.slice(start, len))?;
                batches.push(id);
                start += len;
            }
        }
        w.finish()?;
        if let Some(run) = self.runs.last_mut() {
            run.batches = batches;
        }
        self.held.clear();
        self.held_bytes = 0;
        Ok(())
    }

    /// Closes every partition file and returns them, still in staging. Partitions without an
    /// open writer are written now, one at a time, from the run files.
    pub fn finish(mut self) -> Result<Vec<WrittenPart>> {
        let mut out = Vec::with_capacity(self.parts.len());
        let result = self.finish_parts(&mut out);
        self.remove_runs();
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                self.remove_files();
                for part in out {
                    let _ = std::fs::remove_file(&part.staged);
                }
                Err(e)
            }
        }
    }

    fn finish_parts(&mut self, out: &mut Vec<WrittenPart>) -> Result<()> {
        self.spill()?;
        for p in &mut self.parts {
            if let Some(part) = p.direct.take() {
                out.push(close(p.key.clone(), part)?);
            }
        }
        let mut spilled = vec![false; self.parts.len()];
        let mut readers = Vec::with_capacity(self.runs.len());
        for run in &self.runs {
            let file = File::open(&run.path).map_err(|e| Error::io(&run.path, e))?;
            let reader = FileReader::try_new(BufReader::with_capacity(1 << 16, file), None)?;
            if reader.num_batches() != run.batches.len() {
                return Err(Error::Rejected(format!(
                    "run file {} holds {} batches, not the {} written",
                    run.path.display(),
                    reader.num_batches(),
                    run.batches.len()
                )));
            }
            for &id in &run.batches {
                spilled[id as usize] = true;
            }
            readers.push((reader, run.batches.iter().copied().peekable()));
        }
        // A merge: every run is in partition order, so each is read once, front to back.
        for (id, _) in spilled.iter().enumerate().filter(|(_, s)| **s) {
            let id = id as u32;
            let mut part = self.open_part()?;
            let mut pending: Vec<RecordBatch> = Vec::new();
            let mut pending_rows = 0;
            let mut written = Ok(());
            'runs: for (reader, ids) in &mut readers {
                while ids.next_if_eq(&id).is_some() {
                    let batch = match reader.next() {
                        Some(Ok(batch)) => batch,
                        Some(Err(e)) => {
                            written = Err(e.into());
                            break 'runs;
                        }
                        None => {
                            written = Err(Error::Rejected("a run file ended early".into()));
                            break 'runs;
                        }
                    };
                    pending_rows += batch.num_rows();
                    pending.push(batch);
                    if pending_rows >= RUN_BATCH_ROWS {
                        written =
                            write_pending(&mut part, self.cost_col, &self.schema, &mut pending);
                        pending_rows = 0;
                        if written.is_err() {
                            break 'runs;
                        }
                    }
                }
            }
            if written.is_ok() {
                written = write_pending(&mut part, self.cost_col, &self.schema, &mut pending);
            }
            if let Err(e) = written {
                drop(part.writer);
                let _ = std::fs::remove_file(&part.staged);
                return Err(e);
            }
            out.push(close(self.parts[id as usize].key.clone(), part)?);
        }
        Ok(())
    }

    /// Removes staged files after a failure.
    pub fn abandon(mut self) {
        self.remove_files();
        self.remove_runs();
    }

    fn remove_files(&mut self) {
        for p in &mut self.parts {
            if let Some(part) = p.direct.take() {
                drop(part.writer);
                let _ = std::fs::remove_file(&part.staged);
            }
        }
    }

    fn remove_runs(&mut self) {
        for run in self.runs.drain(..) {
            let _ = std::fs::remove_file(&run.path);
        }
    }
}

impl Drop for PartitionedWriter {
    fn drop(&mut self) {
        self.remove_runs();
    }
}

fn next_file_number() -> u64 {
    static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Writes the batches read back for a partition as one, then forgets them.
fn write_pending(
    part: &mut Part,
    cost_col: Option<usize>,
    schema: &SchemaRef,
    pending: &mut Vec<RecordBatch>,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let batch = concat_batches(schema, pending.iter())?;
    pending.clear();
    write_counted(part, cost_col, &batch)
}

/// Writes a batch into a partition file, counting its rows and BilledCost.
fn write_counted(part: &mut Part, cost_col: Option<usize>, batch: &RecordBatch) -> Result<()> {
    let cost = match cost_col {
        Some(c) => sum_decimal(batch.column(c).as_any().downcast_ref::<Decimal128Array>())?,
        None => 0,
    };
    part.writer.write(batch)?;
    part.rows += batch.num_rows() as u64;
    part.billed_cost = part
        .billed_cost
        .checked_add(cost)
        .ok_or_else(|| Error::Rejected("BilledCost sum overflows".into()))?;
    Ok(())
}

/// Closes a partition file; removes it if that fails.
fn close(partition: PartitionKey, part: Part) -> Result<WrittenPart> {
    let Part {
        staged,
        writer,
        rows,
        billed_cost,
    } = part;
    let bytes = writer
        .close()
        .map_err(Error::from)
        .and_then(|_| std::fs::metadata(&staged).map_err(|e| Error::io(&staged, e)));
    match bytes {
        Ok(meta) => Ok(WrittenPart {
            partition,
            staged,
            rows,
            billed_cost,
            bytes: meta.len(),
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            Err(e)
        }
    }
}

fn sum_decimal(col: Option<&Decimal128Array>) -> Result<i128> {
    let Some(col) = col else { return Ok(0) };
    let mut sum: i128 = 0;
    for v in col.iter().flatten() {
        sum = sum
            .checked_add(v)
            .ok_or_else(|| Error::Rejected("BilledCost sum overflows".into()))?;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(
                "BillingPeriodStart",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("BillingAccountId", DataType::Utf8, false),
            Field::new("BilledCost", DataType::Decimal128(38, 10), true),
            Field::new("Row", DataType::UInt32, false),
        ]))
    }

    const DAY: i64 = 86_400_000_000;
    // 2025-11-01 and 2025-12-01, UTC.
    const NOV: i64 = 20_393 * DAY;
    const DEC: i64 = 20_423 * DAY;

    /// Rows of 50 accounts interleaved, 10 of them in two months; batches of various sizes.
    fn input() -> Vec<RecordBatch> {
        let mut out = Vec::new();
        let mut row = 0u32;
        for size in [1usize, 7, 300, 64, 1000, 3, 500, 2000, 50] {
            let mut periods = Vec::new();
            let mut accounts = Vec::new();
            let mut costs = Vec::new();
            let mut rows = Vec::new();
            for _ in 0..size {
                let account = (row * 7 + row / 13) % 50;
                periods.push(if account.is_multiple_of(5) && row.is_multiple_of(2) {
                    DEC
                } else {
                    NOV
                });
                accounts.push(format!("acct-{account:03}"));
                costs.push((row % 11 != 3).then(|| (row as i128 * 1_234_567_891) - 50_000));
                rows.push(row);
                row += 1;
            }
            out.push(
                RecordBatch::try_new(
                    schema(),
                    vec![
                        Arc::new(TimestampMicrosecondArray::from(periods).with_timezone("UTC")),
                        Arc::new(StringArray::from(accounts)),
                        Arc::new(
                            Decimal128Array::from(costs)
                                .with_precision_and_scale(38, 10)
                                .unwrap(),
                        ),
                        Arc::new(UInt32Array::from(rows)),
                    ],
                )
                .unwrap(),
            );
        }
        out
    }

    /// (period, account) -> (rows, BilledCost, row numbers in order)
    type Sums = BTreeMap<(String, String), (u64, i128, Vec<u32>)>;

    fn sums_of(batches: &[RecordBatch]) -> Sums {
        let mut sums = Sums::new();
        for b in batches {
            let col = |i: usize| b.column(i).as_any();
            let p = col(0).downcast_ref::<TimestampMicrosecondArray>().unwrap();
            let a = col(1).downcast_ref::<StringArray>().unwrap();
            let c = col(2).downcast_ref::<Decimal128Array>().unwrap();
            let r = col(3).downcast_ref::<UInt32Array>().unwrap();
            for i in 0..b.num_rows() {
                let month = if p.value(i) == DEC {
                    "2025-12"
                } else {
                    "2025-11"
                };
                let e = sums
                    .entry((month.to_string(), a.value(i).to_string()))
                    .or_default();
                e.0 += 1;
                e.1 += if c.is_null(i) { 0 } else { c.value(i) };
                e.2.push(r.value(i));
            }
        }
        sums
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn writer(dir: &Path, open_writers: usize, memory_budget: usize) -> PartitionedWriter {
        let options = WriteOptions {
            open_writers,
            memory_budget,
            row_group_rows: 100,
            ..WriteOptions::default()
        };
        PartitionedWriter::new(
            dir,
            "test",
            schema(),
            "BillingPeriodStart",
            "BillingAccountId",
            0,
            options,
        )
        .unwrap()
    }

    /// Every partition file holds exactly its rows, in input order, with the sums the writer
    /// reports, whatever the budget and the number of open writers.
    #[test]
    fn every_partition_is_exact_through_run_files() {
        let input = input();
        let expected = sums_of(&input);
        assert_eq!(expected.len(), 60, "50 accounts, 10 of them in two months");
        for (open, budget) in [(2, 4096), (2, 1), (0, 64 << 10), (16, 64 << 20), (100, 1)] {
            let dir = tempfile::tempdir().unwrap();
            let mut w = writer(dir.path(), open, budget);
            for b in &input {
                w.write(b).unwrap();
            }
            if budget < 1 << 20 && open < 60 {
                assert!(w.runs.len() > 1, "{open} {budget}: spilled");
            }
            let parts = w.finish().unwrap();
            assert_eq!(parts.len(), expected.len());
            let mut got = Sums::new();
            for part in &parts {
                let file = File::open(&part.staged).unwrap();
                let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap()
                    .map(|b| b.unwrap())
                    .collect();
                let sums = sums_of(&batches);
                assert_eq!(sums.len(), 1, "one partition per file");
                let (key, value) = sums.into_iter().next().unwrap();
                let p = &part.partition;
                assert_eq!(key, (p.period.clone(), p.account.clone()));
                assert_eq!((part.rows, part.billed_cost), (value.0, value.1));
                got.insert(key, value);
            }
            assert_eq!(got, expected, "open writers {open}, budget {budget}");
            let left: Vec<String> = files(dir.path())
                .into_iter()
                .filter(|f| !f.starts_with("part-"))
                .collect();
            assert!(left.is_empty(), "run files left: {left:?}");
        }
    }

    #[test]
    fn abandon_and_drop_remove_run_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 2, 1);
        for b in input() {
            w.write(&b).unwrap();
        }
        assert!(files(dir.path()).iter().any(|f| f.starts_with("run-")));
        w.abandon();
        assert_eq!(files(dir.path()), Vec::<String>::new());
        let mut w = writer(dir.path(), 0, 1);
        w.write(&input()[2]).unwrap();
        drop(w);
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn the_partition_limit_rejects() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 2, 1);
        w.options.max_partitions = 10;
        let err = input().iter().try_for_each(|b| w.write(b)).unwrap_err();
        assert!(err.to_string().contains("more than 10 partitions"), "{err}");
        w.abandon();
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }
}
