//! Partition files of the write stage ([`super::write`]): one Parquet file per partition in the
//! run's staging folder, with the rows and BilledCost counted from the batches that go into the
//! Parquet writer itself; and the parallel writing of the partitions held in run files.
//!
//! A reseller's consolidated bill spreads over thousands of partitions, most of them small, so
//! the fixed cost of a Parquet file (a file, 45 column writers with their zstd contexts, a
//! footer) is most of the work once the bill is read. [`write_spilled`] spreads those files
//! over a few threads (the decoder is idle by then): the merge of the run files stays on one
//! thread and reads each run once, front to back; each partition goes whole to one worker, so
//! its rows keep their order. The channels are bounded, so memory stays at a few batches per
//! worker plus one open Parquet writer each.
//!
//! A small partition (fewer than [`PartFiles::small_rows`] rows, most customers of a reseller)
//! is written without compression and with statistics per column chunk only: its pages hold a
//! few hundred values, zstd saves little on them, and creating its contexts (45 per file) and
//! the page index was a fifth of the time a consolidated bill took. Measured in the README.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Mutex;

use arrow_array::{Array, Decimal128Array, RecordBatch};
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::ingest::runs::Merge;
use crate::partition::PartitionKey;
use crate::{Error, Result};

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
    pub props: WriterProperties,
    /// For a partition written from the run files with fewer rows than `small_rows`.
    pub small_props: WriterProperties,
    pub small_rows: u64,
    pub cost_col: Option<usize>,
}

impl PartFiles {
    /// A new Parquet file in staging.
    pub fn open(&self) -> Result<Part> {
        self.open_with(&self.props)
    }

    /// A new Parquet file in staging for a partition of `rows` rows.
    fn open_sized(&self, rows: u64) -> Result<Part> {
        if rows < self.small_rows {
            self.open_with(&self.small_props)
        } else {
            self.open_with(&self.props)
        }
    }

    fn open_with(&self, props: &WriterProperties) -> Result<Part> {
        // Named by a process-wide counter, not by the unit (whose name may be long): the
        // staging folder is this run's alone, and jobs share it.
        let staged = self
            .staging
            .join(format!("part-{}.parquet.tmp", next_file_number()));
        let file = File::create(&staged).map_err(|e| Error::io(&staged, e))?;
        let writer = ArrowWriter::try_new(
            BufWriter::with_capacity(1 << 20, file),
            self.schema.clone(),
            Some(props.clone()),
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
        let cost = match self.cost_col {
            Some(c) => sum_decimal(batch.column(c).as_any().downcast_ref::<Decimal128Array>())?,
            None => 0,
        };
        part.writer.write(batch)?;
        part.rows += batch.num_rows() as u64;
        part.billed_cost = part
            .billed_cost
            .checked_add(cost)
            .ok_or_else(|| Error::rejected("BilledCost sum overflows"))?;
        Ok(())
    }

    /// A whole partition file from `batches`; nothing is left in staging if it fails.
    fn write_all(
        &self,
        key: PartitionKey,
        rows: u64,
        batches: Receiver<RecordBatch>,
    ) -> Result<WrittenPart> {
        let mut part = self.open_sized(rows)?;
        for batch in batches {
            if let Err(e) = self.write(&mut part, &batch) {
                drop(part.writer);
                let _ = std::fs::remove_file(&part.staged);
                return Err(e);
            }
        }
        close(key, part)
    }
}

pub(super) fn next_file_number() -> u64 {
    static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Closes a partition file; removes it if that fails.
pub(super) fn close(partition: PartitionKey, part: Part) -> Result<WrittenPart> {
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
            .ok_or_else(|| Error::rejected("BilledCost sum overflows"))?;
    }
    Ok(sum)
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
    // A job is one partition: its id and the channel its batches arrive on.
    let (jobs, job_queue) = mpsc::sync_channel::<(u32, u64, Receiver<RecordBatch>)>(0);
    let job_queue = Mutex::new(job_queue);
    let results = std::thread::scope(|s| {
        let (done, results) = mpsc::channel::<(u32, Result<WrittenPart>)>();
        let mut started = Ok(());
        for _ in 0..workers.max(1) {
            let (job_queue, done) = (&job_queue, done.clone());
            let worker = move || loop {
                let job = match job_queue.lock() {
                    Ok(queue) => queue.recv(),
                    Err(_) => return,
                };
                let Ok((id, rows, batches)) = job else { return };
                let written = files.write_all(keys[id as usize].clone(), rows, batches);
                if done.send((id, written)).is_err() {
                    return;
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
        let mut feeding: Option<(u32, SyncSender<RecordBatch>)> = None;
        let fed = started.and_then(|()| {
            merge.read_batches(|batch, held| {
                let mut offset = 0;
                for &(id, total, rows) in held {
                    let tx = match &feeding {
                        Some((current, tx)) if *current == id => tx,
                        _ => {
                            // The partition before is whole: its writer may close it (and, with
                            // one worker, must, before it can take this one).
                            feeding = None;
                            let (tx, rx) = mpsc::sync_channel::<RecordBatch>(1);
                            jobs.send((id, total, rx)).map_err(|_| {
                                Error::Internal("every partition writer stopped".into())
                            })?;
                            &feeding.insert((id, tx)).1
                        }
                    };
                    // A worker that failed drops its receiver; its own error is the one reported.
                    tx.send(batch.slice(offset, rows))
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
