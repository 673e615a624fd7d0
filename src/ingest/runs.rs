//! Run files of the partitioned writer ([`super::write`]): rows of many partitions, sorted by
//! partition, in Arrow IPC file format; read back by a merge, one partition at a time, each run
//! file once, front to back.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::iter::Peekable;
use std::path::PathBuf;

use arrow_array::RecordBatch;
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;
use arrow_select::interleave::interleave_record_batch;

use crate::{Error, Result};

/// A run file: rows of the partitions without an open writer, sorted by partition.
pub(super) struct Run {
    pub path: PathBuf,
    /// Each batch of the file, in file order: the partitions it holds and their rows, in row
    /// order (a batch holds many small partitions, or part of a large one).
    pub batches: Vec<Vec<(u32, u32)>>,
}

/// Rows per batch written to a run file. Batches are cut by rows, not by partition: a
/// reseller's spill holds thousands of partitions of a few dozen rows each, and one IPC batch
/// per partition cost more in message headers and buffer padding than the rows themselves.
/// The merge keeps one batch per run file in memory, so this stays small.
const RUN_BATCH_ROWS: usize = 1024;

/// Rows per batch handed back by [`Merge::read_batches`]: enough partitions of a reseller
/// (a few dozen rows each) per `interleave` call that its setup per column and run file is
/// shared; small, because every partition writer holds a slice, and so the whole batch, until
/// its file is written (8,192 rows was no faster and 6 MiB more peak RSS at 20,000 customers).
pub(super) const READ_BATCH_ROWS: usize = 2048;

/// Writes `held` (batches with the partition of each row) to `file`, sorted by partition,
/// rows of a partition in their order; returns what each batch written holds.
pub(super) fn write_run(
    file: File,
    schema: &SchemaRef,
    held: &[(RecordBatch, Vec<u32>)],
) -> Result<Vec<Vec<(u32, u32)>>> {
    let mut order: Vec<(u32, usize, usize)> = Vec::new();
    for (b, (_, ids)) in held.iter().enumerate() {
        order.extend(ids.iter().enumerate().map(|(r, &id)| (id, b, r)));
    }
    order.sort_unstable();
    // A megabyte of buffer: `try_new_buffered`'s 8 KiB made a write call per 4-16 KiB message,
    // ~240,000 of them for a 20,000-customer bill.
    let mut w = FileWriter::try_new(BufWriter::with_capacity(1 << 20, file), schema)?;
    let sources: Vec<&RecordBatch> = held.iter().map(|(b, _)| b).collect();
    let mut batches = Vec::new();
    let mut indices = Vec::with_capacity(RUN_BATCH_ROWS);
    for chunk in order.chunks(RUN_BATCH_ROWS) {
        indices.clear();
        indices.extend(chunk.iter().map(|&(_, b, r)| (b, r)));
        w.write(&interleave_record_batch(&sources, &indices)?)?;
        let mut segments: Vec<(u32, u32)> = Vec::new();
        for &(id, _, _) in chunk {
            match segments.last_mut() {
                Some((last, rows)) if *last == id => *rows += 1,
                _ => segments.push((id, 1)),
            }
        }
        batches.push(segments);
    }
    w.finish()?;
    Ok(batches)
}

/// Rows of one partition in a run file: `rows` rows from row `offset` of batch `batch`.
struct Segment {
    batch: usize,
    offset: usize,
    id: u32,
    rows: usize,
}

/// One run file being read front to back, its current batch in memory.
struct Cursor {
    reader: FileReader<BufReader<File>>,
    segments: Peekable<std::vec::IntoIter<Segment>>,
    loaded: Option<(usize, RecordBatch)>,
}

impl Cursor {
    /// Batch `n` of the file; batches are asked for in ascending order.
    fn batch(&mut self, n: usize) -> Result<RecordBatch> {
        loop {
            let next = match &self.loaded {
                Some((k, batch)) if *k == n => return Ok(batch.clone()),
                Some((k, _)) => k + 1,
                None => 0,
            };
            let batch = self
                .reader
                .next()
                .ok_or_else(|| Error::rejected("a run file ended early"))??;
            self.loaded = Some((next, batch));
        }
    }
}

/// Every run file open side by side.
pub(super) struct Merge {
    cursors: Vec<Cursor>,
    /// The partitions with rows in the run files, ascending, with their rows.
    partitions: Vec<(u32, u64)>,
}

impl Merge {
    pub fn open(runs: &[Run]) -> Result<Merge> {
        let mut cursors = Vec::with_capacity(runs.len());
        let mut partitions: Vec<(u32, u64)> = Vec::new();
        for run in runs {
            let file = File::open(&run.path).map_err(|e| Error::io(&run.path, e))?;
            let reader = FileReader::try_new(BufReader::with_capacity(1 << 16, file), None)?;
            // SAFETY: a run file is written by this process moments before (`write_run`), in
            // the run's own staging folder, from arrays Arrow had already validated; checking
            // every string's UTF-8 and every offset again when reading it back was a fifth of
            // the merge thread's time at 20,000 customers. The flag's documentation names this
            // use: files "written by the same process that created the files".
            let reader = unsafe { reader.with_skip_validation(true) };
            if reader.num_batches() != run.batches.len() {
                return Err(Error::rejected(format!(
                    "run file {} holds {} batches, not the {} written",
                    run.path.display(),
                    reader.num_batches(),
                    run.batches.len()
                )));
            }
            let mut segments = Vec::new();
            for (batch, held) in run.batches.iter().enumerate() {
                let mut offset = 0;
                for &(id, rows) in held {
                    let rows = rows as usize;
                    segments.push(Segment {
                        batch,
                        offset,
                        id,
                        rows,
                    });
                    partitions.push((id, rows as u64));
                    offset += rows;
                }
            }
            cursors.push(Cursor {
                reader,
                segments: segments.into_iter().peekable(),
                loaded: None,
            });
        }
        partitions.sort_unstable_by_key(|&(id, _)| id);
        partitions.dedup_by(|next, first| {
            let same = next.0 == first.0;
            if same {
                first.1 += next.1;
            }
            same
        });
        Ok(Merge {
            cursors,
            partitions,
        })
    }

    /// Hands every row of the run files to `f`, partition after partition (ascending), in
    /// batches of about [`READ_BATCH_ROWS`] rows, each with the partitions it holds in row order
    /// as (partition, its rows in all, its rows in this batch); a partition of more rows goes on
    /// in the next batch.
    ///
    /// A reseller's partition has a few rows in each of many run files. Its rows are gathered
    /// from the run batches in one pass (`interleave`), and many partitions in one call: a call
    /// per partition cost a setup per column per run file for a few rows each, and was a fifth
    /// of all the work a consolidated bill took (measured in the README).
    pub fn read_batches(
        &mut self,
        mut f: impl FnMut(RecordBatch, &[(u32, u64, usize)]) -> Result<()>,
    ) -> Result<()> {
        let mut gather = Gather::new(self.cursors.len());
        let mut held: Vec<(u32, u64, usize)> = Vec::new();
        for &(id, total) in &self.partitions {
            for (c, cursor) in self.cursors.iter_mut().enumerate() {
                while let Some(seg) = cursor.segments.next_if(|s| s.id == id) {
                    let source = match gather.current[c] {
                        Some((batch, source)) if batch == seg.batch => source,
                        _ => gather.add(c, seg.batch, cursor.batch(seg.batch)?),
                    };
                    gather.rows(source, seg.offset, seg.rows);
                    match held.last_mut() {
                        Some((last, _, rows)) if *last == id => *rows += seg.rows,
                        _ => held.push((id, total, seg.rows)),
                    }
                    if gather.indices.len() >= READ_BATCH_ROWS {
                        f(gather.take()?, &held)?;
                        held.clear();
                    }
                }
            }
        }
        if !gather.indices.is_empty() {
            f(gather.take()?, &held)?;
        }
        Ok(())
    }
}

/// Rows picked from a few run batches, to be handed on as one batch.
struct Gather {
    sources: Vec<RecordBatch>,
    indices: Vec<(usize, usize)>,
    /// By cursor: the batch number it has in `sources`, and where.
    current: Vec<Option<(usize, usize)>>,
}

impl Gather {
    fn new(cursors: usize) -> Gather {
        Gather {
            sources: Vec::new(),
            indices: Vec::new(),
            current: vec![None; cursors],
        }
    }

    fn add(&mut self, cursor: usize, number: usize, batch: RecordBatch) -> usize {
        self.sources.push(batch);
        let source = self.sources.len() - 1;
        self.current[cursor] = Some((number, source));
        source
    }

    fn rows(&mut self, source: usize, offset: usize, rows: usize) {
        self.indices
            .extend((offset..offset + rows).map(|row| (source, row)));
    }

    /// The rows gathered as one batch (a slice when they are one run of one batch); empties.
    fn take(&mut self) -> Result<RecordBatch> {
        self.current.iter_mut().for_each(|c| *c = None);
        let sources = std::mem::take(&mut self.sources);
        let indices = &self.indices;
        let gathered = match (sources.as_slice(), indices.first()) {
            ([only], Some(&(_, first)))
                if indices
                    .iter()
                    .enumerate()
                    .all(|(i, &(_, r))| r == first + i) =>
            {
                only.slice(first, indices.len())
            }
            _ => {
                let refs: Vec<&RecordBatch> = sources.iter().collect();
                interleave_record_batch(&refs, indices)?
            }
        };
        self.indices.clear();
        Ok(gathered)
    }
}
