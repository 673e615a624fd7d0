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

use crate::decode::{days_from_civil, year_month_from_days};
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

/// A Hive partition of the lake.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    /// `YYYY-MM`
    pub period: String,
    pub account: String,
}

impl PartitionKey {
    /// `billing_period=YYYY-MM/billing_account_id=ID` with Hive's escaping of the account.
    pub fn dir(&self) -> String {
        format!(
            "billing_period={}/billing_account_id={}",
            self.period,
            hive_escape(&self.account)
        )
    }
}

/// Escapes characters that are unsafe in a path segment as `%XX`, as Hive does.
pub fn hive_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.') && !(value == "." || value == "..")
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
                return Err(Error::Rejected(format!(
                    "rows spread over more than {} partitions",
                    self.options.max_partitions
                )));
            }
            let staged = self.staging.join(format!(
                "{}.{}.{}.parquet.tmp",
                self.stem,
                self.parts.len(),
                std::process::id()
            ));
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
            .ok_or_else(|| Error::Rejected("BilledCost sum overflows".into()))?;
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
            .ok_or_else(|| Error::Rejected("BilledCost sum overflows".into()))?;
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_hive() {
        assert_eq!(hive_escape("200020002001"), "200020002001");
        assert_eq!(hive_escape("a/b c"), "a%2Fb%20c");
        assert_eq!(hive_escape(".."), "%2E%2E");
        assert_eq!(hive_escape("acct-1.x_y"), "acct-1.x_y");
    }
}
