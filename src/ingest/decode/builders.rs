//! Per-batch helpers of the decoder: raw cell bytes from a column's source (fields, constants,
//! mapping tables), the Arrow builders one batch is collected in, and `zero_when`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Decimal128Builder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, StringArray};
use csv::ByteRecord;

use crate::conformance::mapping;
use crate::Result;

use super::layout::{Kind, Source};

/// The raw bytes of an output column for the current row: `None` for an absent column, an error
/// for a value a mapping table does not know.
/// The raw bytes of an output column's value. `Err((native value, reason))` when a mapping
/// table does not list the native value.
pub(super) fn resolve<'a>(
    source: &'a Source,
    record: &'a ByteRecord,
) -> std::result::Result<Option<&'a [u8]>, (String, String)> {
    match source {
        Source::Absent => Ok(None),
        Source::Field(i) => Ok(record.get(*i)),
        Source::Constant(v) => Ok(Some(v)),
        Source::Table {
            field,
            native,
            values,
        } => {
            let raw = record.get(*field).unwrap_or(b"");
            let key = mapping::normalise(&String::from_utf8_lossy(raw));
            match values.get(&key) {
                Some(v) => Ok(Some(v)),
                None => {
                    let raw = String::from_utf8_lossy(raw).into_owned();
                    let reason = format!(
                        "{native} {raw:?} is not in the mapping table; add it to the mapping file"
                    );
                    Err((raw, reason))
                }
            }
        }
    }
}

/// What a mapping table answered for the raw bytes of one output column's field, remembered
/// for the rows after: a bill repeats a few dozen Transaction Types and one or two billing months
/// over millions of rows, and looking each up afresh (lossy UTF-8, trim, a new lower-case
/// `String`, SipHash) — five tables per row of a Tencent bill, the text ones twice — was about a
/// tenth of the decode thread's time. Only answers are remembered (a value missing from the
/// table takes the full path every time, so each such row gets its finding), and at most
/// [`TableMemo::MAX`] distinct raw values, so odd input cannot grow it without bound.
#[derive(Debug, Default)]
pub(super) struct TableMemo {
    seen: HashMap<Vec<u8>, usize>,
    values: Vec<Vec<u8>>,
    /// The raw bytes last asked for and their answer: rows in a row often agree, and the text
    /// columns are asked twice per row (checked, then appended).
    last: Option<(Vec<u8>, usize)>,
}

/// Where a table column's value for the row is: remembered in the memo, or (memo full) the
/// table's own bytes.
pub(super) enum Looked<'a> {
    Remembered(usize),
    Direct(&'a [u8]),
}

impl TableMemo {
    pub const MAX: usize = 4096;

    /// The answer of `source` (a table) for `record`, as [`resolve`] gives it.
    pub fn look_up<'a>(
        &mut self,
        source: &'a Source,
        record: &'a ByteRecord,
    ) -> std::result::Result<Looked<'a>, (String, String)> {
        let Source::Table { field, .. } = source else {
            return Ok(Looked::Direct(resolve(source, record)?.unwrap_or(b"")));
        };
        let raw = record.get(*field).unwrap_or(b"");
        if let Some((last, i)) = &self.last {
            if last.as_slice() == raw {
                return Ok(Looked::Remembered(*i));
            }
        }
        let i = match self.seen.get(raw) {
            Some(&i) => i,
            None => {
                let answer = resolve(source, record)?.unwrap_or(b"");
                if self.values.len() >= Self::MAX {
                    return Ok(Looked::Direct(answer));
                }
                self.values.push(answer.to_vec());
                self.seen.insert(raw.to_vec(), self.values.len() - 1);
                self.values.len() - 1
            }
        };
        match &mut self.last {
            Some((last, at)) => {
                last.clear();
                last.extend_from_slice(raw);
                *at = i;
            }
            None => self.last = Some((raw.to_vec(), i)),
        }
        Ok(Looked::Remembered(i))
    }

    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[i]
    }
}

/// `column` with 0 wherever `when` equals `equals` (BilledCost on Credit rows), and the rows
/// whose value that changed, with the value they had.
pub(super) fn zero_where(
    column: &ArrayRef,
    when: &ArrayRef,
    equals: &str,
) -> Result<(ArrayRef, Vec<(usize, i128)>)> {
    use arrow_array::{Array, Decimal128Array};
    let (Some(values), Some(flags)) = (
        column.as_any().downcast_ref::<Decimal128Array>(),
        when.as_any().downcast_ref::<StringArray>(),
    ) else {
        return Ok((column.clone(), Vec::new()));
    };
    let mut changed = Vec::new();
    let zeroed: Decimal128Array = (0..values.len())
        .map(|i| {
            if flags.is_valid(i) && flags.value(i) == equals {
                if values.is_valid(i) && values.value(i) != 0 {
                    changed.push((i, values.value(i)));
                }
                Some(0)
            } else if values.is_valid(i) {
                Some(values.value(i))
            } else {
                None
            }
        })
        .collect();
    let zeroed = zeroed.with_precision_and_scale(values.precision(), values.scale())?;
    Ok((Arc::new(zeroed), changed))
}

/// The source line of row `row` (the lineage column is the last array).
pub(super) fn lines_of(arrays: &[ArrayRef], row: usize) -> u64 {
    arrays
        .last()
        .and_then(|a| a.as_any().downcast_ref::<arrow_array::Int64Array>())
        .map_or(0, |l| l.value(row) as u64)
}

pub(super) enum Builder {
    /// Strings are collected as bytes and turned into a `StringArray` once per batch, so the
    /// UTF-8 check runs over the whole buffer instead of once more per value.
    Utf8(BinaryBuilder),
    Decimal(Decimal128Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    pub(super) fn new(kind: Kind, rows: usize, precision: u8, scale: i8) -> Builder {
        match kind {
            Kind::Utf8 => Builder::Utf8(BinaryBuilder::with_capacity(rows, rows * 16)),
            Kind::Decimal => Builder::Decimal(
                Decimal128Builder::with_capacity(rows)
                    .with_precision_and_scale(precision, scale)
                    .unwrap_or_else(|_| Decimal128Builder::with_capacity(rows)),
            ),
            Kind::Timestamp => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
        }
    }

    pub(super) fn append_null(&mut self) {
        match self {
            Builder::Utf8(b) => b.append_null(),
            Builder::Decimal(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
        }
    }

    pub(super) fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            Builder::Utf8(mut b) => {
                let (offsets, values, nulls) = b.finish().into_parts();
                Arc::new(StringArray::try_new(offsets, values, nulls)?)
            }
            Builder::Decimal(mut b) => Arc::new(b.finish()),
            Builder::Timestamp(mut b) => Arc::new(b.finish()),
        })
    }
}
