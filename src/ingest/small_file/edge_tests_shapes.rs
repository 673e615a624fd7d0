//! More edge cases of the small-file encoder against parquet-rs (see `edge_tests`): text,
//! nulls, row counts, dictionaries, batch shapes, column names, the footer parser.

use super::edge_tests::{
    attack_all, attack_batch, attack_decimal, attack_diff, attack_props_dict, timestamp_columns,
};
use super::tests::{batch, by_parquet_rs, options, props, schema};
use super::*;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Int32Array, Int64Array, LargeStringArray, StringArray, TimestampMicrosecondArray,
    UInt32Array,
};
use arrow_schema::{Field, Schema};

#[test]
fn attack_strange_strings() {
    let long = "x".repeat(200_000);
    let unicode = "ünïcødé 日本語 🦀 \u{FEFF}\u{200D}";
    let values = vec![
        Some(""),
        Some("\0"),
        Some("a\0b"),
        None,
        Some(unicode),
        Some(long.as_str()),
        Some(""),
        Some("\0"),
        Some("a\0b"),
        Some(long.as_str()),
    ];
    let b = attack_batch(vec![
        ("S", Arc::new(StringArray::from(values.clone())), true),
        ("L", Arc::new(LargeStringArray::from(values.clone())), true),
        (
            "R",
            Arc::new(StringArray::from(
                values.iter().map(|v| v.unwrap_or("")).collect::<Vec<_>>(),
            )),
            false,
        ),
    ]);
    attack_all("strings", &[b]);
}

#[test]
fn attack_nulls_everywhere_and_nearly_everywhere() {
    for rows in [1usize, 7, 8, 9, 1999] {
        for one in [None, Some(0), Some(rows / 2), Some(rows - 1)] {
            let pick = |i: usize| one == Some(i);
            let b = attack_batch(vec![
                (
                    "S",
                    Arc::new(StringArray::from_iter(
                        (0..rows).map(|i| pick(i).then_some("v")),
                    )),
                    true,
                ),
                (
                    "I32",
                    Arc::new(Int32Array::from_iter(
                        (0..rows).map(|i| pick(i).then_some(-5)),
                    )),
                    true,
                ),
                (
                    "U32",
                    Arc::new(UInt32Array::from_iter(
                        (0..rows).map(|i| pick(i).then_some(7u32)),
                    )),
                    true,
                ),
                (
                    "I64",
                    Arc::new(Int64Array::from_iter(
                        (0..rows).map(|i| pick(i).then_some(-9i64)),
                    )),
                    true,
                ),
                (
                    "Ts",
                    Arc::new(
                        TimestampMicrosecondArray::from_iter(
                            (0..rows).map(|i| pick(i).then_some(-9i64)),
                        )
                        .with_timezone("UTC"),
                    ),
                    true,
                ),
                (
                    "Cost",
                    attack_decimal(
                        (0..rows).map(|i| pick(i).then_some(-12345)).collect(),
                        38,
                        18,
                    ),
                    true,
                ),
            ]);
            attack_all(&format!("nulls-{rows}-{one:?}"), &[b]);
        }
    }
}

#[test]
fn attack_row_counts_and_dictionaries() {
    for rows in [1usize, 2, 3, 7, 8, 9, 15, 16, 17, 255, 256, 257, 1999] {
        let b = attack_batch(vec![
            (
                "S",
                Arc::new(StringArray::from_iter(
                    (0..rows).map(|i| (i % 11 != 4).then(|| format!("v{}", i % 5))),
                )),
                true,
            ),
            (
                "Distinct",
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("id{i}")),
                )),
                false,
            ),
            (
                "I32",
                Arc::new(Int32Array::from_iter(
                    (0..rows).map(|i| (i % 3 != 1).then_some(i as i32 * -7)),
                )),
                true,
            ),
            (
                "I64",
                Arc::new(Int64Array::from_iter_values(
                    (0..rows).map(|i| i as i64 - 100),
                )),
                false,
            ),
            (
                "Cost",
                attack_decimal(
                    (0..rows)
                        .map(|i| (i % 4 != 0).then_some((i as i128 - 500) * 10i128.pow(20)))
                        .collect(),
                    38,
                    18,
                ),
                true,
            ),
        ]);
        attack_all(&format!("rows-{rows}"), &[b]);
    }
}

#[test]
fn attack_dictionary_wider_than_8_and_16_bits() {
    for distinct in [256usize, 257, 65_536, 65_537, 70_000] {
        let rows = distinct + 10;
        let b = attack_batch(vec![
            (
                "S",
                Arc::new(StringArray::from_iter(
                    (0..rows).map(|i| (i != 3).then(|| format!("s{}", i % distinct))),
                )),
                true,
            ),
            (
                "I64",
                Arc::new(Int64Array::from_iter_values(
                    (0..rows).map(|i| (i % distinct) as i64 * 1_000_003),
                )),
                false,
            ),
            (
                "I32",
                Arc::new(Int32Array::from_iter(
                    (0..rows).map(|i| (i % 13 != 0).then_some(-((i % distinct) as i32))),
                )),
                true,
            ),
        ]);
        let schema = b.schema();
        let problems = attack_diff(
            &format!("wide-dict-{distinct}"),
            &schema,
            &attack_props_dict(&schema, true),
            &[b],
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

#[test]
fn attack_zero_row_batches() {
    let b = batch(0, 0);
    let schema = schema();
    let problems = attack_diff("zero-rows", &schema, &props(), &[b.clone(), b.clone()]);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // And zero-row batches between others.
    let problems = attack_diff(
        "zero-rows-between",
        &schema,
        &props(),
        &[b.clone(), batch(0, 5), b.clone(), batch(5, 3), b],
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn attack_many_small_batches_and_slices() {
    let all = batch(0, 1999);
    let mut batches = Vec::new();
    let mut at = 0;
    let mut step = 1;
    while at < all.num_rows() {
        let n = step.min(all.num_rows() - at);
        batches.push(all.slice(at, n));
        at += n;
        step = step % 13 + 1;
    }
    let problems = attack_diff("many-batches", &schema(), &props(), &batches);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let singles: Vec<RecordBatch> = (0..all.num_rows()).map(|i| all.slice(i, 1)).collect();
    let problems = attack_diff("single-rows", &schema(), &props(), &singles);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn attack_many_and_oddly_named_columns() {
    let rows = 20;
    let mut columns: Vec<(String, ArrayRef, bool)> = Vec::new();
    for c in 0..70 {
        let name = match c % 5 {
            0 => format!("c{c}"),
            1 => format!("ünï.cødé {c}"),
            2 => format!("{}{c}", "long_name_".repeat(20)),
            3 => format!("x.y{c}"),
            _ => format!("Tag[{c}]"),
        };
        let array: ArrayRef = match c % 4 {
            0 => Arc::new(StringArray::from_iter(
                (0..rows).map(|i| (i % 3 != 0).then(|| format!("{}", i % 4))),
            )),
            1 => Arc::new(Int64Array::from_iter(
                (0..rows).map(|i| (i % 2 == 0).then_some(i as i64 - c)),
            )),
            2 => attack_decimal(
                (0..rows).map(|i| Some(i as i128 * -(c as i128))).collect(),
                38,
                10,
            ),
            _ => Arc::new(
                TimestampMicrosecondArray::from_iter((0..rows).map(|i| Some(i as i64)))
                    .with_timezone("UTC"),
            ),
        };
        columns.push((name, array, true));
    }
    let b = attack_batch(
        columns
            .iter()
            .map(|(n, a, r)| (n.as_str(), a.clone(), *r))
            .collect(),
    );
    attack_all("many-columns", &[b]);
}

#[test]
fn attack_footer_parser_reads_every_field_of_a_parquet_rs_footer() {
    // Footers with rows (row groups, statistics), key-value metadata and many columns: the
    // fields must cover the footer exactly, and re-encoding them must give the same bytes.
    let b = batch(0, 50);
    let props = props()
        .into_builder()
        .set_key_value_metadata(Some(vec![
            parquet::file::metadata::KeyValue::new("k".into(), Some("v\0ü".into())),
            parquet::file::metadata::KeyValue::new("empty".into(), None),
        ]))
        .build();
    for bytes in [by_parquet_rs(std::slice::from_ref(&b)), {
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new_with_options(&mut out, schema(), options(&props)).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
        out
    }] {
        let n = bytes.len();
        let len = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
        let footer = &bytes[n - 8 - len..n - 8];
        let fields = compact::top_level_fields(footer).expect("parsed");
        let mut w = compact::Writer::default();
        for (id, ty, value) in &fields {
            w.raw(*id, *ty, value);
        }
        w.end();
        assert_eq!(w.into_bytes(), footer);
        let ids: Vec<i16> = fields.iter().map(|f| f.0).collect();
        assert!(
            ids.contains(&4) && ids.contains(&5) && ids.contains(&6),
            "{ids:?}"
        );
    }
}

#[test]
fn attack_timestamps_in_the_readers_range() {
    // As `attack_timestamps_units_zones_and_before_1970` without i64::MIN/MAX, which DuckDB
    // cannot read from either file: for the pyarrow/DuckDB checks.
    let micros = vec![
        Some(-1),
        Some(0),
        None,
        Some(-62_135_596_800_000_000),
        Some(1_761_955_200_000_000),
        Some(-86_400_000_001),
    ];
    let coarse: Vec<Option<i64>> = micros.iter().map(|v| v.map(|v| v / 1000)).collect();
    let columns = timestamp_columns(&micros, &coarse);
    attack_all("ts-range", &[attack_batch(columns)]);
}

#[test]
fn attack_field_ids_and_metadata_in_the_schema() {
    let meta = |id: &str| {
        std::collections::HashMap::from([
            ("PARQUET:field_id".to_string(), id.to_string()),
            ("comment".to_string(), "\u{fc}\0".to_string()),
        ])
    };
    let fields = vec![
        Field::new("A", DataType::Int64, true).with_metadata(meta("7")),
        Field::new("B", DataType::Utf8, false).with_metadata(meta("300")),
        Field::new("C", DataType::Decimal128(30, 4), true).with_metadata(meta("-2")),
    ];
    let schema = Arc::new(
        Schema::new(fields).with_metadata(std::collections::HashMap::from([(
            "k".to_string(),
            "v".to_string(),
        )])),
    );
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(-3)])),
            Arc::new(StringArray::from(vec!["x", "", "z"])),
            attack_decimal(vec![None, Some(-5), Some(10i128.pow(29))], 30, 4),
        ],
    )
    .unwrap();
    attack_all("field-ids", &[b]);
}
