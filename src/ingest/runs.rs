//! Run files of the partitioned writer ([`super::write`]): rows of many partitions, sorted by
//! partition, in Arrow IPC file format; read back by a merge, one partition at a time, each run
//! file once, front to back.

use std::fs::File;
use std::io::BufReader;
use std::iter::Peekable;
use std::path::PathBuf;

use arrow_array::RecordBatch;
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;
use arrow_select::concat::concat_batches;
use arrow_select::interleave::interleave_record_batch;

use crate::{Error, Result};

/// A run file: rows of the partitions without an open writer, sorted by partition.
pub(super) struct Run {
    pub path: PathBuf,
    /// The partition (the writer's index) of each batch of the file, in file order.
    pub batches: Vec<u32>,
}

/// Rows per batch written to a run file, and per batch handed back by [`Merge::read`].
const RUN_BATCH_ROWS: usize = 8192;

/// Writes `held` (batches with the partition of each row) to `file`, sorted by partition,
/// rows of a partition in their order; returns the partition of each batch written.
pub(super) fn write_run(
    file: File,
    schema: &SchemaRef,
    held: &[(RecordBatch, Vec<u32>)],
) -> Result<Vec<u32>> {
    let mut order: Vec<(u32, usize, usize)> = Vec::new();
    for (b, (_, ids)) in held.iter().enumerate() {
        order.extend(ids.iter().enumerate().map(|(r, &id)| (id, b, r)));
    }
    order.sort_unstable();
    let mut w = FileWriter::try_new_buffered(file, schema)?;
    let sources: Vec<&RecordBatch> = held.iter().map(|(b, _)| b).collect();
    let mut batches = Vec::new();
    let mut indices = Vec::with_capacity(RUN_BATCH_ROWS);
    for chunk in order.chunks(RUN_BATCH_ROWS) {
        indices.clear();
        indices.extend(chunk.iter().map(|&(_, b, r)| (b, r)));
        let sorted = interleave_record_batch(&sources, &indices)?;
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
    Ok(batches)
}

type Reader = (
    FileReader<BufReader<File>>,
    Peekable<std::vec::IntoIter<u32>>,
);

/// Every run file open side by side.
pub(super) struct Merge {
    readers: Vec<Reader>,
    /// The partitions with rows in the run files, ascending.
    pub partitions: Vec<u32>,
}

impl Merge {
    pub fn open(runs: &[Run]) -> Result<Merge> {
        let mut readers = Vec::with_capacity(runs.len());
        let mut partitions = Vec::new();
        for run in runs {
            let file = File::open(&run.path).map_err(|e| Error::io(&run.path, e))?;
            let reader = FileReader::try_new(BufReader::with_capacity(1 << 16, file), None)?;
            if reader.num_batches() != run.batches.len() {
                return Err(Error::rejected(format!(
                    "run file {} holds {} batches, not the {} written",
                    run.path.display(),
                    reader.num_batches(),
                    run.batches.len()
                )));
            }
            partitions.extend_from_slice(&run.batches);
            readers.push((reader, run.batches.clone().into_iter().peekable()));
        }
        partitions.sort_unstable();
        partitions.dedup();
        Ok(Merge {
            readers,
            partitions,
        })
    }

    /// Hands every row of partition `id` to `f`, in batches of about [`RUN_BATCH_ROWS`] rows.
    /// Partitions must be asked for in ascending order (as [`Merge::partitions`] lists them).
    pub fn read(
        &mut self,
        id: u32,
        schema: &SchemaRef,
        mut f: impl FnMut(&RecordBatch) -> Result<()>,
    ) -> Result<()> {
        let mut pending: Vec<RecordBatch> = Vec::new();
        let mut rows = 0;
        for (reader, ids) in &mut self.readers {
            while ids.next_if_eq(&id).is_some() {
                let batch = reader
                    .next()
                    .ok_or_else(|| Error::rejected("a run file ended early"))??;
                rows += batch.num_rows();
                pending.push(batch);
                if rows >= RUN_BATCH_ROWS {
                    f(&concat_batches(schema, pending.iter())?)?;
                    pending.clear();
                    rows = 0;
                }
            }
        }
        if !pending.is_empty() {
            f(&concat_batches(schema, pending.iter())?)?;
        }
        Ok(())
    }
}
