//! Unit tests of the partitioned writer: exact partitions through run files, clean-up, limit.

use super::*;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::Decimal128Array;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "BillingPeriodStart",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("BillingAccountId", DataType::Utf8, false),
        Field::new("BilledCost", DataType::Decimal128(38, 10), true),
        Field::new("Row", DataType::UInt32, false),
    ]))
}

const DAY: i64 = 86_400_000_000;
// 2025-11-01 and 2025-12-01, UTC.
const NOV: i64 = 20_393 * DAY;
const DEC: i64 = 20_423 * DAY;

/// Rows of 50 accounts interleaved, 10 of them in two months; batches of various sizes.
fn input() -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut row = 0u32;
    for size in [1usize, 7, 300, 64, 1000, 3, 500, 2000, 50] {
        let mut periods = Vec::new();
        let mut accounts = Vec::new();
        let mut costs = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..size {
            let account = (row * 7 + row / 13) % 50;
            periods.push(if account.is_multiple_of(5) && row.is_multiple_of(2) {
                DEC
            } else {
                NOV
            });
            accounts.push(format!("acct-{account:03}"));
            costs.push((row % 11 != 3).then(|| (row as i128 * 1_234_567_891) - 50_000));
            rows.push(row);
            row += 1;
        }
        out.push(
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(TimestampMicrosecondArray::from(periods).with_timezone("UTC")),
                    Arc::new(StringArray::from(accounts)),
                    Arc::new(
                        Decimal128Array::from(costs)
                            .with_precision_and_scale(38, 10)
                            .unwrap(),
                    ),
                    Arc::new(UInt32Array::from(rows)),
                ],
            )
            .unwrap(),
        );
    }
    out
}

/// (period, account) -> (rows, BilledCost, row numbers in order)
type Sums = BTreeMap<(String, String), (u64, i128, Vec<u32>)>;

fn sums_of(batches: &[RecordBatch]) -> Sums {
    let mut sums = Sums::new();
    for b in batches {
        let col = |i: usize| b.column(i).as_any();
        let p = col(0).downcast_ref::<TimestampMicrosecondArray>().unwrap();
        let a = col(1).downcast_ref::<StringArray>().unwrap();
        let c = col(2).downcast_ref::<Decimal128Array>().unwrap();
        let r = col(3).downcast_ref::<UInt32Array>().unwrap();
        for i in 0..b.num_rows() {
            let month = if p.value(i) == DEC {
                "2025-12"
            } else {
                "2025-11"
            };
            let e = sums
                .entry((month.to_string(), a.value(i).to_string()))
                .or_default();
            e.0 += 1;
            e.1 += if c.is_null(i) { 0 } else { c.value(i) };
            e.2.push(r.value(i));
        }
    }
    sums
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn writer(dir: &Path, open_writers: usize, memory_budget: usize) -> PartitionedWriter {
    writer_with(
        dir,
        WriteOptions {
            open_writers,
            memory_budget,
            ..WriteOptions::default()
        },
    )
}

fn writer_with(dir: &Path, options: WriteOptions) -> PartitionedWriter {
    let options = WriteOptions {
        row_group_rows: 100,
        ..options
    };
    PartitionedWriter::new(
        dir,
        "test",
        schema(),
        "BillingPeriodStart",
        "BillingAccountId",
        0,
        options,
    )
    .unwrap()
}

/// Every partition file holds exactly its rows, in input order, with the sums the writer
/// reports, whatever the budget and the number of open writers.
#[test]
fn every_partition_is_exact_through_run_files() {
    let input = input();
    let expected = sums_of(&input);
    assert_eq!(expected.len(), 60, "50 accounts, 10 of them in two months");
    let cases = [
        (2, 4096, 1),
        (2, 1, 3),
        (0, 64 << 10, 2),
        (16, 64 << 20, 1),
        (100, 1, 2),
    ];
    for (open, budget, threads) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer_with(
            dir.path(),
            WriteOptions {
                open_writers: open,
                memory_budget: budget,
                write_threads: threads,
                ..WriteOptions::default()
            },
        );
        for b in &input {
            w.write(b).unwrap();
        }
        if budget < 1 << 20 && open < 60 {
            assert!(w.runs.len() > 1, "{open} {budget}: spilled");
        }
        let parts = w.finish().unwrap();
        assert_eq!(parts.len(), expected.len());
        let mut got = Sums::new();
        for part in &parts {
            let file = File::open(&part.staged).unwrap();
            let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
            let sums = sums_of(&batches);
            assert_eq!(sums.len(), 1, "one partition per file");
            let (key, value) = sums.into_iter().next().unwrap();
            let p = &part.partition;
            assert_eq!(key, (p.period.clone(), p.account.clone()));
            assert_eq!((part.rows, part.billed_cost), (value.0, value.1));
            got.insert(key, value);
        }
        assert_eq!(got, expected, "open writers {open}, budget {budget}");
        // Partition files stay (in the writers' folders) until published; run files go.
        let mut left: Vec<String> = Vec::new();
        for name in files(dir.path()) {
            if name.starts_with("writer-") {
                let inner = files(&dir.path().join(&name));
                left.extend(inner.into_iter().filter(|f| !f.starts_with("part-")));
            } else if !name.starts_with("part-") {
                left.push(name);
            }
        }
        assert!(left.is_empty(), "run files left: {left:?}");
    }
}

/// Partition writers that cannot create their files: the merge stops with their error (it
/// does not wait for the rows it handed them), and nothing is left in staging.
#[test]
fn failing_partition_writers_fail_the_snapshot_without_hanging() {
    for threads in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer_with(
            dir.path(),
            WriteOptions {
                open_writers: 0,
                memory_budget: 1,
                write_threads: threads,
                ..WriteOptions::default()
            },
        );
        for b in &input() {
            w.write(b).unwrap();
        }
        w.files.staging = dir.path().join("gone");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(w.finish().map(|parts| parts.len())));
        let finished = rx.recv_timeout(std::time::Duration::from_secs(60));
        let result = finished.expect("finish must not hang when partition writers fail");
        assert!(result.is_err(), "{threads} threads: {result:?}");
        assert_eq!(files(dir.path()), Vec::<String>::new());
    }
}

#[test]
fn abandon_and_drop_remove_run_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), 2, 1);
    for b in input() {
        w.write(&b).unwrap();
    }
    assert!(files(dir.path()).iter().any(|f| f.starts_with("run-")));
    w.abandon();
    assert_eq!(files(dir.path()), Vec::<String>::new());
    let mut w = writer(dir.path(), 0, 1);
    w.write(&input()[2]).unwrap();
    drop(w);
    assert_eq!(files(dir.path()), Vec::<String>::new());
}

#[test]
fn the_partition_limit_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = writer(dir.path(), 2, 1);
    w.options.max_partitions = 10;
    let err = input().iter().try_for_each(|b| w.write(b)).unwrap_err();
    assert!(err.to_string().contains("more than 10 partitions"), "{err}");
    w.abandon();
    assert_eq!(files(dir.path()), Vec::<String>::new());
}

/// Partitions from the run files under `small_partition_rows` rows are written uncompressed
/// (chunk statistics only, none on text; no dictionary for a column whose values do not repeat);
/// streamed ones and larger ones with zstd, page statistics and dictionaries on every column.
#[test]
fn small_spilled_partitions_are_uncompressed() {
    use parquet::basic::Compression;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let codecs = |small_partition_rows: u64| {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer_with(
            dir.path(),
            WriteOptions {
                open_writers: 2,
                memory_budget: 1,
                small_partition_rows,
                ..WriteOptions::default()
            },
        );
        for b in input() {
            w.write(&b).unwrap();
        }
        let mut out = BTreeMap::new();
        for part in w.finish().unwrap() {
            let reader = SerializedFileReader::new(File::open(&part.staged).unwrap()).unwrap();
            let meta = reader.metadata();
            let codec = meta.row_group(0).column(0).compression();
            let page_index = meta.row_group(0).column(0).column_index_offset().is_some();
            // Column 1 is text (BillingAccountId), column 2 a decimal (BilledCost).
            let text_stats = meta.row_group(0).column(1).statistics().is_some();
            assert!(meta.row_group(0).column(2).statistics().is_some());
            // Column 3 (Row) never repeats: a small partition stores it without a dictionary;
            // column 1 (BillingAccountId) is one value per partition: it keeps its dictionary.
            let dictionary = |c: usize| meta.row_group(0).column(c).dictionary_page_offset();
            let p = &part.partition;
            let key = format!("{} {}", p.period, p.account);
            assert!(dictionary(1).is_some(), "{key}: account dictionary");
            out.insert(
                key,
                (
                    part.rows,
                    codec,
                    page_index,
                    text_stats,
                    dictionary(3).is_some(),
                ),
            );
        }
        out
    };
    let zstd = |c: Compression| matches!(c, Compression::ZSTD(_));
    // The first two partitions seen stream to their own writers: always zstd.
    let mut seen = (0, 0);
    for (account, (rows, codec, page_index, text_stats, row_dictionary)) in codecs(60) {
        let streamed = account == "2025-12 acct-000" || account == "2025-11 acct-007";
        let small = rows < 60 && !streamed;
        assert_eq!(zstd(codec), !small, "{account}: {rows} rows, {codec:?}");
        assert_eq!(page_index, !small, "{account}: page index");
        assert_eq!(text_stats, !small, "{account}: statistics of a text column");
        assert_eq!(
            row_dictionary, !small,
            "{account}: dictionary of a unique column"
        );
        if small {
            seen.0 += 1
        } else if !streamed {
            seen.1 += 1
        }
    }
    assert!(
        seen.0 > 0 && seen.1 > 0,
        "small and large spilled partitions: {seen:?}"
    );
    assert!(
        codecs(0).values().all(|(_, c, _, _, _)| zstd(*c)),
        "0 turns it off"
    );
}
