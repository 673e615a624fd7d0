//! The Parquet file of a small partition, encoded here rather than by parquet-rs's column
//! writers: most customers of a reseller's consolidated bill hold a hundred-odd rows, and for
//! such a file the fixed cost of parquet-rs (a column writer, encoder, page writer and metadata
//! objects for each of ~70 columns) was ~250 µs, most of the CPU the merge of a 20,000-customer
//! bill spends once its rows are sorted (microbenchmark and profile in the README).
//!
//! What it writes is what parquet-rs writes for the same batch with the small-partition
//! settings (`ingest::part`), in a form every reader knows: one row group, one uncompressed
//! data page (v1) per column, PLAIN values, or RLE_DICTIONARY indices with a PLAIN dictionary
//! page where the settings keep a dictionary; definition levels as RLE runs; chunk statistics
//! (min, max, null count) where the settings ask for them. The schema, the footer's Arrow schema
//! and the other file-wide fields are copied byte for byte from a file parquet-rs wrote with
//! the same settings ([`SmallFormat::new`]), so both writers' files read back alike. Anything
//! it does not handle (a column type, text statistics, nesting) makes [`SmallFormat::new`]
//! return `None`, and parquet-rs writes those partitions as before.

use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, UInt32Type,
};
use arrow_array::{Array, ArrowPrimitiveType, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Repetition, Type as PhysicalType};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::{ColumnPath, SchemaDescriptor};

use crate::ingest::staged::{add_cost, next_file_number, start_writeback, WrittenPart};
use crate::partition::PartitionKey;
use crate::{Error, Result};
use dictionary::Dictionary;
use pages::write_chunk;

/// How the values of one Arrow column become Parquet values.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// UTF-8 text, 32- or 64-bit offsets: BYTE_ARRAY.
    Text { large: bool },
    /// INT32 from Int32 (signed order) or UInt32 (unsigned order).
    Int32 { unsigned: bool },
    /// INT64 from Int64 or a timestamp of ms, µs or ns.
    Int64(Int64Source),
    /// A Decimal128 stored as FIXED_LEN_BYTE_ARRAY of `len` big-endian bytes.
    Decimal { len: usize },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Int64Source {
    Int64,
    Millis,
    Micros,
    Nanos,
}

struct ColumnPlan {
    name: String,
    kind: Kind,
    physical: i32,
    optional: bool,
    dictionary: bool,
    statistics: bool,
}

/// Everything the small files of one snapshot share: how each column is encoded, and the
/// footer's fields that do not depend on the rows.
pub(super) struct SmallFormat {
    columns: Vec<ColumnPlan>,
    /// Raw values of the FileMetaData fields before `num_rows` (version, schema), and after
    /// `row_groups` (key-value metadata with the Arrow schema, created_by, column orders), as
    /// parquet-rs wrote them: `(field id, compact type, value bytes)`.
    head: Vec<(i16, u8, Vec<u8>)>,
    tail: Vec<(i16, u8, Vec<u8>)>,
}

impl SmallFormat {
    /// The most rows a file is encoded here with: the whole file is built in memory (a few dozen
    /// KB at the default 2,000-row threshold of a small partition), and one page per column
    /// suits only small files. A larger `--small-partition-rows` leaves the rest to parquet-rs.
    pub const MAX_ROWS: u64 = 20_000;

    /// The format of `schema`'s small files with `props`, or `None` if some column needs what
    /// this writer does not do (see the module docs); then parquet-rs writes them.
    pub fn new(
        schema: &SchemaRef,
        parquet_schema: &SchemaDescriptor,
        props: &WriterProperties,
        options: ArrowWriterOptions,
    ) -> Option<SmallFormat> {
        if props.compression(&ColumnPath::from("")) != parquet::basic::Compression::UNCOMPRESSED
            || parquet_schema.num_columns() != schema.fields().len()
        {
            return None;
        }
        let mut columns = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let leaf = parquet_schema.column(i);
            if leaf.path().parts() != [field.name().as_str()] || leaf.max_rep_level() != 0 {
                return None;
            }
            let path = leaf.path().clone();
            let physical = leaf.physical_type();
            let kind = match (field.data_type(), physical) {
                (DataType::Utf8, PhysicalType::BYTE_ARRAY) => Kind::Text { large: false },
                (DataType::LargeUtf8, PhysicalType::BYTE_ARRAY) => Kind::Text { large: true },
                (DataType::Int32, PhysicalType::INT32) => Kind::Int32 { unsigned: false },
                (DataType::UInt32, PhysicalType::INT32) => Kind::Int32 { unsigned: true },
                (DataType::Int64, PhysicalType::INT64) => Kind::Int64(Int64Source::Int64),
                (DataType::Timestamp(unit, _), PhysicalType::INT64) => Kind::Int64(match unit {
                    TimeUnit::Millisecond => Int64Source::Millis,
                    TimeUnit::Microsecond => Int64Source::Micros,
                    TimeUnit::Nanosecond => Int64Source::Nanos,
                    TimeUnit::Second => return None,
                }),
                (DataType::Decimal128(..), PhysicalType::FIXED_LEN_BYTE_ARRAY)
                    if (1..=16).contains(&leaf.type_length()) =>
                {
                    Kind::Decimal {
                        len: leaf.type_length() as usize,
                    }
                }
                _ => return None,
            };
            // Settings this encoder would ignore: they leave the file to parquet-rs.
            if props.compression(&path) != parquet::basic::Compression::UNCOMPRESSED
                || props.encoding(&path).is_some()
                || props.bloom_filter_properties(&path).is_some()
                || props.writer_version() != parquet::file::properties::WriterVersion::PARQUET_1_0
            {
                return None;
            }
            let statistics = match props.statistics_enabled(&path) {
                EnabledStatistics::None => false,
                // Min and max of text would need parquet-rs's truncation rules.
                _ if matches!(kind, Kind::Text { .. }) => return None,
                _ => true,
            };
            columns.push(ColumnPlan {
                name: field.name().clone(),
                kind,
                physical: physical as i32,
                optional: leaf.self_type().get_basic_info().repetition() != Repetition::REQUIRED,
                dictionary: props.dictionary_enabled(&path),
                statistics,
            });
            debug_assert_eq!(leaf.max_def_level() > 0, columns[i].optional);
        }
        let (head, tail) = template(schema, options)?;
        Some(SmallFormat {
            columns,
            head,
            tail,
        })
    }

    /// A new, empty file.
    pub fn file(&self) -> SmallFile<'_> {
        SmallFile {
            format: self,
            rows: 0,
            columns: self.columns.iter().map(|_| ColumnData::default()).collect(),
        }
    }
}

/// The footer fields of a row-less file parquet-rs writes with `options`.
#[allow(clippy::type_complexity)]
fn template(
    schema: &SchemaRef,
    options: ArrowWriterOptions,
) -> Option<(Vec<(i16, u8, Vec<u8>)>, Vec<(i16, u8, Vec<u8>)>)> {
    let mut bytes = Vec::new();
    let writer = ArrowWriter::try_new_with_options(&mut bytes, schema.clone(), options).ok()?;
    writer.close().ok()?;
    let n = bytes.len();
    let footer_len = u32::from_le_bytes(bytes.get(n.checked_sub(8)?..n - 4)?.try_into().ok()?);
    let footer = bytes.get(n.checked_sub(8 + footer_len as usize)?..n - 8)?;
    let fields = compact::top_level_fields(footer)?;
    let head = fields.iter().filter(|f| f.0 < 3).cloned().collect();
    let tail = fields.iter().filter(|f| f.0 > 4).cloned().collect();
    Some((head, tail))
}

/// One column's values so far.
#[derive(Default)]
struct ColumnData {
    /// Definition levels as runs (defined?, count).
    levels: Vec<(bool, u32)>,
    nulls: u64,
    /// PLAIN-encoded values, or the dictionary's values when it has one.
    plain: Vec<u8>,
    /// With a dictionary: the index of each non-null value, and each value's index.
    indices: Vec<u32>,
    dictionary: Dictionary,
    /// Min and max as the column's sort order compares them.
    min_max: Option<(Ordered, Ordered)>,
}

#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Ordered {
    Signed(i128),
    Unsigned(u64),
}

impl ColumnData {
    fn level(&mut self, defined: bool) {
        match self.levels.last_mut() {
            Some((d, n)) if *d == defined => *n += 1,
            _ => self.levels.push((defined, 1)),
        }
        if !defined {
            self.nulls += 1;
        }
    }

    fn value(&mut self, plan: &ColumnPlan, bytes: &[u8], order: Option<Ordered>) {
        if plan.dictionary {
            let index = self.dictionary.index(&mut self.plain, bytes, |plain| {
                push_plain(plain, plan.kind, bytes);
                plain.len() - bytes.len()..plain.len()
            });
            self.indices.push(index);
        } else {
            push_plain(&mut self.plain, plan.kind, bytes);
        }
        if let (true, Some(v)) = (plan.statistics, order) {
            self.min_max = Some(match self.min_max {
                None => (v, v),
                Some((lo, hi)) => (if v < lo { v } else { lo }, if v > hi { v } else { hi }),
            });
        }
    }
}

/// PLAIN encoding: text with its length first; fixed-width values as they are.
fn push_plain(out: &mut Vec<u8>, kind: Kind, bytes: &[u8]) {
    if let Kind::Text { .. } = kind {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

/// A small partition's file being filled; [`SmallFile::finish`] gives its bytes.
pub(super) struct SmallFile<'a> {
    format: &'a SmallFormat,
    rows: u64,
    columns: Vec<ColumnData>,
}

impl SmallFile<'_> {
    /// Adds a batch of the snapshot's schema.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_columns() != self.format.columns.len() {
            return Err(Error::Internal(format!(
                "a batch of {} columns for a file of {}",
                batch.num_columns(),
                self.format.columns.len()
            )));
        }
        let unexpected = |plan: &ColumnPlan| {
            Error::Internal(format!("column {}: not of the snapshot's type", plan.name))
        };
        for (c, plan) in self.format.columns.iter().enumerate() {
            let array = batch.column(c);
            if !plan.optional && array.null_count() > 0 {
                return Err(Error::rejected(format!(
                    "column {} is required but has nulls",
                    plan.name
                )));
            }
            let data = &mut self.columns[c];
            match plan.kind {
                Kind::Text { large } => {
                    let mut add = |value: Option<&str>| {
                        if plan.optional {
                            data.level(value.is_some());
                        }
                        if let Some(v) = value {
                            data.value(plan, v.as_bytes(), None);
                        }
                    };
                    if large {
                        let text = array
                            .as_string_opt::<i64>()
                            .ok_or_else(|| unexpected(plan))?;
                        text.iter().for_each(&mut add);
                    } else {
                        let text = array
                            .as_string_opt::<i32>()
                            .ok_or_else(|| unexpected(plan))?;
                        text.iter().for_each(&mut add);
                    }
                }
                Kind::Int32 { unsigned: false } => each::<Int32Type>(array, plan, data, |v| {
                    (v.to_le_bytes().to_vec(), Ordered::Signed(v as i128))
                })?,
                Kind::Int32 { unsigned: true } => each::<UInt32Type>(array, plan, data, |v| {
                    (v.to_le_bytes().to_vec(), Ordered::Unsigned(v as u64))
                })?,
                Kind::Int64(source) => {
                    let le = |v: i64| (v.to_le_bytes().to_vec(), Ordered::Signed(v as i128));
                    match source {
                        Int64Source::Int64 => each::<Int64Type>(array, plan, data, le)?,
                        Int64Source::Millis => {
                            each::<TimestampMillisecondType>(array, plan, data, le)?
                        }
                        Int64Source::Micros => {
                            each::<TimestampMicrosecondType>(array, plan, data, le)?
                        }
                        Int64Source::Nanos => {
                            each::<TimestampNanosecondType>(array, plan, data, le)?
                        }
                    }
                }
                Kind::Decimal { len } => {
                    // A value wider than the column's bytes (beyond its precision: Arrow does
                    // not check) would be cut to them, another number; parquet-rs cuts it in
                    // silence, this refuses it.
                    if len < 16 {
                        let limit = 1i128 << (8 * len - 1);
                        let decimals = array
                            .as_primitive_opt::<Decimal128Type>()
                            .ok_or_else(|| unexpected(plan))?;
                        if let Some(v) = decimals
                            .iter()
                            .flatten()
                            .find(|v| !(-limit..limit).contains(v))
                        {
                            return Err(Error::rejected(format!(
                                "column {}: {v} (unscaled) does not fit its {len}-byte decimal",
                                plan.name
                            )));
                        }
                    }
                    each::<Decimal128Type>(array, plan, data, |v| {
                        (v.to_be_bytes()[16 - len..].to_vec(), Ordered::Signed(v))
                    })?
                }
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The whole file: `PAR1`, a dictionary page (if any) and a data page per column, the
    /// footer, its length and `PAR1`.
    /// A page over 2 GiB (more than Parquet's page header can say; parquet-rs would split it)
    /// is refused.
    pub fn finish(self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(
            4096 + self
                .columns
                .iter()
                .map(|c| c.plain.len() + c.indices.len())
                .sum::<usize>(),
        );
        out.extend_from_slice(b"PAR1");
        let mut chunks = Vec::with_capacity(self.columns.len());
        for (plan, data) in self.format.columns.iter().zip(&self.columns) {
            if data.plain.len() + data.indices.len() * 4 + data.levels.len() * 6 > i32::MAX as usize
                || self.rows > i32::MAX as u64
            {
                return Err(Error::rejected(format!(
                    "column {}: a page of more than 2 GiB",
                    plan.name
                )));
            }
            chunks.push(write_chunk(&mut out, plan, data, self.rows));
        }
        let mut footer = compact::Writer::default();
        for (id, ty, value) in &self.format.head {
            footer.raw(*id, *ty, value);
        }
        footer.i64(3, self.rows as i64);
        footer.list(4, compact::STRUCT, 1);
        {
            // The row group.
            footer.begin();
            footer.list(1, compact::STRUCT, chunks.len());
            for chunk in &chunks {
                chunk.write(&mut footer);
            }
            let size: i64 = chunks.iter().map(|c| c.size).sum();
            footer.i64(2, size);
            footer.i64(3, self.rows as i64);
            footer.i64(5, chunks.first().map_or(4, |c| c.start));
            footer.i64(6, size);
            footer.i16(7, 0);
            footer.end();
        }
        for (id, ty, value) in &self.format.tail {
            footer.raw(*id, *ty, value);
        }
        footer.end();
        let footer = footer.into_bytes();
        out.extend_from_slice(&footer);
        out.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        out.extend_from_slice(b"PAR1");
        Ok(out)
    }
}

/// Adds a primitive column's values: `encode` gives a value's PLAIN bytes and its order.
fn each<T: ArrowPrimitiveType>(
    array: &dyn Array,
    plan: &ColumnPlan,
    data: &mut ColumnData,
    encode: impl Fn(T::Native) -> (Vec<u8>, Ordered),
) -> Result<()> {
    let values = array.as_primitive_opt::<T>().ok_or_else(|| {
        Error::Internal(format!("column {}: not of the snapshot's type", plan.name))
    })?;
    for value in values.iter() {
        if plan.optional {
            data.level(value.is_some());
        }
        if let Some(v) = value {
            let (bytes, order) = encode(v);
            data.value(plan, &bytes, Some(order));
        }
    }
    Ok(())
}

impl SmallFormat {
    /// A small partition's file in `folder` (inside staging), its rows counted and the
    /// BilledCost of column `cost_col` summed: encoded in memory (a few dozen KB), then written
    /// with one call; nothing is left in staging if it fails.
    pub(in crate::ingest) fn write_partition<T>(
        &self,
        partition: PartitionKey,
        batches: impl IntoIterator<Item = (RecordBatch, T)>,
        folder: &Path,
        cost_col: Option<usize>,
    ) -> Result<WrittenPart> {
        let mut file = self.file();
        let (mut rows, mut billed_cost) = (0u64, 0i128);
        // Each batch's ticket (the merge's row budget) is dropped once its rows are encoded.
        for (batch, _ticket) in batches {
            file.write(&batch)?;
            rows += batch.num_rows() as u64;
            add_cost(&mut billed_cost, &batch, cost_col)?;
        }
        let bytes = file.finish()?;
        let staged = folder.join(format!("part-{}.parquet.tmp", next_file_number()));
        let written = File::create(&staged).and_then(|mut f| {
            std::io::Write::write_all(&mut f, &bytes)?;
            start_writeback(&f);
            Ok(())
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&staged);
            return Err(Error::io(&staged, e));
        }
        Ok(WrittenPart {
            partition,
            staged,
            rows,
            billed_cost,
            bytes: bytes.len() as u64,
        })
    }
}

/// The small-file encoder for `props`, if it can write `schema` with them.
pub(in crate::ingest) fn small_format(
    schema: &SchemaRef,
    props: &WriterProperties,
    options: ArrowWriterOptions,
) -> Option<SmallFormat> {
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(schema)
        .ok()?;
    let format = SmallFormat::new(schema, &parquet_schema, props, options);
    if format.is_none() {
        tracing::debug!("small partitions: written by parquet-rs (a column type the small-file encoder does not write)");
    }
    format
}

mod compact;
mod dictionary;
mod pages;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod edge_tests;

#[cfg(test)]
mod edge_tests_shapes;
