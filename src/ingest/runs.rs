//! Run files of the partitioned writer ([`super::write`]): rows of many partitions, sorted by
//! partition, in Arrow IPC file format; read back by a merge, one partition at a time, each run
//! file once, front to back.
//!
//! A column with one value on every row of a run (the object key in `x_SourceKey`, the
//! provider, the currency, the billing period) or no value at all (the FOCUS columns a
//! provider leaves empty) is not written: the run remembers the value and the merge puts it
//! back. In a Tencent consolidated bill that is 31 of 69 columns and three quarters of the
//! bytes a row takes in a run file (`x_SourceKey` alone, ~125 bytes, was a quarter).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::iter::Peekable;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, Scalar, UInt32Array};
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;
use arrow_select::interleave::{interleave, interleave_record_batch};
use arrow_select::take::take;

use crate::{Error, Result};

/// A run file: rows of the partitions without an open writer, sorted by partition.
pub(super) struct Run {
    pub path: PathBuf,
    /// Each batch of the file, in file order: the partitions it holds and their rows, in row
    /// order (a batch holds many small partitions, or part of a large one).
    pub batches: Vec<RunBatch>,
    /// Where each column of the snapshot's schema is (see the module docs).
    pub columns: RunColumns,
}

/// What one batch of a run file holds: (partition, rows) in row order.
pub(super) type RunBatch = Vec<(u32, u32)>;

/// By column of the snapshot's schema: its place in the run file, or its one value.
pub(super) type RunColumns = Arc<[RunColumn]>;

#[derive(Debug, Clone)]
pub(super) enum RunColumn {
    /// Written, as this column of the file.
    Stored(usize),
    /// Not written: every row of the run has this value (a one-row array; null for a column
    /// without values).
    Constant(ArrayRef),
}

/// Which columns of `held` have one value on every row (see the module docs).
fn run_columns(schema: &SchemaRef, held: &[(RecordBatch, Vec<u32>)]) -> RunColumns {
    let mut stored = 0;
    let mut columns: Vec<RunColumn> = (0..schema.fields().len())
        .map(|c| match one_value(held, c) {
            Some(value) => RunColumn::Constant(value),
            None => {
                stored += 1;
                RunColumn::Stored(stored - 1)
            }
        })
        .collect();
    // An IPC batch without columns would not say how many rows it has.
    if stored == 0 && !columns.is_empty() {
        columns[0] = RunColumn::Stored(0);
    }
    columns.into()
}

/// Column `c`'s value if every row of `held` has the same one (or none), as a one-row array
/// of its own (a slice would keep the whole held batch alive through the merge).
fn one_value(held: &[(RecordBatch, Vec<u32>)], c: usize) -> Option<ArrayRef> {
    let first = held.first()?.0.column(c);
    if first.is_empty() {
        return None;
    }
    let value = take(first.as_ref(), &UInt32Array::from(vec![0u32]), None).ok()?;
    let scalar = Scalar::new(value.clone());
    for (batch, _) in held {
        let column = batch.column(c);
        if value.is_null(0) {
            if column.null_count() != column.len() {
                return None;
            }
            continue;
        }
        if column.null_count() > 0 {
            return None;
        }
        // A few rows first: a column whose values differ nearly always shows it there, and is
        // then not compared whole. Types without an equality kernel are simply written.
        let head = column.slice(0, column.len().min(64));
        for part in [head, column.clone()] {
            let same = arrow_ord::cmp::eq(&part, &scalar).ok()?;
            if same.true_count() != part.len() {
                return None;
            }
        }
    }
    Some(value)
}

/// `value` (one row) repeated on `rows` rows.
fn repeated(value: &ArrayRef, rows: usize) -> Result<ArrayRef> {
    Ok(take(
        value.as_ref(),
        &UInt32Array::from(vec![0u32; rows]),
        None,
    )?)
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
/// rows of a partition in their order, without its columns of one value; returns what each
/// batch written holds, and where each column is.
pub(super) fn write_run(
    file: File,
    schema: &SchemaRef,
    held: &[(RecordBatch, Vec<u32>)],
) -> Result<(Vec<RunBatch>, RunColumns)> {
    let columns = run_columns(schema, held);
    let stored: Vec<usize> = columns
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c, RunColumn::Stored(_)))
        .map(|(i, _)| i)
        .collect();
    let mut order: Vec<(u32, usize, usize)> = Vec::new();
    for (b, (_, ids)) in held.iter().enumerate() {
        order.extend(ids.iter().enumerate().map(|(r, &id)| (id, b, r)));
    }
    order.sort_unstable();
    let sources: Vec<RecordBatch> = held
        .iter()
        .map(|(b, _)| b.project(&stored))
        .collect::<std::result::Result<_, _>>()?;
    let sources: Vec<&RecordBatch> = sources.iter().collect();
    // A megabyte of buffer: `try_new_buffered`'s 8 KiB made a write call per 4-16 KiB message,
    // ~240,000 of them for a 20,000-customer bill.
    let schema = Arc::new(schema.project(&stored)?);
    let mut w = FileWriter::try_new(BufWriter::with_capacity(1 << 20, file), &schema)?;
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
    Ok((batches, columns))
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
    columns: RunColumns,
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
    /// The snapshot's schema, the batches handed on have.
    schema: SchemaRef,
}

impl Merge {
    pub fn open(runs: &[Run], schema: &SchemaRef) -> Result<Merge> {
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
                columns: run.columns.clone(),
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
            schema: schema.clone(),
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
                        _ => gather.add(c, seg.batch, cursor.batch(seg.batch)?, &cursor.columns),
                    };
                    gather.rows(source, seg.offset, seg.rows);
                    match held.last_mut() {
                        Some((last, _, rows)) if *last == id => *rows += seg.rows,
                        _ => held.push((id, total, seg.rows)),
                    }
                    if gather.indices.len() >= READ_BATCH_ROWS {
                        f(gather.take(&self.schema)?, &held)?;
                        held.clear();
                    }
                }
            }
        }
        if !gather.indices.is_empty() {
            f(gather.take(&self.schema)?, &held)?;
        }
        Ok(())
    }
}

/// Rows picked from a few run batches, to be handed on as one batch.
struct Gather {
    /// Run batches as stored, with where their run keeps each column.
    sources: Vec<(RecordBatch, RunColumns)>,
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

    fn add(
        &mut self,
        cursor: usize,
        number: usize,
        batch: RecordBatch,
        columns: &RunColumns,
    ) -> usize {
        self.sources.push((batch, columns.clone()));
        let source = self.sources.len() - 1;
        self.current[cursor] = Some((number, source));
        source
    }

    fn rows(&mut self, source: usize, offset: usize, rows: usize) {
        self.indices
            .extend((offset..offset + rows).map(|row| (source, row)));
    }

    /// The rows gathered as one batch of `schema`; empties.
    fn take(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        self.current.iter_mut().for_each(|c| *c = None);
        let sources = std::mem::take(&mut self.sources);
        let indices = &self.indices;
        // One run of one batch is a slice of it.
        let slice = match (sources.as_slice(), indices.first()) {
            ([_], Some(&(_, first)))
                if indices
                    .iter()
                    .enumerate()
                    .all(|(i, &(_, r))| r == first + i) =>
            {
                Some(first)
            }
            _ => None,
        };
        let columns = (0..schema.fields().len())
            .map(|c| gather_column(&sources, c, indices, slice))
            .collect::<Result<Vec<_>>>()?;
        self.indices.clear();
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// Column `c` of the rows `indices` picks from `sources` (rows `slice..` of the only source,
/// when it is one run of it).
fn gather_column(
    sources: &[(RecordBatch, RunColumns)],
    c: usize,
    indices: &[(usize, usize)],
    slice: Option<usize>,
) -> Result<ArrayRef> {
    // One value in every source (a bill of one object): made once, for all the rows.
    if let Some((_, columns)) = sources.first() {
        if let RunColumn::Constant(value) = &columns[c] {
            let same = sources.iter().all(|(_, cols)| {
                matches!(&cols[c], RunColumn::Constant(v) if v.to_data() == value.to_data())
            });
            if same {
                return repeated(value, indices.len());
            }
        }
    }
    let arrays = sources
        .iter()
        .map(|(batch, columns)| match &columns[c] {
            RunColumn::Stored(s) => Ok(batch.column(*s).clone()),
            RunColumn::Constant(value) => repeated(value, batch.num_rows()),
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    if let (Some(first), Some(array)) = (slice, arrays.first()) {
        return Ok(array.slice(first, indices.len()));
    }
    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
    Ok(interleave(&refs, indices)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    /// Two runs whose one-value columns differ (another object's key, a column empty in one
    /// and filled in the other) merge back to exactly the rows written, partition by partition.
    #[test]
    fn columns_of_one_value_come_back_from_the_merge() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("line", DataType::Int64, false),
            Field::new("key", DataType::Utf8, true),
            Field::new("empty", DataType::Int64, true),
        ]));
        let batch = |lines: Vec<i64>, key: &str, empty: Option<i64>| {
            let n = lines.len();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(lines)),
                    Arc::new(StringArray::from(vec![key; n])),
                    Arc::new(Int64Array::from(vec![empty; n])),
                ],
            )
            .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Vec::new();
        let held_sets = [
            vec![(batch(vec![1, 2, 3, 4], "a.zip", None), vec![2, 1, 2, 1])],
            vec![(batch(vec![5, 6, 7], "b.zip", Some(9)), vec![1, 2, 2])],
        ];
        for (i, held) in held_sets.iter().enumerate() {
            let path = dir.path().join(format!("run-{i}"));
            let (batches, columns) =
                write_run(File::create(&path).unwrap(), &schema, held).unwrap();
            assert!(columns
                .iter()
                .skip(1)
                .all(|c| matches!(c, RunColumn::Constant(_))));
            runs.push(Run {
                path,
                batches,
                columns,
            });
        }
        let mut merge = Merge::open(&runs, &schema).unwrap();
        let mut rows: Vec<(u32, i64, String, Option<i64>)> = Vec::new();
        merge
            .read_batches(|batch, held| {
                let lines = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                let keys = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                let empty = batch
                    .column(2)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                let ids = held
                    .iter()
                    .flat_map(|&(id, _, n)| std::iter::repeat_n(id, n));
                for (r, id) in ids.enumerate() {
                    let e = (!empty.is_null(r)).then(|| empty.value(r));
                    rows.push((id, lines.value(r), keys.value(r).to_string(), e));
                }
                Ok(())
            })
            .unwrap();
        let want: Vec<(u32, i64, String, Option<i64>)> = vec![
            (1, 2, "a.zip".into(), None),
            (1, 4, "a.zip".into(), None),
            (1, 5, "b.zip".into(), Some(9)),
            (2, 1, "a.zip".into(), None),
            (2, 3, "a.zip".into(), None),
            (2, 6, "b.zip".into(), Some(9)),
            (2, 7, "b.zip".into(), Some(9)),
        ];
        assert_eq!(rows, want);
    }
}
