//! `billpipe totals`: the numbers a FinOps user holds against the invoice — per billing month,
//! billing account and currency (optionally per service or sub-account), the exact sums of
//! BilledCost and EffectiveCost, the row count, and which snapshot the lake shows for it.
//!
//! The amounts are read from the lake's Parquet files, never from the ledger. The ledger records
//! what billpipe *meant* to publish; readers (DuckDB, Spark, Athena) see the files. Summing the
//! files is what checks that the two agree: a file left behind by hand, a partition that two
//! units both write, or a ledger entry whose file is gone all show up here instead of hiding
//! behind the ledger's own numbers. The ledger only says *which* snapshot each file is
//! (final or month-to-date, source object, when, rows held out in the quarantine); a file no
//! ledger entry lists is shown as "not in ledger".
//!
//! The lake is listed with [`Lake::list`]; every `billing_period=*/billing_account_id=*/*.parquet`
//! file counts (`_billpipe/` and `_quarantine/` do not), with the partition values read from the
//! path and Hive-unescaped (see [`crate::partition::hive_escape`]). Only the needed columns are read.
//! Money is summed as `i128` at the file's decimal scale — exactly, never as floating point — and a
//! null is counted as a null, never as 0: a column that is null in every row has no sum at all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Decimal128Type;
use arrow_array::{Array, Decimal128Array, GenericStringArray, RecordBatch, StringViewArray};
use arrow_schema::DataType;
use chrono::{Datelike, NaiveDate};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::file::reader::ChunkReader;
use serde::Serialize;

use crate::ingest::decode::format_decimal;
use crate::partition::partition_of;
use crate::state::classify::{Pipeline, SnapshotRank};
use crate::state::ledger::{Ledger, LedgerEntry, LEDGER_PATH};
use crate::store::lake;
use crate::store::s3::{S3Context, S3Location, S3Options};
use crate::{Error, Result};

const BILLED: &str = "BilledCost";
const EFFECTIVE: &str = "EffectiveCost";
const CURRENCY: &str = "BillingCurrency";
/// What a file no ledger entry lists is shown as.
pub const NOT_IN_LEDGER: &str = "not in ledger";

/// An extra grouping column beside month, account and currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    #[default]
    Partition,
    /// `ServiceName`
    Service,
    /// `SubAccountId`
    SubAccount,
}

impl GroupBy {
    /// `service` or `sub-account` (the CLI's `--by` values).
    pub fn from_name(name: &str) -> Result<GroupBy> {
        match name {
            "service" => Ok(GroupBy::Service),
            "sub-account" => Ok(GroupBy::SubAccount),
            other => Err(Error::Config(format!(
                "--by {other:?}: expected service or sub-account"
            ))),
        }
    }

    /// The FOCUS column grouped by, if any.
    pub fn column(self) -> Option<&'static str> {
        match self {
            GroupBy::Partition => None,
            GroupBy::Service => Some("ServiceName"),
            GroupBy::SubAccount => Some("SubAccountId"),
        }
    }

    /// Key of the grouping column in JSON and CSV output.
    fn field(self) -> Option<&'static str> {
        match self {
            GroupBy::Partition => None,
            GroupBy::Service => Some("service_name"),
            GroupBy::SubAccount => Some("sub_account_id"),
        }
    }

    /// Header of the grouping column in the table.
    fn header(self) -> Option<&'static str> {
        match self {
            GroupBy::Partition => None,
            GroupBy::Service => Some("service"),
            GroupBy::SubAccount => Some("sub-account"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TotalsOptions {
    /// The lake: a local folder or `s3://bucket[/prefix]`.
    pub dest: String,
    pub s3: S3Options,
    /// Only this billing month (`YYYY-MM`, the partition value).
    pub month: Option<String>,
    /// Only this billing account (the partition value, unescaped).
    pub account: Option<String>,
    pub by: GroupBy,
    /// Pipeline whose families say how many days a month-to-date file covers (default: the
    /// working directory's `pipelines/tencent.toml`, else the built-in copy).
    pub pipeline: Option<PathBuf>,
}

impl TotalsOptions {
    pub fn new(dest: &str) -> TotalsOptions {
        TotalsOptions {
            dest: dest.to_string(),
            s3: S3Options::default(),
            month: None,
            account: None,
            by: GroupBy::Partition,
            pipeline: None,
        }
    }
}

/// An exact, null-aware sum of one decimal column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecimalSum {
    /// Sum of the non-null values, scaled by `scale`.
    value: i128,
    scale: u32,
    /// Rows with a value.
    pub values: u64,
    /// Rows where the column is null (or missing from the file).
    pub nulls: u64,
}

impl DecimalSum {
    /// Adds one value of the given scale; `None` on overflow.
    fn add(&mut self, value: i128, scale: i8) -> Option<()> {
        let (value, scale) = non_negative_scale(value, scale)?;
        let (mut a, mut b) = (self.value, value);
        let target = self.scale.max(scale);
        a = a.checked_mul(10i128.checked_pow(target - self.scale)?)?;
        b = b.checked_mul(10i128.checked_pow(target - scale)?)?;
        self.value = a.checked_add(b)?;
        self.scale = target;
        self.values += 1;
        Some(())
    }

    /// Adds another sum; `None` on overflow.
    fn merge(&mut self, other: &DecimalSum) -> Option<()> {
        let values = self.values + other.values;
        let nulls = self.nulls + other.nulls;
        self.add(other.value, i8::try_from(other.scale).ok()?)?;
        self.values = values;
        self.nulls = nulls;
        Some(())
    }

    /// The sum as a decimal string, or `None` when no row had a value.
    pub fn total(&self) -> Option<String> {
        (self.values > 0).then(|| format_decimal(self.value, self.scale as i8))
    }
}

fn non_negative_scale(value: i128, scale: i8) -> Option<(i128, u32)> {
    if scale >= 0 {
        Some((value, scale as u32))
    } else {
        let factor = 10i128.checked_pow(u32::from(scale.unsigned_abs()))?;
        Some((value.checked_mul(factor)?, 0))
    }
}

/// Sums of one group.
#[derive(Debug, Clone, Default)]
pub struct Sums {
    pub rows: u64,
    pub billed: DecimalSum,
    pub effective: DecimalSum,
}

impl Sums {
    fn merge(&mut self, other: &Sums) -> Option<()> {
        self.rows += other.rows;
        self.billed.merge(&other.billed)?;
        self.effective.merge(&other.effective)
    }
}

/// The snapshot one lake file belongs to, from the ledger.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileSnapshot {
    /// Path relative to the lake root.
    pub file: String,
    /// `final`, `month-to-date through day N`, or `not in ledger`.
    pub snapshot: String,
    pub unit: Option<String>,
    pub source_key: Option<String>,
    pub source_etag: Option<String>,
    pub loaded_at: Option<String>,
    /// Rows of the unit's snapshot held out in the quarantine (the whole unit's count: a unit
    /// that writes several partitions has one count for all of them).
    pub rows_held_out: Option<u64>,
    pub quarantine: Option<String>,
    /// `billpipe state reset` marked the unit: the next run reloads it.
    pub reload_pending: bool,
}

/// One output row: a (month, account, currency[, service | sub-account]) group.
#[derive(Debug, Clone)]
pub struct TotalsRow {
    pub billing_period: String,
    pub billing_account_id: String,
    pub currency: Option<String>,
    /// ServiceName or SubAccountId with `--by`; `None` also when the value is null.
    pub group: Option<String>,
    pub sums: Sums,
    /// The files the group's rows come from, with their snapshots (usually one).
    pub files: Vec<FileSnapshot>,
}

impl TotalsRow {
    /// The snapshot column: one description per file, joined.
    pub fn snapshot(&self) -> String {
        self.files
            .iter()
            .map(|f| {
                if f.reload_pending {
                    format!("{} (reload pending)", f.snapshot)
                } else {
                    f.snapshot.clone()
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One currency's grand total over every row shown.
#[derive(Debug, Clone)]
pub struct CurrencyTotal {
    pub currency: Option<String>,
    pub sums: Sums,
    pub partitions: usize,
    /// Rows held out by the distinct ledger units behind those partitions.
    pub rows_held_out: u64,
}

/// What `billpipe totals` found.
#[derive(Debug, Clone)]
pub struct Totals {
    pub dest: String,
    pub by: GroupBy,
    pub rows: Vec<TotalsRow>,
    pub currency_totals: Vec<CurrencyTotal>,
    /// Parquet files read.
    pub files_read: usize,
    /// Ledger outputs (in the month/account filter) that the lake does not have: (path, unit).
    pub missing: Vec<(String, String)>,
}

/// Reads the lake at `opts.dest` and sums it. Fails if there is no lake there (neither a ledger
/// nor any partition file).
pub fn totals(opts: &TotalsOptions) -> Result<Totals> {
    let lake = lake::open(&opts.dest, false, || S3Context::connect(&opts.s3))?;
    let listing = lake.list("")?;
    let has_ledger = listing.iter().any(|(rel, _)| rel == LEDGER_PATH);
    let partition_files: Vec<(String, String, String)> = listing
        .iter()
        .filter_map(|(rel, _)| {
            partition_of(rel)
                .transpose()
                .map(|p| p.map(|(period, account)| (rel.clone(), period, account)))
        })
        .collect::<Result<_>>()?;
    if !has_ledger && partition_files.is_empty() {
        return Err(Error::Lake {
            path: opts.dest.clone(),
            message: format!(
                "no lake here: neither {LEDGER_PATH} nor any \
                 billing_period=*/billing_account_id=*/*.parquet file"
            ),
        });
    }
    let ledger = if has_ledger {
        Ledger::load(lake.as_ref())?
    } else {
        Ledger::default()
    };
    let lags = family_lags(opts.pipeline.as_deref())?;
    let mut by_file: HashMap<&str, Vec<&LedgerEntry>> = HashMap::new();
    for entry in ledger.units.values() {
        for out in &entry.outputs {
            by_file.entry(out.path.as_str()).or_default().push(entry);
        }
    }

    let wanted = |period: &str, account: &str| {
        opts.month.as_deref().is_none_or(|m| m == period)
            && opts.account.as_deref().is_none_or(|a| a == account)
    };
    // A local lake's files are opened in place; an S3 lake's are fetched whole.
    let local_root = S3Location::parse(&opts.dest)
        .is_none()
        .then(|| PathBuf::from(&opts.dest));
    let dim = opts.by.column();

    type GroupKey = (String, String, Option<String>, Option<String>);
    let mut groups: BTreeMap<GroupKey, (Sums, Vec<FileSnapshot>)> = BTreeMap::new();
    let mut files_read = 0;
    let mut present = BTreeSet::new();
    for (rel, period, account) in &partition_files {
        present.insert(rel.as_str());
        // A folder name too long for a path is capped (`prefix~hash`, see `write`): the full
        // account is the rows' BillingAccountId, and filters apply to it.
        let capped = account.contains('~');
        if !capped && !wanted(period, account) {
            continue;
        }
        let (file_sums, full_account) = match &local_root {
            Some(root) => {
                let path = root.join(rel);
                let open = || std::fs::File::open(&path).map_err(|e| vanished(rel, e));
                let full = if capped {
                    first_account(open()?, rel)?
                } else {
                    None
                };
                (sum_parquet(open()?, rel, dim)?, full)
            }
            None => {
                let bytes = bytes::Bytes::from(
                    lake.get(rel)?
                        .ok_or_else(|| vanished(rel, std::io::ErrorKind::NotFound.into()))?,
                );
                let full = if capped {
                    first_account(bytes.clone(), rel)?
                } else {
                    None
                };
                (sum_parquet(bytes, rel, dim)?, full)
            }
        };
        let account = full_account.as_ref().unwrap_or(account);
        if !wanted(period, account) {
            continue;
        }
        files_read += 1;
        let snapshot = describe_file(rel, by_file.get(rel.as_str()), &lags);
        for ((currency, group), sums) in file_sums {
            let (total, files) = groups
                .entry((period.clone(), account.clone(), currency, group))
                .or_default();
            total.merge(&sums).ok_or_else(|| overflow(rel))?;
            files.extend(snapshot.iter().cloned());
        }
    }

    let mut rows = Vec::with_capacity(groups.len());
    for ((billing_period, billing_account_id, currency, group), (sums, files)) in groups {
        rows.push(TotalsRow {
            billing_period,
            billing_account_id,
            currency,
            group,
            sums,
            files,
        });
    }
    let currency_totals = currency_totals(&rows).ok_or_else(|| overflow(&opts.dest))?;

    let mut missing = Vec::new();
    for entry in ledger.units.values() {
        for out in &entry.outputs {
            if present.contains(out.path.as_str()) {
                continue;
            }
            let in_filter = match partition_of(&out.path) {
                Ok(Some((period, account))) => wanted(&period, &account),
                _ => true,
            };
            if in_filter {
                missing.push((out.path.clone(), entry.unit.to_string()));
            }
        }
    }

    Ok(Totals {
        dest: opts.dest.clone(),
        by: opts.by,
        rows,
        currency_totals,
        files_read,
        missing,
    })
}

fn vanished(rel: &str, e: std::io::Error) -> Error {
    let message = if e.kind() == std::io::ErrorKind::NotFound {
        "listed but gone before it could be read (is a run replacing it? try again)".to_string()
    } else {
        e.to_string()
    };
    Error::Lake {
        path: rel.to_string(),
        message,
    }
}

fn overflow(path: &str) -> Error {
    Error::Lake {
        path: path.to_string(),
        message: "a sum does not fit in 38 decimal digits".into(),
    }
}

/// `data_lag_days` of every family of the pipeline, to turn a month-to-date file's delivery date
/// into the last day it covers. Without `--pipeline` a default that does not load is no error
/// (the snapshot then shows the delivery date instead).
fn family_lags(pipeline: Option<&Path>) -> Result<HashMap<String, u32>> {
    let loaded = match pipeline {
        Some(p) => Some(Pipeline::load(Some(p))?),
        None => Pipeline::load(None).ok(),
    };
    Ok(loaded
        .map(|p| {
            p.families
                .iter()
                .map(|f| (f.name.clone(), f.data_lag_days))
                .collect()
        })
        .unwrap_or_default())
}

/// The snapshot(s) behind one lake file: every ledger entry listing it (normally exactly one).
fn describe_file(
    rel: &str,
    entries: Option<&Vec<&LedgerEntry>>,
    lags: &HashMap<String, u32>,
) -> Vec<FileSnapshot> {
    let Some(entries) = entries.filter(|e| !e.is_empty()) else {
        return vec![FileSnapshot {
            file: rel.to_string(),
            snapshot: NOT_IN_LEDGER.into(),
            unit: None,
            source_key: None,
            source_etag: None,
            loaded_at: None,
            rows_held_out: None,
            quarantine: None,
            reload_pending: false,
        }];
    };
    entries
        .iter()
        .map(|e| FileSnapshot {
            file: rel.to_string(),
            snapshot: snapshot_text(e, lags),
            unit: Some(e.unit.to_string()),
            source_key: Some(e.source.key.clone()),
            source_etag: Some(e.source.etag.clone()),
            loaded_at: Some(e.loaded_at.clone()),
            rows_held_out: Some(e.rows_quarantined),
            quarantine: e.quarantine.clone(),
            reload_pending: e.reset,
        })
        .collect()
}

/// `final`, or `month-to-date through day N` where N is the last day the file covers (its
/// delivery date less the family's `data_lag_days`).
fn snapshot_text(e: &LedgerEntry, lags: &HashMap<String, u32>) -> String {
    let date = match &e.rank {
        SnapshotRank::Final => return "final".into(),
        SnapshotRank::Cumulative(d) => d,
    };
    let Ok(delivered) = NaiveDate::parse_from_str(date, "%Y%m%d") else {
        return format!("month-to-date ({date})");
    };
    let covered = lags
        .get(&e.family)
        .and_then(|lag| delivered.checked_sub_days(chrono::Days::new(u64::from(*lag))));
    match covered {
        Some(c) if c.format("%Y-%m").to_string() == e.unit.month => {
            format!("month-to-date through day {}", c.day())
        }
        _ => format!("month-to-date, delivered {}", delivered.format("%Y-%m-%d")),
    }
}

fn currency_totals(rows: &[TotalsRow]) -> Option<Vec<CurrencyTotal>> {
    type Acc<'a> = (Sums, BTreeSet<(&'a str, &'a str)>, BTreeMap<&'a str, u64>);
    let mut by_currency: BTreeMap<Option<&str>, Acc> = BTreeMap::new();
    for r in rows {
        let (sums, partitions, units) = by_currency.entry(r.currency.as_deref()).or_default();
        sums.merge(&r.sums)?;
        partitions.insert((&r.billing_period, &r.billing_account_id));
        for f in &r.files {
            if let (Some(unit), Some(held)) = (&f.unit, f.rows_held_out) {
                units.insert(unit, held);
            }
        }
    }
    Some(
        by_currency
            .into_iter()
            .map(|(currency, (sums, partitions, units))| CurrencyTotal {
                currency: currency.map(str::to_string),
                sums,
                partitions: partitions.len(),
                rows_held_out: units.values().sum(),
            })
            .collect(),
    )
}

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
fn first_account<R: ChunkReader + 'static>(reader: R, rel: &str) -> Result<Option<String>> {
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

fn sum_parquet<R: ChunkReader + 'static>(
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

// ---------------------------------------------------------------------------------------------
// Output

/// Terminal columns a cell takes: East Asian wide characters (service names such as
/// `云服务器 CVM`) take two.
fn display_width(s: &str) -> usize {
    s.chars()
        .map(|c| match u32::from(c) {
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

impl Totals {
    /// Lines worth a reader's attention beyond the rows: ledger outputs the lake lacks, files
    /// the ledger does not know, null BilledCost.
    pub fn findings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (path, unit) in &self.missing {
            out.push(format!(
                "the ledger lists {path} (unit {unit}) but the lake has no such file: its rows \
                 are in no total"
            ));
        }
        let unknown: BTreeSet<&str> = self
            .rows
            .iter()
            .flat_map(|r| &r.files)
            .filter(|f| f.unit.is_none())
            .map(|f| f.file.as_str())
            .collect();
        for f in unknown {
            out.push(format!(
                "{f} is in the lake but in no ledger entry: readers count it, billpipe did not \
                 write it (or lost track of it)"
            ));
        }
        let shared: BTreeSet<(&str, &str)> = self
            .rows
            .iter()
            .filter(|r| {
                r.files
                    .iter()
                    .map(|f| &f.file)
                    .collect::<BTreeSet<_>>()
                    .len()
                    > 1
            })
            .map(|r| (r.billing_period.as_str(), r.billing_account_id.as_str()))
            .collect();
        for (period, account) in shared {
            out.push(format!(
                "billing_period={period}/billing_account_id={account} holds several files: \
                 their rows are added together, as readers do — check they do not overlap"
            ));
        }
        let null_billed: u64 = self.rows.iter().map(|r| r.sums.billed.nulls).sum();
        if null_billed > 0 {
            out.push(format!(
                "{null_billed} row(s) have a null BilledCost: counted in rows, not in BilledCost"
            ));
        }
        out
    }

    /// The table `billpipe totals` prints by default: aligned columns, a grand total per
    /// currency, then findings.
    pub fn human(&self) -> String {
        let dim = self.by.header();
        let mut header = vec!["month", "account", "currency"];
        header.extend(dim);
        header.extend([
            "rows",
            "BilledCost",
            "EffectiveCost",
            "EC null",
            "snapshot",
            "held out",
            "loaded at",
            "source",
        ]);
        // Columns right-aligned: the counts and amounts.
        let numeric = |h: &str| {
            matches!(
                h,
                "rows" | "BilledCost" | "EffectiveCost" | "EC null" | "held out"
            )
        };
        let mut table: Vec<Vec<String>> = Vec::new();
        for r in &self.rows {
            let mut cells = vec![
                r.billing_period.clone(),
                r.billing_account_id.clone(),
                r.currency.clone().unwrap_or_else(|| "(null)".into()),
            ];
            if dim.is_some() {
                cells.push(r.group.clone().unwrap_or_else(|| "(null)".into()));
            }
            cells.extend([
                r.sums.rows.to_string(),
                r.sums.billed.total().unwrap_or_default(),
                r.sums.effective.total().unwrap_or_default(),
                r.sums.effective.nulls.to_string(),
            ]);
            let lead = cells.len();
            for (n, f) in r.files.iter().enumerate() {
                let mut line = if n == 0 {
                    cells.clone()
                } else {
                    vec![String::new(); lead]
                };
                line.extend([
                    if f.reload_pending {
                        format!("{} (reload pending)", f.snapshot)
                    } else {
                        f.snapshot.clone()
                    },
                    f.rows_held_out.map(|n| n.to_string()).unwrap_or_default(),
                    f.loaded_at.clone().unwrap_or_default(),
                    f.source_key.clone().unwrap_or_else(|| f.file.clone()),
                ]);
                table.push(line);
            }
        }
        let rows_end = table.len();
        for t in &self.currency_totals {
            let mut cells = vec![
                "total".to_string(),
                String::new(),
                t.currency.clone().unwrap_or_else(|| "(null)".into()),
            ];
            if dim.is_some() {
                cells.push(String::new());
            }
            cells.extend([
                t.sums.rows.to_string(),
                t.sums.billed.total().unwrap_or_default(),
                t.sums.effective.total().unwrap_or_default(),
                t.sums.effective.nulls.to_string(),
                format!(
                    "{} partition{}",
                    t.partitions,
                    if t.partitions == 1 { "" } else { "s" }
                ),
                t.rows_held_out.to_string(),
                String::new(),
                String::new(),
            ]);
            table.push(cells);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                table
                    .iter()
                    .map(|row| display_width(&row[c]))
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (c, cell) in cells.iter().enumerate() {
                let pad = widths[c].saturating_sub(display_width(cell));
                if c > 0 {
                    s.push_str("  ");
                }
                if numeric(header[c]) {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(cell);
                } else if c + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    s.push_str(cell);
                    s.push_str(&" ".repeat(pad));
                }
            }
            s.trim_end().to_string()
        };
        let mut out = String::new();
        let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
        let _ = writeln!(out, "{}", line(&head));
        for (n, row) in table.iter().enumerate() {
            if n == rows_end {
                let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
                let _ = writeln!(out, "{}", "-".repeat(rule.min(160)));
            }
            let _ = writeln!(out, "{}", line(row));
        }
        let _ = writeln!(
            out,
            "{} group{} from {} Parquet file{} of {}: amounts read from the files, snapshots \
             from the ledger",
            self.rows.len(),
            if self.rows.len() == 1 { "" } else { "s" },
            self.files_read,
            if self.files_read == 1 { "" } else { "s" },
            self.dest
        );
        let _ = writeln!(
            out,
            "EC null: rows whose EffectiveCost is null, left out of its sum (empty when all are); \
             held out: the unit's rows in _quarantine/"
        );
        for f in self.findings() {
            let _ = writeln!(out, "note: {f}");
        }
        out
    }

    /// A JSON array, one object per row (pretty-printed); amounts as decimal strings, `null`
    /// where every row is null.
    pub fn to_json(&self) -> Result<String> {
        /// Field order as in the table; the `--by` column only when grouping by it.
        #[derive(Serialize)]
        struct JsonRow<'a> {
            billing_period: &'a str,
            billing_account_id: &'a str,
            currency: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            service_name: Option<Option<&'a str>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            sub_account_id: Option<Option<&'a str>>,
            rows: u64,
            billed_cost: Option<String>,
            billed_cost_null_rows: u64,
            effective_cost: Option<String>,
            effective_cost_null_rows: u64,
            snapshot: String,
            files: &'a [FileSnapshot],
        }
        let rows: Vec<JsonRow> = self
            .rows
            .iter()
            .map(|r| JsonRow {
                billing_period: &r.billing_period,
                billing_account_id: &r.billing_account_id,
                currency: r.currency.as_deref(),
                service_name: (self.by == GroupBy::Service).then_some(r.group.as_deref()),
                sub_account_id: (self.by == GroupBy::SubAccount).then_some(r.group.as_deref()),
                rows: r.sums.rows,
                billed_cost: r.sums.billed.total(),
                billed_cost_null_rows: r.sums.billed.nulls,
                effective_cost: r.sums.effective.total(),
                effective_cost_null_rows: r.sums.effective.nulls,
                snapshot: r.snapshot(),
                files: &r.files,
            })
            .collect();
        serde_json::to_string_pretty(&rows).map_err(|e| Error::Lake {
            path: self.dest.clone(),
            message: format!("writing JSON: {e}"),
        })
    }

    /// A header and one line per row; amounts as decimal strings, empty where every row is null.
    /// A group made of several files lists their snapshots separated by `; `.
    pub fn to_csv(&self) -> Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let csv_err = |e: csv::Error| Error::Lake {
            path: self.dest.clone(),
            message: format!("writing CSV: {e}"),
        };
        let mut header = vec!["billing_period", "billing_account_id", "currency"];
        header.extend(self.by.field());
        header.extend([
            "rows",
            "billed_cost",
            "billed_cost_null_rows",
            "effective_cost",
            "effective_cost_null_rows",
            "snapshot",
            "unit",
            "source_key",
            "source_etag",
            "loaded_at",
            "rows_held_out",
            "quarantine",
            "files",
        ]);
        w.write_record(&header).map_err(csv_err)?;
        for r in &self.rows {
            let join = |f: &dyn Fn(&FileSnapshot) -> Option<String>| {
                r.files
                    .iter()
                    .map(|x| f(x).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let mut rec = vec![
                r.billing_period.clone(),
                r.billing_account_id.clone(),
                r.currency.clone().unwrap_or_default(),
            ];
            if self.by.field().is_some() {
                rec.push(r.group.clone().unwrap_or_default());
            }
            rec.extend([
                r.sums.rows.to_string(),
                r.sums.billed.total().unwrap_or_default(),
                r.sums.billed.nulls.to_string(),
                r.sums.effective.total().unwrap_or_default(),
                r.sums.effective.nulls.to_string(),
                r.snapshot(),
                join(&|f| f.unit.clone()),
                join(&|f| f.source_key.clone()),
                join(&|f| f.source_etag.clone()),
                join(&|f| f.loaded_at.clone()),
                join(&|f| f.rows_held_out.map(|n| n.to_string())),
                join(&|f| f.quarantine.clone()),
                join(&|f| Some(f.file.clone())),
            ]);
            w.write_record(&rec).map_err(csv_err)?;
        }
        let bytes = w.into_inner().map_err(|e| Error::Lake {
            path: self.dest.clone(),
            message: format!("writing CSV: {e}"),
        })?;
        String::from_utf8(bytes).map_err(|e| Error::Lake {
            path: self.dest.clone(),
            message: format!("writing CSV: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_exact_and_null_aware() {
        let mut s = DecimalSum::default();
        assert_eq!(s.total(), None);
        s.nulls += 2;
        assert_eq!(s.total(), None, "all null is no sum, not 0");
        s.add(1, 18).unwrap(); // 1e-18
        s.add(12_345, 2).unwrap(); // 123.45
        assert_eq!(s.total().as_deref(), Some("123.450000000000000001"));
        let mut t = DecimalSum::default();
        t.add(-12_345, 2).unwrap();
        t.merge(&s).unwrap();
        assert_eq!(t.total().as_deref(), Some("0.000000000000000001"));
        assert_eq!((t.values, t.nulls), (3, 2));
        let mut z = DecimalSum::default();
        z.add(0, 18).unwrap();
        assert_eq!(z.total().as_deref(), Some("0"));
        let mut big = DecimalSum::default();
        big.add(i128::MAX, 0).unwrap();
        assert!(big.add(1, 0).is_none(), "overflow is reported, not wrapped");
    }
}
