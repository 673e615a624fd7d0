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
//!
//! Files: this module is the public API (options, the result types, `totals`); `read` sums a
//! Parquet file, `snapshot` says from the ledger which snapshot a file is, `render` prints the
//! result as a table, JSON or CSV.

mod read;
mod render;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde::Serialize;

use crate::ingest::decode::format_decimal;
use crate::partition::partition_of;
use crate::state::ledger::{Ledger, LedgerEntry, LEDGER_PATH};
use crate::store::lake;
use crate::store::s3::{S3Context, S3Location, S3Options};
use crate::{Error, Result};
use read::{first_account, sum_parquet};
use snapshot::{describe_file, family_lags};

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
    // Partitions and the ledger only: `_billpipe/` may hold a run's staging and the tens of
    // thousands of replaced files the next run frees while this lists (`store::set_aside`).
    let has_ledger = lake
        .list(LEDGER_PATH)?
        .iter()
        .any(|(rel, _)| rel == LEDGER_PATH);
    let listing = lake.list(crate::partition::PERIOD_DIR)?;
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
