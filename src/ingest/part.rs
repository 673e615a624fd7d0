//! Partition files of the write stage ([`super::write`]): one Parquet file per partition in the
//! run's staging folder, with the rows and BilledCost counted from the batches that go into the
//! Parquet writer itself; and the parallel writing of the partitions held in run files.
//!
//! A reseller's consolidated bill spreads over thousands of partitions, most of them small, so
//! the fixed cost of a Parquet file (a file, a column writer per column with its zstd context,
//! a footer) is most of the work once the bill is read. [`write_spilled`] spreads those files
//! over a few threads (the decoder is idle by then): the merge of the run files stays on one
//! thread and reads each run once, front to back; each partition goes whole to one worker, so
//! its rows keep their order. The rows the merge hands ahead to the workers are bounded
//! ([`RowBudget`]), so memory stays at a few merge windows plus one open Parquet writer per
//! worker.
//!
//! A small partition (fewer than [`PartFiles::small_rows`] rows, most customers of a reseller)
//! is written without compression, with statistics per column chunk only and no offset index
//! (one page per column), and its decimals without dictionary: its pages hold a
//! few hundred values, zstd saves little on them, and creating its contexts (one per column) and
//! the page index was a fifth of the time a consolidated bill took. Measured in the README.
//! Columns whose values do not repeat within the first whole small partitions the merge reads
//! (or are all null there) are written without dictionary too ([`PartFiles::tune_small`]).

use std::collections::HashSet;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter, ArrowWriter};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::ingest::runs::Merge;
use crate::ingest::small_file::{small_format, SmallFormat};
pub(super) use crate::ingest::staged::next_file_number;
pub use crate::ingest::staged::WrittenPart;
use crate::ingest::staged::{add_cost, start_writeback};
use crate::partition::PartitionKey;
use crate::{Error, Result};

/// An open partition file.
pub(super) struct Part {
    pub staged: PathBuf,
    pub writer: ArrowWriter<BufWriter<File>>,
    rows: u64,
    billed_cost: i128,
}

/// What every partition file of a snapshot shares: where it goes, its schema and settings.
pub(super) struct PartFiles {
    pub staging: PathBuf,
    pub schema: SchemaRef,
    options: ArrowWriterOptions,
    /// For a partition written from the run files with fewer rows than `small_rows`.
    small_options: ArrowWriterOptions,
    small_props: WriterProperties,
    /// `small_options` with the dictionary turned off where the snapshot's values hardly repeat
    /// ([`PartFiles::tune_small`]); set once, by the merge, before the first partition is written.
    small_tuned: OnceLock<ArrowWriterOptions>,
    /// The small files' own encoder ([`super::small_file`]) for `small_props`, and for the
    /// tuned settings; `None` inside where it cannot write the schema (parquet-rs does).
    small_format: OnceLock<Option<SmallFormat>>,
    small_tuned_format: OnceLock<Option<SmallFormat>>,
    /// `BILLPIPE_SMALL_FILES_BY_PARQUET_RS` set: parquet-rs writes every file (for comparison).
    small_by_parquet_rs: bool,
    small_rows: u64,
    cost_col: Option<usize>,
}

impl PartFiles {
    /// Partition files in `staging` with `props`, or `small_props` below `small_rows` rows.
    ///
    /// The Parquet schema and the Arrow schema stored in each footer are derived here once, not
    /// by every file's writer: at 20,000 partitions per snapshot, converting the schema and
    /// encoding it (IPC, then base64) was about a tenth of the partition writers' time. The
    /// files are byte for byte what `ArrowWriter::try_new` would write.
    pub fn new(
        staging: PathBuf,
        schema: SchemaRef,
        props: WriterProperties,
        small_props: WriterProperties,
        small_rows: u64,
    ) -> Result<PartFiles> {
        Ok(PartFiles {
            staging,
            cost_col: schema.index_of("BilledCost").ok(),
            options: writer_options(&schema, props)?,
            small_options: writer_options(&schema, small_props.clone())?,
            small_props,
            small_tuned: OnceLock::new(),
            small_format: OnceLock::new(),
            small_tuned_format: OnceLock::new(),
            small_by_parquet_rs: std::env::var_os("BILLPIPE_SMALL_FILES_BY_PARQUET_RS").is_some(),
            small_rows,
            schema,
        })
    }

    /// Turns the dictionary off, in this snapshot's small partitions, for every column whose
    /// values in `sample`'s partitions (row ranges of whole small partitions) are all null or
    /// at least three quarters distinct: ids, line numbers, times of day. A dictionary there
    /// saves no bytes (each value is stored once either way, plus an index per row), while
    /// building it (hashing every value into a table grown per file and column) was about a
    /// tenth of the time a small partition's file took (microbenchmark of a 210-row FOCUS file:
    /// ~310 instead of ~355 µs, same size). Only the first call counts.
    pub fn tune_small(&self, sample: &RecordBatch, partitions: &[(usize, usize)]) -> Result<()> {
        if self.small_tuned.get().is_some() || partitions.is_empty() {
            return Ok(());
        }
        let mut builder = self.small_props.clone().into_builder();
        let mut plain = Vec::new();
        for (c, field) in self.schema.fields().iter().enumerate() {
            let path = ColumnPath::from(field.name().as_str());
            if !self.small_props.dictionary_enabled(&path) {
                continue;
            }
            let counted: Option<Vec<(usize, usize)>> = partitions
                .iter()
                .map(|&(offset, rows)| distinct_values(sample.column(c).as_ref(), offset, rows))
                .collect();
            let Some(counted) = counted else { continue };
            let (distinct, values) = counted
                .iter()
                .fold((0, 0), |(d, n), &(dd, nn)| (d + dd, n + nn));
            if values == 0 || distinct * 4 >= values * 3 {
                builder = builder.set_column_dictionary_enabled(path, false);
                plain.push(field.name().as_str());
            }
        }
        tracing::debug!(
            "small partitions: no dictionary for {} columns {plain:?} ({} partitions sampled)",
            plain.len(),
            partitions.len()
        );
        // Another caller may have won the race; either answer is a valid setting.
        let props = builder.build();
        let options = writer_options(&self.schema, props.clone())?;
        let format = small_format(&self.schema, &props, options.clone());
        if self.small_tuned.set(options).is_ok() {
            let _ = self.small_tuned_format.set(format);
        }
        Ok(())
    }

    /// The encoder of small files, for the settings small files are written with now.
    fn small_encoder(&self) -> Option<&SmallFormat> {
        if self.small_by_parquet_rs {
            return None;
        }
        match self.small_tuned.get() {
            Some(_) => self.small_tuned_format.get()?.as_ref(),
            None => self
                .small_format
                .get_or_init(|| {
                    small_format(&self.schema, &self.small_props, self.small_options.clone())
                })
                .as_ref(),
        }
    }

    /// A new Parquet file in staging.
    pub fn open(&self) -> Result<Part> {
        self.open_with(&self.options, &self.staging)
    }

    /// A new Parquet file in `folder` (inside staging) for a partition of `rows` rows.
    fn open_sized(&self, rows: u64, folder: &Path) -> Result<Part> {
        if rows < self.small_rows {
            let small = self.small_tuned.get().unwrap_or(&self.small_options);
            self.open_with(small, folder)
        } else {
            self.open_with(&self.options, folder)
        }
    }

    fn open_with(&self, options: &ArrowWriterOptions, folder: &Path) -> Result<Part> {
        // Named by a process-wide counter, not by the unit (whose name may be long): the
        // staging folder is this run's alone, and jobs share it.
        let staged = folder.join(format!("part-{}.parquet.tmp", next_file_number()));
        let file = File::create(&staged).map_err(|e| Error::io(&staged, e))?;
        let writer = ArrowWriter::try_new_with_options(
            BufWriter::with_capacity(1 << 20, file),
            self.schema.clone(),
            options.clone(),
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

    /// Writes a batch into a partition file, counting its rows and BilledCost.
    pub fn write(&self, part: &mut Part, batch: &RecordBatch) -> Result<()> {
        part.writer.write(batch)?;
        part.rows += batch.num_rows() as u64;
        add_cost(&mut part.billed_cost, batch, self.cost_col)
    }

    /// A whole partition file from `batches`; nothing is left in staging if it fails.
    fn write_all(
        &self,
        key: PartitionKey,
        rows: u64,
        batches: Receiver<(RecordBatch, Ticket)>,
        folder: &Path,
    ) -> Result<WrittenPart> {
        if rows < self.small_rows && rows <= SmallFormat::MAX_ROWS {
            if let Some(format) = self.small_encoder() {
                return format.write_partition(key, batches, folder, self.cost_col);
            }
        }
        let mut part = self.open_sized(rows, folder)?;
        // Each batch's ticket goes back to the budget once its rows are in the Parquet writer.
        for (batch, _ticket) in batches {
            if let Err(e) = self.write(&mut part, &batch) {
                drop(part.writer);
                let _ = std::fs::remove_file(&part.staged);
                return Err(e);
            }
        }
        close(key, part)
    }
}

/// Writer options for `props`: the Parquet schema and the footer's Arrow schema derived here,
/// once per snapshot (see [`PartFiles::new`]).
fn writer_options(schema: &SchemaRef, mut props: WriterProperties) -> Result<ArrowWriterOptions> {
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(schema)?;
    add_encoded_arrow_schema_to_metadata(schema, &mut props);
    Ok(ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true)
        .with_parquet_schema(parquet_schema))
}

/// Distinct and non-null values among `rows` rows of `array` from `offset`; `None` for a type
/// a Parquet dictionary is not kept for here (booleans, nested types).
fn distinct_values(array: &dyn Array, offset: usize, rows: usize) -> Option<(usize, usize)> {
    let mut seen: HashSet<&[u8]> = HashSet::new();
    let mut values = 0;
    let data = array.to_data();
    match array.data_type() {
        DataType::Utf8 => {
            let text = array.as_string::<i32>();
            for i in (offset..offset + rows).filter(|&i| text.is_valid(i)) {
                values += 1;
                seen.insert(text.value(i).as_bytes());
            }
        }
        DataType::LargeUtf8 => {
            let text = array.as_string::<i64>();
            for i in (offset..offset + rows).filter(|&i| text.is_valid(i)) {
                values += 1;
                seen.insert(text.value(i).as_bytes());
            }
        }
        t => {
            // Fixed-width values (integers, times, decimals) compared as their bytes.
            let width = t.primitive_width()?;
            let bytes = data.buffers().first()?.as_slice();
            for i in (offset..offset + rows).filter(|&i| array.is_valid(i)) {
                let at = (data.offset() + i) * width;
                values += 1;
                seen.insert(bytes.get(at..at + width)?);
            }
        }
    }
    Some((seen.len(), values))
}

/// Closes a partition file; removes it if that fails.
pub(super) fn close(partition: PartitionKey, part: Part) -> Result<WrittenPart> {
    let Part {
        staged,
        mut writer,
        rows,
        billed_cost,
    } = part;
    // `finish` writes the footer and flushes the buffer into the file, reporting its errors;
    // the writer counts the bytes, which saves a `stat` per file.
    let bytes = writer.finish().map(|_| {
        start_writeback(writer.inner().get_ref());
        writer.bytes_written() as u64
    });
    drop(writer);
    match bytes.map_err(Error::from) {
        Ok(bytes) => Ok(WrittenPart {
            partition,
            staged,
            rows,
            billed_cost,
            bytes,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&staged);
            Err(e)
        }
    }
}

/// Writes every partition of `merge` (in its ascending order; `keys` by partition index) to its
/// own file on `workers` threads; returns them in that order. If one fails, the files already written are removed
/// and the first error is returned.
pub(super) fn write_spilled(
    files: &PartFiles,
    merge: &mut Merge,
    keys: &[PartitionKey],
    workers: usize,
) -> Result<Vec<WrittenPart>> {
    // A job is one partition: its id, its rows and the channel its batches arrive on. The
    // queue is not bounded by jobs but by rows (`budget`): the merge runs ahead of the writers by
    // a few windows, so neither waits for the other at every partition. With a queue of one
    // job (a rendezvous), the writers were busy 60 % of the time and the merge 35 %: 20,000
    // customers took 50 s on tmpfs, 39-41 s with the merge free to run ahead.
    // Each worker creates its files in a folder of its own: creating a file locks its folder,
    // and in one shared folder the writers took turns (`rwsem_spin_on_owner` in perf, 4 % of
    // the merge phase on ext4 at 20,000 customers). The folders stay until staging is removed.
    let folders: Vec<PathBuf> = (0..workers.max(1))
        .map(|_| {
            files
                .staging
                .join(format!("writer-{}.tmp", next_file_number()))
        })
        .collect();
    let (jobs, job_queue) = mpsc::channel::<(u32, u64, Receiver<(RecordBatch, Ticket)>)>();
    let budget = RowBudget::new(QUEUED_ROWS);
    let job_queue = Mutex::new(job_queue);
    let results = std::thread::scope(|s| {
        let (done, results) = mpsc::channel::<(u32, Result<WrittenPart>)>();
        let mut started = Ok(());
        for folder in &folders {
            let (job_queue, done) = (&job_queue, done.clone());
            let worker = move || {
                // A folder that cannot be made fails every job this worker takes, like a file
                // that cannot be created.
                let made = std::fs::create_dir(folder);
                loop {
                    let job = match job_queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok((id, rows, batches)) = job else { return };
                    let written = match &made {
                        Ok(()) => files.write_all(keys[id as usize].clone(), rows, batches, folder),
                        Err(e) => Err(Error::io(
                            folder,
                            std::io::Error::new(e.kind(), e.to_string()),
                        )),
                    };
                    if done.send((id, written)).is_err() {
                        return;
                    }
                }
            };
            // Named, so a profile tells the writers from the merge feeding them.
            let spawned = std::thread::Builder::new()
                .name("billpipe-part".into())
                .spawn_scoped(s, worker);
            if let Err(e) = spawned {
                started = Err(Error::io("partition writer thread", e));
                break;
            }
        }
        drop(done);
        // The partition being fed: its id and the sender of its job's batches.
        let mut feeding: Option<(u32, SyncSender<(RecordBatch, Ticket)>)> = None;
        let mut sampled = false;
        let fed = started.and_then(|()| {
            merge.read_batches(|batch, held| {
                if !sampled {
                    // The whole small partitions of the first batch that has any: settings
                    // tuned to the snapshot before its first small file is opened.
                    let mut offset = 0;
                    let mut whole = Vec::new();
                    for &(_, total, rows) in held {
                        if total == rows as u64 && total < files.small_rows {
                            whole.push((offset, rows));
                        }
                        offset += rows;
                    }
                    if !whole.is_empty() {
                        files.tune_small(&batch, &whole)?;
                        sampled = true;
                    }
                }
                let mut offset = 0;
                for &(id, total, rows) in held {
                    let ticket = budget.take(rows)?;
                    let tx = match &feeding {
                        Some((current, tx)) if *current == id => tx,
                        _ => {
                            // The partition before is whole: its writer may close it (and, with
                            // one worker, must, before it can take this one).
                            feeding = None;
                            let (tx, rx) = mpsc::sync_channel::<(RecordBatch, Ticket)>(1);
                            jobs.send((id, total, rx)).map_err(|_| {
                                Error::Internal("every partition writer stopped".into())
                            })?;
                            &feeding.insert((id, tx)).1
                        }
                    };
                    // A worker that failed drops its receiver; its own error is the one reported.
                    tx.send((batch.slice(offset, rows), ticket))
                        .map_err(|_| Error::Internal("a partition writer stopped".into()))?;
                    offset += rows;
                }
                Ok(())
            })
        });
        drop(feeding);
        drop(jobs);
        let results: Vec<(u32, Result<WrittenPart>)> = results.iter().collect();
        (fed, results)
    });
    let (fed, results) = results;
    let mut written = Vec::with_capacity(results.len());
    let mut failed = None;
    for (id, result) in results {
        match result {
            Ok(part) => written.push((id, part)),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(e) = failed.or(fed.err()) {
        for (_, part) in written {
            let _ = std::fs::remove_file(&part.staged);
        }
        return Err(e);
    }
    written.sort_by_key(|(id, _)| *id);
    Ok(written.into_iter().map(|(_, part)| part).collect())
}

/// Threads writing spilled partitions: the cores there are (at most 4: each holds an open
/// Parquet writer), or `BILLPIPE_WRITE_THREADS`.
pub(super) fn default_workers() -> usize {
    std::env::var("BILLPIPE_WRITE_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4)
        })
}

/// Rows the merge may hand to the partition writers ahead of them: four windows of
/// [`Merge::read_batches`]. A slice keeps its whole window alive, and the queued slices cover
/// consecutive rows, so at most five windows (~3 MB each for a FOCUS row of ~1.4 KB) wait.
const QUEUED_ROWS: usize = 4 * crate::ingest::runs::READ_BATCH_ROWS;

/// Rows handed to the partition writers and not yet written. The merge takes a [`Ticket`] for
/// each slice it sends and waits while the budget is spent; the ticket goes back when dropped,
/// i.e. when the writer has written the slice, or when a failed writer drops its channel, so a
/// failure cannot leave the merge waiting for rows that will never be written.
struct RowBudget {
    state: Arc<(Mutex<usize>, Condvar)>,
    limit: usize,
}

/// Rows taken from a [`RowBudget`], given back on drop.
pub(super) struct Ticket {
    state: Arc<(Mutex<usize>, Condvar)>,
    rows: usize,
}

impl RowBudget {
    fn new(limit: usize) -> RowBudget {
        RowBudget {
            state: Arc::new((Mutex::new(0), Condvar::new())),
            limit,
        }
    }

    /// Waits until `rows` more fit (or none are out: a slice larger than the limit still goes).
    fn take(&self, rows: usize) -> Result<Ticket> {
        let (held, freed) = &*self.state;
        let poisoned = |_| Error::Internal("a partition writer panicked".into());
        let mut held = held.lock().map_err(poisoned)?;
        while *held > 0 && *held + rows > self.limit {
            held = freed.wait(held).map_err(poisoned)?;
        }
        *held += rows;
        Ok(Ticket {
            state: Arc::clone(&self.state),
            rows,
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let (held, freed) = &*self.state;
        // A poisoned lock means a thread panicked; the scope re-raises that panic.
        if let Ok(mut held) = held.lock() {
            *held -= self.rows;
            freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_budget_waits_for_rows_to_be_written_and_lets_an_oversized_slice_through() {
        let budget = RowBudget::new(10);
        let first = budget.take(6).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                // 6 + 6 > 10: must wait until the first ticket is given back.
                let second = budget.take(6).unwrap();
                tx.send(()).unwrap();
                drop(second);
            });
            assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
            drop(first);
            assert!(rx.recv_timeout(Duration::from_secs(10)).is_ok());
        });
        // Nothing out: a slice above the limit still goes, alone.
        let big = budget.take(25).unwrap();
        assert_eq!(*budget.state.0.lock().unwrap(), 25);
        drop(big);
        assert_eq!(*budget.state.0.lock().unwrap(), 0);
    }
}
