//! The small-file encoder against parquet-rs on edge cases (an adversarial review, session
//! 12): each `attack_...` test writes the same batches both ways and compares what parquet-rs
//! reads back — values, nulls, row counts, and the chunk statistics (null count, min, max) a
//! reader prunes with. With `BILLPIPE_SMALL_FILE_DUMP=<folder>` the pairs are also written
//! there as `<name>.{rs,sf}.parquet`, for pyarrow and DuckDB.

use super::tests::{read, small_props};
use super::*;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Decimal128Array, Int32Array, Int64Array, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, UInt32Array,
};
use arrow_schema::{Field, Schema};
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::file::metadata::ParquetMetaData;

/// The small-partition settings of `ingest::write` for any schema: no compression, chunk
/// statistics except on text, no dictionary for decimals, no offset index.
fn attack_props(schema: &SchemaRef) -> WriterProperties {
    small_props(schema)
}

/// `attack_props` with the dictionary on (`Some(true)`) or off for every column.
pub(super) fn attack_props_dict(schema: &SchemaRef, dictionary: bool) -> WriterProperties {
    let mut b = attack_props(schema).into_builder();
    for field in schema.fields() {
        b = b.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), dictionary);
    }
    b.build()
}

/// As `part::writer_options`.
fn attack_options(schema: &SchemaRef, props: &WriterProperties) -> ArrowWriterOptions {
    let mut props = props.clone();
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(schema)
        .unwrap();
    add_encoded_arrow_schema_to_metadata(schema, &mut props);
    ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true)
        .with_parquet_schema(parquet_schema)
}

fn attack_format(schema: &SchemaRef, props: &WriterProperties) -> Option<SmallFormat> {
    small_format(schema, props, attack_options(schema, props))
}

/// (parquet-rs file, encoder file)
fn attack_write(
    schema: &SchemaRef,
    props: &WriterProperties,
    batches: &[RecordBatch],
) -> (Vec<u8>, Vec<u8>) {
    let mut rs = Vec::new();
    let mut w =
        ArrowWriter::try_new_with_options(&mut rs, schema.clone(), attack_options(schema, props))
            .unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    let format = attack_format(schema, props).expect("the encoder writes this schema");
    let mut file = format.file();
    for b in batches {
        file.write(b).unwrap();
    }
    (rs, file.finish().unwrap())
}

type AttackStats = (Option<u64>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Per column: the statistics of the file's row groups, merged only when there is one.
fn attack_stats(meta: &ParquetMetaData) -> Vec<Option<AttackStats>> {
    let columns = meta.file_metadata().schema_descr().num_columns();
    (0..columns)
        .map(|c| {
            let groups: Vec<_> = meta
                .row_groups()
                .iter()
                .filter(|g| g.num_rows() > 0)
                .collect();
            if groups.len() != 1 {
                return None;
            }
            groups[0].column(c).statistics().map(|s| {
                (
                    s.null_count_opt(),
                    s.min_bytes_opt().map(<[u8]>::to_vec),
                    s.max_bytes_opt().map(<[u8]>::to_vec),
                )
            })
        })
        .collect()
}

/// Writes `batches` both ways and returns what differs (empty when they read back alike).
pub(super) fn attack_diff(
    name: &str,
    schema: &SchemaRef,
    props: &WriterProperties,
    batches: &[RecordBatch],
) -> Vec<String> {
    let (rs, sf) = attack_write(schema, props, batches);
    if let Some(dir) = std::env::var_os("BILLPIPE_SMALL_FILE_DUMP") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.rs.parquet")), &rs).unwrap();
        std::fs::write(dir.join(format!("{name}.sf.parquet")), &sf).unwrap();
    }
    let mut problems = Vec::new();
    let (want, want_meta) = read(&rs);
    let (got, got_meta) = read(&sf);
    let concat = |b: &[RecordBatch]| arrow_select::concat::concat_batches(schema, b).unwrap();
    let (want_all, got_all) = (concat(&want), concat(&got));
    if want_all != got_all {
        for c in 0..schema.fields().len() {
            if want_all.column(c) != got_all.column(c) {
                problems.push(format!(
                    "{name}: column {} reads back differently:\n  parquet-rs: {:?}\n  encoder:    {:?}",
                    schema.field(c).name(),
                    want_all.column(c).slice(0, want_all.num_rows().min(12)),
                    got_all.column(c).slice(0, got_all.num_rows().min(12)),
                ));
            }
        }
        if want_all.num_rows() != got_all.num_rows() || want_all.schema() != got_all.schema() {
            problems.push(format!(
                "{name}: {} rows / {} rows; schemas equal: {}",
                want_all.num_rows(),
                got_all.num_rows(),
                want_all.schema() == got_all.schema()
            ));
        }
    }
    if want_meta.file_metadata().num_rows() != got_meta.file_metadata().num_rows() {
        problems.push(format!("{name}: footer num_rows differ"));
    }
    let (ws, gs) = (attack_stats(&want_meta), attack_stats(&got_meta));
    for c in 0..ws.len() {
        if let (Some(w), Some(g)) = (&ws[c], &gs[c]) {
            if w != g {
                problems.push(format!(
                    "{name}: column {} statistics (nulls, min, max):\n  parquet-rs: {w:?}\n  encoder:    {g:?}",
                    schema.field(c).name()
                ));
            }
        } else if ws[c].is_some() != gs[c].is_some() && want_all.num_rows() > 0 {
            problems.push(format!(
                "{name}: column {} statistics: parquet-rs {:?}, encoder {:?}",
                schema.field(c).name(),
                ws[c],
                gs[c]
            ));
        }
    }
    problems
}

/// Runs `attack_diff` with the small-partition settings, the dictionary on everywhere and
/// off everywhere, on the batches as given and as one batch split into 1-row slices.
pub(super) fn attack_all(name: &str, batches: &[RecordBatch]) {
    let schema = batches[0].schema();
    let mut problems = Vec::new();
    let variants = [
        ("small", attack_props(&schema)),
        ("dict", attack_props_dict(&schema, true)),
        ("plain", attack_props_dict(&schema, false)),
    ];
    for (v, props) in &variants {
        problems.extend(attack_diff(&format!("{name}-{v}"), &schema, props, batches));
    }
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if total > 1 && total <= 300 {
        let one = arrow_select::concat::concat_batches(&schema, batches).unwrap();
        let singles: Vec<RecordBatch> = (0..total).map(|i| one.slice(i, 1)).collect();
        problems.extend(attack_diff(
            &format!("{name}-singles"),
            &schema,
            &variants[0].1,
            &singles,
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

pub(super) fn attack_batch(columns: Vec<(&str, ArrayRef, bool)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a, nullable)| Field::new(*n, a.data_type().clone(), *nullable))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a, _)| a).collect(),
    )
    .unwrap()
}

pub(super) fn attack_decimal(values: Vec<Option<i128>>, precision: u8, scale: i8) -> ArrayRef {
    Arc::new(
        Decimal128Array::from(values)
            .with_precision_and_scale(precision, scale)
            .unwrap(),
    )
}

#[test]
fn attack_decimals_at_the_limits_of_every_fixed_len_precision() {
    let mut problems = Vec::new();
    for precision in 19u8..=38 {
        let limit = 10i128.pow(precision as u32) - 1;
        let values = vec![
            Some(0),
            Some(limit),
            Some(-limit),
            None,
            Some(1),
            Some(-1),
            Some(limit - 1),
            Some(-limit + 1),
            Some(i64::MAX as i128 + 1),
            Some(i64::MIN as i128 - 1),
        ];
        for scale in [0i8, 2, precision as i8] {
            let nullable = attack_batch(vec![(
                "Cost",
                attack_decimal(values.clone(), precision, scale),
                true,
            )]);
            let required = attack_batch(vec![(
                "Cost",
                attack_decimal(
                    values.iter().map(|v| Some(v.unwrap_or(7))).collect(),
                    precision,
                    scale,
                ),
                false,
            )]);
            for (kind, b) in [("opt", nullable), ("req", required)] {
                let schema = b.schema();
                for (v, props) in [
                    ("small", attack_props(&schema)),
                    ("dict", attack_props_dict(&schema, true)),
                ] {
                    problems.extend(attack_diff(
                        &format!("dec-{precision}-{scale}-{kind}-{v}"),
                        &schema,
                        &props,
                        std::slice::from_ref(&b),
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn attack_decimal_i128_extremes_at_precision_38() {
    // Beyond 10^38 - 1, but a Decimal128Array does not check; 16 bytes hold them.
    let b = attack_batch(vec![(
        "Cost",
        attack_decimal(
            vec![Some(i128::MAX), Some(i128::MIN), Some(0), None, Some(-1)],
            38,
            18,
        ),
        true,
    )]);
    attack_all("dec-i128", &[b]);
}

#[test]
fn attack_decimal_beyond_its_precision_in_fewer_than_16_bytes() {
    // DECIMAL(20, 2) is FIXED_LEN_BYTE_ARRAY(9): a value beyond 20 digits (not checked by
    // Decimal128Array) is cut to 9 bytes by both writers; statistics must describe the cut
    // values the file holds, as parquet-rs's do.
    let b = attack_batch(vec![(
        "Cost",
        attack_decimal(
            vec![Some(1i128 << 71), Some(5), Some(-(1i128 << 75)), Some(-3)],
            20,
            2,
        ),
        true,
    )]);
    // Refusing such a value is fine too (then the partition fails instead of lying).
    let schema = b.schema();
    let format = attack_format(&schema, &attack_props(&schema)).unwrap();
    if format.file().write(&b).is_err() {
        return;
    }
    attack_all("dec-overflow", &[b]);
}

#[test]
fn attack_low_precision_decimals_are_left_to_parquet_rs() {
    for precision in 1u8..=18 {
        let b = attack_batch(vec![(
            "Cost",
            attack_decimal(vec![Some(1), None], precision, 0),
            true,
        )]);
        let schema = b.schema();
        assert!(
            attack_format(&schema, &attack_props(&schema)).is_none(),
            "Decimal128({precision}, 0) is INT32/INT64 in Parquet"
        );
    }
}

/// Timestamp columns of every unit and several zones: µs from `micros`, ms and ns from `coarse`.
pub(super) fn timestamp_columns(
    micros: &[Option<i64>],
    coarse: &[Option<i64>],
) -> Vec<(&'static str, ArrayRef, bool)> {
    vec![
        (
            "Micros",
            Arc::new(TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("UTC")),
            true,
        ),
        (
            "MicrosNoZone",
            Arc::new(TimestampMicrosecondArray::from(micros.to_vec())),
            true,
        ),
        (
            "Millis",
            Arc::new(TimestampMillisecondArray::from(coarse.to_vec()).with_timezone("+05:30")),
            true,
        ),
        (
            "Nanos",
            Arc::new(
                TimestampNanosecondArray::from(coarse.to_vec()).with_timezone("America/New_York"),
            ),
            true,
        ),
    ]
}

#[test]
fn attack_timestamps_units_zones_and_before_1970() {
    let micros = vec![
        Some(-1),
        Some(0),
        None,
        Some(i64::MIN),
        Some(i64::MAX),
        Some(-62_135_596_800_000_000),
        Some(1_761_955_200_000_000),
        Some(-1),
    ];
    let mut columns = timestamp_columns(&micros, &micros);
    columns.push((
        "NanosRequired",
        Arc::new(TimestampNanosecondArray::from(
            micros.iter().map(|v| v.unwrap_or(42)).collect::<Vec<_>>(),
        )),
        false,
    ));
    attack_all("ts", &[attack_batch(columns)]);
}

#[test]
fn attack_integers_at_their_limits() {
    let b = attack_batch(vec![
        (
            "I32",
            Arc::new(Int32Array::from(vec![
                Some(i32::MIN),
                Some(-1),
                None,
                Some(i32::MAX),
                Some(0),
            ])),
            true,
        ),
        (
            "U32",
            Arc::new(UInt32Array::from(vec![
                Some(u32::MAX),
                Some(0),
                Some(1),
                None,
                Some(1 << 31),
            ])),
            true,
        ),
        (
            "U32Req",
            Arc::new(UInt32Array::from(vec![u32::MAX, 0, 1, 2, 1 << 31])),
            false,
        ),
        (
            "I64",
            Arc::new(Int64Array::from(vec![
                Some(i64::MIN),
                None,
                Some(i64::MAX),
                Some(-1),
                Some(0),
            ])),
            true,
        ),
    ]);
    attack_all("ints", &[b]);
    // Only high values of u32: the order must be unsigned.
    let b = attack_batch(vec![(
        "U32",
        Arc::new(UInt32Array::from(vec![
            Some(3_000_000_000u32),
            Some(5),
            Some(2_147_483_648),
        ])),
        true,
    )]);
    attack_all("u32-high", &[b]);
}
