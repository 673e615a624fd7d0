//! The small-file encoder against parquet-rs: the same batches written by both read back
//! alike, with the same schema, statistics and dictionaries.

use super::*;
use std::sync::Arc;

use arrow_array::{
    Decimal128Array, Int32Array, Int64Array, LargeStringArray, StringArray,
    TimestampMicrosecondArray, UInt32Array,
};
use arrow_schema::{Field, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::basic::Compression;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};

pub(super) fn schema() -> SchemaRef {
    let utc = Some("UTC".into());
    Arc::new(Schema::new(vec![
        Field::new("Region", DataType::Utf8, true),
        Field::new("Id", DataType::Utf8, false),
        Field::new("Note", DataType::LargeUtf8, true),
        Field::new("Empty", DataType::Utf8, true),
        Field::new("Small", DataType::Int32, true),
        Field::new("Unsigned", DataType::UInt32, false),
        Field::new("Line", DataType::Int64, false),
        Field::new(
            "Start",
            DataType::Timestamp(TimeUnit::Microsecond, utc),
            true,
        ),
        Field::new("Cost", DataType::Decimal128(38, 18), true),
        Field::new("Rate", DataType::Decimal128(24, 6), true),
        Field::new("NoCost", DataType::Decimal128(38, 18), true),
    ]))
}

pub(super) fn batch(from: usize, rows: usize) -> RecordBatch {
    let r = from..from + rows;
    let regions = ["ap-guangzhou", "na-ashburn", "eu-frankfurt"];
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter(
                r.clone().map(|i| (i % 7 != 3).then(|| regions[i % 3])),
            )),
            Arc::new(StringArray::from_iter_values(
                r.clone().map(|i| format!("id-{i:05}")),
            )),
            Arc::new(LargeStringArray::from_iter(
                r.clone()
                    .map(|i| (i % 2 == 0).then(|| format!("n{}", i % 4))),
            )),
            Arc::new(StringArray::from_iter(r.clone().map(|_| None::<&str>))),
            Arc::new(Int32Array::from_iter(
                r.clone().map(|i| (i % 5 != 0).then(|| i as i32 - 40)),
            )),
            Arc::new(UInt32Array::from_iter_values(r.clone().map(|i| {
                if i % 2 == 0 {
                    u32::MAX - i as u32
                } else {
                    i as u32
                }
            }))),
            Arc::new(Int64Array::from_iter_values(
                r.clone().map(|i| i as i64 * 3),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter(r.clone().map(|i| {
                    (i % 9 != 1).then(|| 1_761_955_200_000_000 + (i % 4) as i64 * 3_600_000_000)
                }))
                .with_timezone("UTC"),
            ),
            Arc::new(
                Decimal128Array::from_iter(
                    r.clone().map(|i| {
                        (i % 6 != 2).then(|| (i as i128 - 30) * 1_234_567_890_123_456_789)
                    }),
                )
                .with_precision_and_scale(38, 18)
                .unwrap(),
            ),
            Arc::new(
                Decimal128Array::from_iter(r.clone().map(|i| Some(-(i as i128) * 1_000_001)))
                    .with_precision_and_scale(24, 6)
                    .unwrap(),
            ),
            Arc::new(
                Decimal128Array::from_iter(r.clone().map(|_| None::<i128>))
                    .with_precision_and_scale(38, 18)
                    .unwrap(),
            ),
        ],
    )
    .unwrap()
}

/// The small-partition settings of `ingest::write` for `schema`: no compression, chunk
/// statistics, none on text, no dictionary for decimals, no offset index.
pub(super) fn small_props(schema: &SchemaRef) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_offset_index_disabled(true)
        .set_created_by("billpipe test".into());
    for field in schema.fields() {
        let c = ColumnPath::from(field.name().as_str());
        match field.data_type() {
            DataType::Decimal128(..) => b = b.set_column_dictionary_enabled(c, false),
            DataType::Utf8 | DataType::LargeUtf8 => {
                b = b.set_column_statistics_enabled(c, EnabledStatistics::None)
            }
            _ => {}
        }
    }
    b.build()
}

/// [`small_props`] of this file's schema, and no dictionary for `Id` (as `tune_small` would
/// decide).
pub(super) fn props() -> WriterProperties {
    small_props(&schema())
        .into_builder()
        .set_column_dictionary_enabled(ColumnPath::from("Id"), false)
        .build()
}

pub(super) fn options(props: &WriterProperties) -> ArrowWriterOptions {
    let schema = schema();
    let mut props = props.clone();
    let parquet_schema = ArrowSchemaConverter::new().convert(&schema).unwrap();
    add_encoded_arrow_schema_to_metadata(&schema, &mut props);
    ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true)
        .with_parquet_schema(parquet_schema)
}

fn format(props: &WriterProperties) -> Option<SmallFormat> {
    let schema = schema();
    let parquet_schema = ArrowSchemaConverter::new().convert(&schema).unwrap();
    SmallFormat::new(&schema, &parquet_schema, props, options(props))
}

pub(super) fn by_parquet_rs(batches: &[RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new_with_options(&mut out, schema(), options(&props())).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    out
}

fn by_small_file(batches: &[RecordBatch]) -> Vec<u8> {
    let format = format(&props()).expect("the encoder writes this schema");
    let mut file = format.file();
    for b in batches {
        file.write(b).unwrap();
    }
    file.finish().unwrap()
}

pub(super) fn read(bytes: &[u8]) -> (Vec<RecordBatch>, Arc<ParquetMetaData>) {
    let bytes = Bytes::copy_from_slice(bytes);
    let meta = SerializedFileReader::new(bytes.clone())
        .unwrap()
        .metadata()
        .clone()
        .into();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    (reader.map(|b| b.unwrap()).collect(), meta)
}

#[test]
fn files_read_back_like_parquet_rs_files() {
    for sizes in [vec![1], vec![120], vec![7, 64, 300], vec![0, 17]] {
        let mut from = 0;
        let batches: Vec<RecordBatch> = sizes
            .iter()
            .map(|&n| {
                from += n;
                batch(from - n, n)
            })
            .collect();
        let (want, want_meta) = read(&by_parquet_rs(&batches));
        let (got, got_meta) = read(&by_small_file(&batches));
        let concat =
            |b: &[RecordBatch]| arrow_select::concat::concat_batches(&schema(), b).unwrap();
        assert_eq!(concat(&got), concat(&want), "{sizes:?}: rows");
        assert_eq!(got[0].schema(), want[0].schema(), "{sizes:?}: Arrow schema");
        let (w, g) = (want_meta.file_metadata(), got_meta.file_metadata());
        assert_eq!(g.schema_descr(), w.schema_descr());
        assert_eq!(g.key_value_metadata(), w.key_value_metadata());
        assert_eq!(g.created_by(), w.created_by());
        assert_eq!(g.num_rows(), w.num_rows());
        assert_eq!(got_meta.num_row_groups(), 1);
        let (w, g) = (want_meta.row_group(0), got_meta.row_group(0));
        assert_eq!(g.num_rows(), w.num_rows());
        for c in 0..w.num_columns() {
            let (wc, gc) = (w.column(c), g.column(c));
            let name = wc.column_path().string();
            assert_eq!(gc.column_type(), wc.column_type(), "{name}");
            assert_eq!(gc.compression(), wc.compression(), "{name}");
            assert_eq!(gc.num_values(), wc.num_values(), "{name}");
            // A column of nulls only gets an empty dictionary from parquet-rs, none here.
            let values = concat(&want).column(c).len() - concat(&want).column(c).null_count();
            if values > 0 {
                assert_eq!(
                    gc.dictionary_page_offset().is_some(),
                    wc.dictionary_page_offset().is_some(),
                    "{name}: dictionary ({sizes:?})"
                );
            }
            let stats = |s: Option<&parquet::file::statistics::Statistics>| {
                s.map(|s| {
                    (
                        s.null_count_opt().unwrap_or(0),
                        s.min_bytes_opt().map(<[u8]>::to_vec),
                        s.max_bytes_opt().map(<[u8]>::to_vec),
                    )
                })
            };
            assert_eq!(
                stats(gc.statistics()),
                stats(wc.statistics()),
                "{name}: statistics ({sizes:?})"
            );
        }
    }
}

#[test]
fn what_it_does_not_write_is_left_to_parquet_rs() {
    assert!(format(&props()).is_some());
    let compressed = props()
        .into_builder()
        .set_compression(Compression::SNAPPY)
        .build();
    assert!(format(&compressed).is_none(), "compression");
    let text_stats = props()
        .into_builder()
        .set_column_statistics_enabled(ColumnPath::from("Region"), EnabledStatistics::Chunk)
        .build();
    assert!(format(&text_stats).is_none(), "min and max of text");
    let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(
        "Flag",
        DataType::Boolean,
        true,
    )]));
    let parquet_schema = ArrowSchemaConverter::new().convert(&schema).unwrap();
    let mut props = props();
    add_encoded_arrow_schema_to_metadata(&schema, &mut props);
    let options = ArrowWriterOptions::new()
        .with_properties(props.clone())
        .with_parquet_schema(parquet_schema.clone());
    assert!(SmallFormat::new(&schema, &parquet_schema, &props, options).is_none());
}

#[test]
fn a_required_column_with_nulls_is_refused() {
    let format = format(&props()).unwrap();
    let mut file = format.file();
    let mut columns = batch(0, 3).columns().to_vec();
    columns[1] = Arc::new(StringArray::from(vec![Some("a"), None, Some("c")]));
    let nullable: SchemaRef = Arc::new(Schema::new(
        schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let bad = RecordBatch::try_new(nullable, columns).unwrap();
    let err = file.write(&bad).unwrap_err();
    assert!(err.to_string().contains("Id is required"), "{err}");
}
