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
//! Partition values come from the rows; [`crate::partition`] makes them safe path segments
//! (Hive-escaped, capped with a hash when too long). Two values of one snapshot that would share
//! a folder are rejected, never merged.
//!
//! Memory does not grow with the number of partitions nor with the file. The first
//! [`WriteOptions::open_writers`] partitions of a snapshot stream into their own Parquet writer
//! (a bill of one account, or of a few, is written as it is read, as fast as ever); if those
//! writers together hold more than [`WriteOptions::memory_budget`] in unfinished row groups, the
//! largest closes its row group early. Rows of any further partition are held in memory, and
//! whenever they pass the same budget they are sorted by partition and spilled to a run file in
//! the staging folder (Arrow IPC, batches in partition order; the writer keeps which partition
//! each batch holds). `finish` then reads every run file once, front to back, side by side (a
//! merge: each run is in partition order) and hands each partition whole to one of
//! [`WriteOptions::write_threads`] workers (`part::write_spilled`), so at most that many extra
//! Parquet writers are open. Run files are removed at the end, on `abandon`, and when
//! the writer is dropped. Rows and BilledCost of every file are summed from the batches that
//! go into the Parquet writer itself, after the spill and read-back, so `run`'s check of these
//! sums against the decoder's tally catches a row lost or doubled anywhere on the way.
//!
//! A snapshot may spread over at most [`WriteOptions::max_partitions`] partitions (100,000: a
//! safety limit against a wrong partition column, not a memory bound).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use arrow_array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array};
use arrow_schema::{DataType, SchemaRef};
use arrow_select::take::take_record_batch;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::ingest::decode::year_month_from_days;
pub use crate::ingest::part::WrittenPart;
use crate::ingest::part::{
    close, default_workers, next_file_number, write_spilled, Part, PartFiles,
};
use crate::ingest::runs::{write_run, Merge, Run};
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
    /// Threads writing the partitions held in run files when the snapshot has been read.
    pub write_threads: usize,
    /// A partition from the run files with fewer rows is written uncompressed, with statistics
    /// per column chunk only (`part`'s docs say why); 0 turns this off.
    pub small_partition_rows: u64,
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
            write_threads: default_workers(),
            small_partition_rows: env("BILLPIPE_SMALL_PARTITION_ROWS", 2_000) as u64,
        }
    }
}

struct Partition {
    key: PartitionKey,
    /// Its streaming writer; `None` for a partition whose rows go through run files.
    direct: Option<Part>,
}

/// Writes the batches of one snapshot, split by partition.
pub struct PartitionedWriter {
    files: PartFiles,
    stem: String,
    options: WriteOptions,
    period_col: usize,
    account_col: usize,
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
        // Decimals (costs, prices, quantities) of a small partition are written without a
        // dictionary: nearly every value differs, so the files are no larger (212 MB either way
        // for 3,000 customers), and the dictionary of a FIXED_LEN_BYTE_ARRAY column costs a
        // reference-counted buffer per value: ~3 % of the CPU of a consolidated bill.
        let mut small_builder = props
            .clone()
            .into_builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            // One page per column: an offset index would only point at it. Without: 942 instead
            // of 1,020 MB and ~5 % less CPU for 20,000 customers (two alternating runs each).
            .set_offset_index_disabled(true);
        // Their text columns carry no statistics: min and max of a string cost two byte
        // comparisons per value, ~7 % of the CPU of a 20,000-customer bill (three alternating
        // runs on tmpfs), and prune nothing worth having in a file of at most a few thousand
        // rows whose footer a reader opens anyway. Times, decimals and integers keep theirs.
        for field in schema.fields() {
            let column = ColumnPath::from(field.name().as_str());
            match field.data_type() {
                DataType::Decimal128(..) => {
                    small_builder = small_builder.set_column_dictionary_enabled(column, false)
                }
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    small_builder =
                        small_builder.set_column_statistics_enabled(column, EnabledStatistics::None)
                }
                _ => {}
            }
        }
        let small_props = small_builder.build();
        Ok(PartitionedWriter {
            stem: stem.to_string(),
            period_col: idx(period_column)?,
            account_col: idx(account_column)?,
            files: PartFiles::new(
                staging.to_path_buf(),
                schema,
                props,
                small_props,
                options.small_partition_rows,
            )?,
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
            return Err(Error::rejected(format!(
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
            return Err(Error::rejected(format!(
                "partition values {:?} and {:?} would share the folder {dir}",
                self.parts[other as usize].key.account, key.account
            )));
        }
        let direct = if self.open < self.options.open_writers {
            self.open += 1;
            tracing::debug!("{}: streaming partition {dir}", self.stem);
            Some(self.files.open()?)
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
        let part = self.parts[id as usize]
            .direct
            .as_mut()
            .ok_or_else(|| Error::Config("partition writer vanished".into()))?;
        self.files.write(part, batch)?;
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
        let path = self
            .files
            .staging
            .join(format!("run-{}.arrow.tmp", next_file_number()));
        tracing::debug!(
            "{}: spilling {} batches ({} bytes) to {}",
            self.stem,
            self.held.len(),
            self.held_bytes,
            path.display()
        );
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        // Registered at once, so `abandon` and `drop` remove it even if writing fails.
        self.runs.push(Run {
            path,
            batches: Vec::new(),
            columns: Vec::new().into(),
        });
        let (batches, columns) = write_run(file, &self.files.schema, &self.held)?;
        if let Some(run) = self.runs.last_mut() {
            run.batches = batches;
            run.columns = columns;
        }
        self.held.clear();
        self.held_bytes = 0;
        Ok(())
    }

    /// Closes every partition file and returns them, still in staging. Partitions without an
    /// open writer are written now from the run files, on a few threads.
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
        let started = std::time::Instant::now();
        self.spill()?;
        for p in &mut self.parts {
            if let Some(part) = p.direct.take() {
                out.push(close(p.key.clone(), part)?);
            }
        }
        let closed = started.elapsed().as_secs_f64();
        let mut merge = Merge::open(&self.runs, &self.files.schema)?;
        // Every direct writer is closed by now, so the keys can go to other threads.
        let keys: Vec<PartitionKey> = self.parts.iter().map(|p| p.key.clone()).collect();
        out.extend(write_spilled(
            &self.files,
            &mut merge,
            &keys,
            self.options.write_threads,
        )?);
        tracing::debug!(
            "{}: {} partitions streamed, closed in {closed:.3} s; {} from {} run files in {:.3} s",
            self.stem,
            self.open,
            self.parts.len() - self.open,
            self.runs.len(),
            started.elapsed().as_secs_f64() - closed
        );
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

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
