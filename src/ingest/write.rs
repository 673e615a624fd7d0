//! The write stage: typed record batches to one Parquet file per Hive partition
//! (`billing_period=YYYY-MM/billing_account_id=ID/`) for one snapshot.
//!
//! Files are written to a local staging folder first; `run` publishes them into the lake only
//! once the whole snapshot has been read, so a half-read file never reaches a reader. Every
//! snapshot unit owns one file per partition it touches (named after the unit), which lets a
//! newer snapshot replace it in place, atomically.
//!
//! Parquet settings: zstd, page-level statistics, row groups of 122,880 rows (DuckDB's default,
//! so the two compare like for like); FOCUS column names as they are.
//!
//! Partition values come from the rows, so any text must make a safe path segment. The account
//! is Hive-escaped (`%XX` for every byte but `A-Z a-z 0-9 - _ .`, as billpipe always did, so
//! existing lakes keep their paths). An escaped value over [`MAX_PARTITION_VALUE_BYTES`] (which
//! would break the 255-byte file-name limit: a 300-character id, 90 CJK characters) becomes its
//! longest escaped prefix of whole characters that fits, then `~`, then 32 hex digits of a
//! 128-bit FNV-1a hash of the whole value (see [`partition_value`]). Escaping never produces
//! `~`, so a capped folder cannot collide with an uncapped one, and the hash tells long values
//! with the same prefix apart. The folder is then not reversible by itself: the row's
//! `BillingAccountId` column always holds the full value, and is what readers should group by.
//! Two values of one snapshot that would share a folder are rejected, never merged.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use arrow_schema::SchemaRef;
use arrow_select::take::take_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::ingest::decode::{days_from_civil, year_month_from_days};
use crate::partition::PartitionKey;
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub zstd_level: i32,
    pub row_group_rows: usize,
    /// A snapshot spreading over more partitions than this is rejected (bounds open writers).
    pub max_partitions: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            zstd_level: 3,
            row_group_rows: 122_880,
            max_partitions: 512,
        }
    }
}

/// One finished partition file, still in staging.
#[derive(Debug, Clone)]
pub struct WrittenPart {
    pub partition: PartitionKey,
    pub staged: PathBuf,
    pub rows: u64,
    /// Sum of BilledCost, scaled by the schema's decimal scale.
    pub billed_cost: i128,
    pub bytes: u64,
}

struct Part {
    staged: PathBuf,
    writer: ArrowWriter<BufWriter<File>>,
    rows: u64,
    billed_cost: i128,
}

/// Writes the batches of one snapshot, split by partition.
pub struct PartitionedWriter {
    staging: PathBuf,
    stem: String,
    schema: SchemaRef,
    props: WriterProperties,
    options: WriteOptions,
    period_col: usize,
    account_col: usize,
    cost_col: Option<usize>,
    period_offset_micros: i64,
    parts: BTreeMap<PartitionKey, Part>,
}

impl PartitionedWriter {
    pub fn new(
        staging: &Path,
        stem: &str,
        schema: SchemaRef,
        period_column: &str,
        account_column: &str,
        period_offset_secs: i64,
        options: WriteOptions,
    ) -> Result<PartitionedWriter> {
        let idx = |name: &str| {
            schema
                .index_of(name)
                .map_err(|_| Error::Config(format!("partition column {name} is not in the output")))
        };
        let level = ZstdLevel::try_new(options.zstd_level)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(options.row_group_rows))
            .set_created_by(format!("billpipe {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(PartitionedWriter {
            staging: staging.to_path_buf(),
            stem: stem.to_string(),
            period_col: idx(period_column)?,
            account_col: idx(account_column)?,
            cost_col: schema.index_of("BilledCost").ok(),
            schema,
            props,
            options,
            period_offset_micros: period_offset_secs * 1_000_000,
            parts: BTreeMap::new(),
        })
    }

    fn partition_of(
        &self,
        periods: &TimestampMicrosecondArray,
        accounts: &StringArray,
        row: usize,
    ) -> PartitionKey {
        let micros = periods.value(row) + self.period_offset_micros;
        let (y, m) = year_month_from_days(micros.div_euclid(86_400_000_000));
        PartitionKey {
            period: format!("{y:04}-{m:02}"),
            account: accounts.value(row).to_string(),
        }
    }

    /// [start, end) in UTC microseconds of the partition month holding `micros`.
    fn month_bounds(&self, micros: i64) -> (i64, i64) {
        const DAY: i64 = 86_400_000_000;
        let (y, m) = year_month_from_days((micros + self.period_offset_micros).div_euclid(DAY));
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        (
            days_from_civil(y, m, 1) * DAY - self.period_offset_micros,
            days_from_civil(ny, nm, 1) * DAY - self.period_offset_micros,
        )
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let periods = batch
            .column(self.period_col)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| Error::Config("period column is not a timestamp".into()))?;
        let accounts = batch
            .column(self.account_col)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Config("account column is not a string".into()))?;
        // Bills are almost always one partition per file: check cheaply before grouping.
        let first = self.partition_of(periods, accounts, 0);
        let (start, end) = self.month_bounds(periods.value(0));
        let same = (0..batch.num_rows()).all(|r| {
            let p = periods.value(r);
            p >= start && p < end && accounts.value(r) == first.account
        });
        if same {
            return self.write_part(first, batch);
        }
        let mut groups: BTreeMap<PartitionKey, Vec<u32>> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            groups
                .entry(self.partition_of(periods, accounts, row))
                .or_default()
                .push(row as u32);
        }
        for (key, rows) in groups {
            let part = take_record_batch(batch, &UInt32Array::from(rows))?;
            self.write_part(key, &part)?;
        }
        Ok(())
    }

    fn write_part(&mut self, key: PartitionKey, batch: &RecordBatch) -> Result<()> {
        if !self.parts.contains_key(&key) {
            if self.parts.len() >= self.options.max_partitions {
                return Err(Error::rejected(format!(
                    "rows spread over more than {} partitions",
                    self.options.max_partitions
                )));
            }
            let dir = key.dir();
            if let Some(other) = self.parts.keys().find(|k| k.dir() == dir) {
                return Err(Error::rejected(format!(
                    "partition values {:?} and {:?} would share the folder {dir}",
                    other.account, key.account
                )));
            }
            // Named by a process-wide counter, not by the unit (whose name may be long): the
            // staging folder is this run's alone, and jobs share it.
            static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let staged = self.staging.join(format!("part-{n}.parquet.tmp"));
            tracing::debug!(
                "{}: staging partition {dir} in {}",
                self.stem,
                staged.display()
            );
            let file = File::create(&staged).map_err(|e| Error::io(&staged, e))?;
            let writer = ArrowWriter::try_new(
                BufWriter::with_capacity(1 << 20, file),
                self.schema.clone(),
                Some(self.props.clone()),
            )?;
            self.parts.insert(
                key.clone(),
                Part {
                    staged,
                    writer,
                    rows: 0,
                    billed_cost: 0,
                },
            );
        }
        let cost = match self.cost_col {
            Some(c) => sum_decimal(batch.column(c).as_any().downcast_ref::<Decimal128Array>())?,
            None => 0,
        };
        let part = self
            .parts
            .get_mut(&key)
            .ok_or_else(|| Error::Config("partition writer vanished".into()))?;
        part.writer.write(batch)?;
        part.rows += batch.num_rows() as u64;
        part.billed_cost = part
            .billed_cost
            .checked_add(cost)
            .ok_or_else(|| Error::rejected("BilledCost sum overflows"))?;
        Ok(())
    }

    /// Closes every partition file and returns them, still in staging.
    pub fn finish(self) -> Result<Vec<WrittenPart>> {
        let mut out = Vec::new();
        for (partition, part) in self.parts {
            part.writer.close()?;
            let bytes = std::fs::metadata(&part.staged)
                .map_err(|e| Error::io(&part.staged, e))?
                .len();
            out.push(WrittenPart {
                partition,
                staged: part.staged,
                rows: part.rows,
                billed_cost: part.billed_cost,
                bytes,
            });
        }
        Ok(out)
    }

    /// Removes staged files after a failure.
    pub fn abandon(self) {
        for part in self.parts.into_values() {
            drop(part.writer);
            let _ = std::fs::remove_file(&part.staged);
        }
    }
}

fn sum_decimal(col: Option<&Decimal128Array>) -> Result<i128> {
    let Some(col) = col else { return Ok(0) };
    let mut sum: i128 = 0;
    for v in col.iter().flatten() {
        sum = sum
            .checked_add(v)
            .ok_or_else(|| Error::rejected("BilledCost sum overflows"))?;
    }
    Ok(sum)
}
