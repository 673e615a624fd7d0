//! Reading the lake's Parquet files: only the needed columns, money summed exactly as `i128`
//! at the file's decimal scale, nulls counted as nulls, per (currency, grouping value).

use std::collections::{BTreeMap, HashMap};

use arrow_array::cast::AsArray;
use arrow_array::types::Decimal128Type;
use arrow_array::{Array, Decimal128Array, GenericStringArray, RecordBatch, StringViewArray};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::reader::ChunkReader;

use super::{overflow, Sums, BILLED, CURRENCY, EFFECTIVE};
use crate::{Error, Result};

/// A string column of a batch, whichever string layout the file uses; null when missing.
enum StrCol<'a> {
    Utf8(&'a GenericStringArray<i32>),
    Large(&'a GenericStringArray<i64>),
    View(&'a StringViewArray),
    Null,
}

impl<'a> StrCol<'a> {
    fn of(batch: &'a RecordBatch, name: &str, rel: &str) -> Result<StrCol<'a>> {
        let Some(col) = batch.column_by_name(name) else {
            return Ok(StrCol::Null);
        };
        match col.data_type() {
            DataType::Utf8 => col.as_string_opt::<i32>().map(StrCol::Utf8),
            DataType::LargeUtf8 => col.as_string_opt::<i64>().map(StrCol::Large),
            DataType::Utf8View => col.as_string_view_opt().map(StrCol::View),
            DataType::Null => Some(StrCol::Null),
            _ => None,
        }
        .ok_or_else(|| wrong_type(rel, name, col.data_type(), "a string"))
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            StrCol::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::Large(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::View(a) => a.is_valid(i).then(|| a.value(i)),
            StrCol::Null => None,
        }
    }
}

/// A decimal column of a batch with its scale; null when missing.
fn decimal_col<'a>(
    batch: &'a RecordBatch,
    name: &str,
    rel: &str,
) -> Result<Option<(&'a Decimal128Array, i8)>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    match col.data_type() {
        DataType::Decimal128(_, scale) => col
            .as_primitive_opt::<Decimal128Type>()
            .map(|a| Some((a, *scale)))
            .ok_or_else(|| wrong_type(rel, name, col.data_type(), "a decimal")),
        DataType::Null => Ok(None),
        other => Err(wrong_type(rel, name, other, "Decimal128")),
    }
}

fn wrong_type(rel: &str, column: &str, found: &DataType, expected: &str) -> Error {
    Error::Lake {
        path: rel.to_string(),
        message: format!("column {column} is {found}, not {expected}"),
    }
}

type FileSums = BTreeMap<(Option<String>, Option<String>), Sums>;

/// Sums one Parquet file per (currency, group value), reading only the columns needed.
/// The first BillingAccountId of a file (for partition folders whose name is capped).
pub(super) fn first_account<R: ChunkReader + 'static>(
    reader: R,
    rel: &str,
) -> Result<Option<String>> {
    let unreadable = |e: parquet::errors::ParquetError| Error::Lake {
        path: rel.to_string(),
        message: format!("not readable as Parquet: {e}"),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(reader).map_err(unreadable)?;
    let Some(root) = builder
        .schema()
        .fields()
        .iter()
        .position(|f| f.name() == "BillingAccountId")
    else {
        return Ok(None);
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [root]);
    for batch in builder.with_projection(mask).build().map_err(unreadable)? {
        let batch = batch.map_err(|e| Error::Lake {
            path: rel.to_string(),
            message: format!("not readable as Parquet: {e}"),
        })?;
        let column = StrCol::of(&batch, "BillingAccountId", rel)?;
        if let Some(v) = (0..batch.num_rows()).find_map(|i| column.get(i)) {
            return Ok(Some(v.to_string()));
        }
    }
    Ok(None)
}

pub(super) fn sum_parquet<R: ChunkReader + 'static>(
    reader: R,
    rel: &str,
    dim: Option<&str>,
) -> Result<FileSums> {
    let unreadable = |e: parquet::errors::ParquetError| Error::Lake {
        path: rel.to_string(),
        message: format!("not readable as Parquet: {e}"),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(reader).map_err(unreadable)?;
    let wanted: Vec<&str> = [BILLED, EFFECTIVE, CURRENCY]
        .into_iter()
        .chain(dim)
        .collect();
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| wanted.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let batches = builder.with_projection(mask).build().map_err(unreadable)?;

    let mut out = FileSums::new();
    for batch in batches {
        let batch = batch.map_err(|e| Error::Lake {
            path: rel.to_string(),
            message: format!("not readable as Parquet: {e}"),
        })?;
        sum_batch(&batch, rel, dim, &mut out)?;
    }
    if out.is_empty() {
        // A file without rows still says which snapshot is there.
        out.insert((None, None), Sums::default());
    }
    Ok(out)
}

fn sum_batch(batch: &RecordBatch, rel: &str, dim: Option<&str>, out: &mut FileSums) -> Result<()> {
    let billed = decimal_col(batch, BILLED, rel)?;
    let effective = decimal_col(batch, EFFECTIVE, rel)?;
    let currency = StrCol::of(batch, CURRENCY, rel)?;
    let group = match dim {
        Some(name) => StrCol::of(batch, name, rel)?,
        None => StrCol::Null,
    };
    // Group indexes for this batch, keyed by borrowed values; owned keys only once per group.
    type Key<'a> = (Option<&'a str>, Option<&'a str>);
    let mut index: HashMap<Key, usize> = HashMap::new();
    let mut sums: Vec<(Key, Sums)> = Vec::new();
    for i in 0..batch.num_rows() {
        let key = (currency.get(i), group.get(i));
        let slot = *index.entry(key).or_insert_with(|| {
            sums.push((key, Sums::default()));
            sums.len() - 1
        });
        let s = &mut sums[slot].1;
        s.rows += 1;
        for (col, sum) in [(&billed, &mut s.billed), (&effective, &mut s.effective)] {
            match col {
                Some((a, scale)) if a.is_valid(i) => {
                    sum.add(a.value(i), *scale).ok_or_else(|| overflow(rel))?;
                }
                _ => sum.nulls += 1,
            }
        }
    }
    for ((c, g), s) in sums {
        out.entry((c.map(str::to_string), g.map(str::to_string)))
            .or_default()
            .merge(&s)
            .ok_or_else(|| overflow(rel))?;
    }
    Ok(())
}
