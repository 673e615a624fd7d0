//! Pipelines and file families: which object keys are bill files, and what each one is a
//! snapshot of. Everything here comes from `pipelines/*.toml`; no family is written in Rust.
//!
//! A family's name pattern yields the account and either a date (a cumulative, month-to-date
//! snapshot) or a month (the final snapshot). Families that share a `unit` replace each other
//! for one (account, month): that triple is a [`SnapshotUnit`], the thing the ledger tracks and
//! the lake holds exactly one version of.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::config;
use crate::conformance::mapping::Mapping;
use crate::conformance::schema::Schema;
use crate::store::source::ObjectInfo;
use crate::values::Month;
use crate::{Error, Result};

pub use crate::config::DEFAULT_PIPELINE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Month-to-date: a later one replaces an earlier one.
    Cumulative,
    /// The month's final bill: replaces every cumulative one.
    Final,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    #[serde(default = "default_delimiter")]
    pub delimiter: String,
    #[serde(default = "default_nulls")]
    pub null_values: Vec<String>,
    /// UTC offset of date-times written without a zone (`+08:00` for Beijing time).
    #[serde(default = "default_offset")]
    pub naive_time_offset: String,
    /// A line or record longer than this rejects the file.
    #[serde(default = "default_max_record")]
    pub max_record_bytes: usize,
}

fn default_max_record() -> usize {
    8 << 20
}

fn default_delimiter() -> String {
    ",".into()
}
fn default_nulls() -> Vec<String> {
    vec![String::new()]
}
fn default_offset() -> String {
    "+00:00".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionOptions {
    pub period_column: String,
    #[serde(default = "default_offset")]
    pub period_utc_offset: String,
    pub account_column: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FamilyDef {
    name: String,
    unit: String,
    pattern: String,
    snapshot: SnapshotKind,
    #[serde(default = "default_format")]
    format: String,
    /// For `date` names: how many days before the named date the snapshot's data ends. A
    /// month-to-date file delivered on the 1st covers the previous month, so its billing month
    /// is the month of (date - lag).
    #[serde(default)]
    data_lag_days: u32,
    /// A native format's mapping to FOCUS (`schemas/<mapping>.toml`); none for FOCUS files.
    mapping: Option<String>,
    /// `one` (default): a file holds the account its name gives, and every row must carry it;
    /// `many`: a file holds many accounts (a reseller's consolidated bill), the rows decide.
    #[serde(default)]
    accounts: Accounts,
}

/// How many billing accounts one file of a family holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accounts {
    #[default]
    One,
    Many,
}

fn default_profile() -> String {
    "strict".into()
}

fn default_format() -> String {
    "csv".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineDef {
    name: String,
    schema: String,
    /// Conformance profile (`schemas/profile-<name>.toml`); `strict` if not given.
    #[serde(default = "default_profile")]
    profile: String,
    csv: CsvOptions,
    partition: PartitionOptions,
    family: Vec<FamilyDef>,
    /// Patterns (matched case-insensitively against the file name, not its folders) of names
    /// that look like this pipeline's bills: an object no family takes whose name matches one
    /// is a near miss — reported, and the run exits 3 — rather than silently skipped.
    #[serde(default)]
    near_miss: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Family {
    pub name: String,
    pub unit: String,
    /// What a file of the family is, and so its rank: `cumulative` files are named by a
    /// delivery `date`, `final` ones by a `month`. Kept (rather than inferred from the pattern
    /// alone) because it is what a pipeline author states and a reader of the file looks for;
    /// it is checked against the pattern's groups when loaded, so the two cannot disagree, and
    /// `classify` ranks by it.
    pub snapshot: SnapshotKind,
    pub format: String,
    pub data_lag_days: u32,
    pub mapping: Option<std::sync::Arc<Mapping>>,
    pub accounts: Accounts,
    regex: Regex,
}

/// A loaded pipeline: its families, CSV options, partitioning and schema.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub origin: String,
    pub csv: CsvOptions,
    pub partition: PartitionOptions,
    pub families: Vec<Family>,
    near_miss: Vec<Regex>,
    pub schema: Schema,
    pub profile: String,
    /// Where schemas, mappings and profiles are looked up (else the embedded copies).
    pub schema_dir: Option<PathBuf>,
}

impl Pipeline {
    /// Loads a pipeline file. Without an explicit path, `pipelines/tencent.toml` in the
    /// working directory is used if present, else the copy compiled into the binary. Schemas,
    /// mappings and profiles come from the schemas folder [`config::schema_dir`] gives.
    pub fn load(path: Option<&Path>) -> Result<Pipeline> {
        let source = config::pipeline(path)?;
        Pipeline::parse(&source.text, &source.origin, source.schema_dir.as_deref())
    }

    pub fn parse(text: &str, origin: &str, schema_dir: Option<&Path>) -> Result<Pipeline> {
        let def: PipelineDef = config::parse(text, origin)?;
        let schema = Schema::load(&def.schema, schema_dir)?;
        let mut families = Vec::new();
        for f in def.family {
            // Any folder prefix, whole file name, any case. `\d` means an ASCII digit: Unicode
            // digits (`١١٥`, `１１５`) would make a second unit of the same account.
            let full = format!("(?i)(?:^|/)(?:{})$", f.pattern.replace(r"\d", "[0-9]"));
            let regex = Regex::new(&full).map_err(|e| {
                Error::Config(format!("{origin}: family {}: bad pattern: {e}", f.name))
            })?;
            let names: Vec<&str> = regex.capture_names().flatten().collect();
            let has_period = names.contains(&"date") || names.contains(&"month");
            if !names.contains(&"account") || !has_period {
                return Err(Error::Config(format!(
                    "{origin}: family {}: pattern needs named groups `account` and `date` or `month`",
                    f.name
                )));
            }
            // The snapshot kind decides the rank; the pattern must name what it needs.
            let (needs, refuses) = match f.snapshot {
                SnapshotKind::Cumulative => ("date", "month"),
                SnapshotKind::Final => ("month", "date"),
            };
            if !names.contains(&needs) || names.contains(&refuses) {
                return Err(Error::Config(format!(
                    "{origin}: family {}: snapshot = \"{}\" needs a `{needs}` group and no `{refuses}` group in its pattern",
                    f.name,
                    if needs == "date" { "cumulative" } else { "final" }
                )));
            }
            if f.format != "csv" {
                return Err(Error::Config(format!(
                    "{origin}: family {}: format {:?} is not supported yet (only csv)",
                    f.name, f.format
                )));
            }
            let mapping = match &f.mapping {
                Some(name) => Some(std::sync::Arc::new(Mapping::load(name, schema_dir)?)),
                None => None,
            };
            families.push(Family {
                name: f.name,
                unit: f.unit,
                snapshot: f.snapshot,
                format: f.format,
                data_lag_days: f.data_lag_days,
                mapping,
                accounts: f.accounts,
                regex,
            });
        }
        if def.csv.delimiter.len() != 1 {
            return Err(Error::Config(format!(
                "{origin}: csv.delimiter must be one byte"
            )));
        }
        for col in [&def.partition.period_column, &def.partition.account_column] {
            if schema.column(col).is_none() {
                return Err(Error::Config(format!(
                    "{origin}: partition column {col} is not in schema {}",
                    def.schema
                )));
            }
        }
        let near_miss = def
            .near_miss
            .iter()
            .map(|p| {
                Regex::new(&format!("(?i){p}")).map_err(|e| {
                    Error::Config(format!("{origin}: bad near_miss pattern {p:?}: {e}"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Pipeline {
            near_miss,
            profile: def.profile,
            schema_dir: schema_dir.map(Path::to_path_buf),
            name: def.name,
            origin: origin.to_string(),
            csv: def.csv,
            partition: def.partition,
            families,
            schema,
        })
    }

    /// Decides what an object is. Never fails: anything unrecognised is a reason to skip.
    pub fn classify(&self, obj: &ObjectInfo) -> Classification {
        if obj.key.ends_with('/') {
            return Classification::Unrecognised("folder marker".into());
        }
        for family in &self.families {
            let Some(caps) = family.regex.captures(&obj.key) else {
                continue;
            };
            let account = caps["account"].to_string();
            // Loading checked that a cumulative family's pattern has `date`, a final one's `month`.
            let parsed = match family.snapshot {
                SnapshotKind::Cumulative => caps
                    .name("date")
                    .and_then(|d| parse_date(d.as_str()))
                    .map(|date| {
                        let covered = date - chrono::Days::new(family.data_lag_days as u64);
                        let month = format!("{}", covered.format("%Y-%m"));
                        (
                            month,
                            SnapshotRank::Cumulative(date.format("%Y%m%d").to_string()),
                        )
                    }),
                SnapshotKind::Final => caps
                    .name("month")
                    .and_then(|m| parse_month(m.as_str()))
                    .map(|month| (month, SnapshotRank::Final)),
            };
            let Some((month, rank)) = parsed else {
                return Classification::NearMiss(format!(
                    "named like family {} but its date is not a real date",
                    family.name
                ));
            };
            return Classification::Bill(Box::new(BillFile {
                object: obj.clone(),
                family: family.name.clone(),
                mapping: family.mapping.clone(),
                accounts: family.accounts,
                unit: SnapshotUnit {
                    unit: family.unit.clone(),
                    account,
                    month,
                },
                rank,
                part: caps.name("part").map(|p| p.as_str().to_string()),
                part_signature: caps
                    .name("part")
                    .map(|p| format!("{}{{part}}{}", &obj.key[..p.start()], &obj.key[p.end()..])),
                other_parts: Vec::new(),
            }));
        }
        if let Some(why) = self.near_miss(&obj.key) {
            return Classification::NearMiss(why);
        }
        Classification::Unrecognised(format!(
            "name matches no file family of pipeline {}",
            self.name
        ))
    }

    /// Why an unrecognised key looks like a bill: it would match a family but for a copy
    /// suffix (`… (1).csv`, `… - Copy.csv`) or an extra compression or partial-download
    /// extension (`….csv.gz`, `….zip.part`). Such a file is not loaded (a copy would compete
    /// with its original; a renamed or half-downloaded file is not what the family promises),
    /// but the run says so and exits non-zero, since money may be missing.
    fn near_miss(&self, key: &str) -> Option<String> {
        const EXTRA_EXTENSIONS: [&str; 10] = [
            ".gz",
            ".gzip",
            ".zst",
            ".zstd",
            ".bz2",
            ".xz",
            ".zip",
            ".tmp",
            ".part",
            ".crdownload",
        ];
        let lower = key.to_ascii_lowercase();
        let mut candidates: Vec<(String, String)> = Vec::new();
        for ext in EXTRA_EXTENSIONS {
            if lower.ends_with(ext) {
                let cut = key.len() - ext.len();
                candidates.push((
                    key[..cut].to_string(),
                    format!("an extra {ext:?} extension"),
                ));
            }
        }
        let (dir, name) = key.rsplit_once('/').map_or(("", key), |(d, n)| (d, n));
        if let Some((stem, ext)) = name.rsplit_once('.') {
            if let Some(original) = strip_copy_suffix(stem) {
                let prefix = if dir.is_empty() {
                    String::new()
                } else {
                    format!("{dir}/")
                };
                candidates.push((
                    format!("{prefix}{original}.{ext}"),
                    format!("the copy suffix {:?}", &stem[original.len()..]),
                ));
            }
        }
        for (candidate, why) in candidates {
            if let Some(f) = self.families.iter().find(|f| f.regex.is_match(&candidate)) {
                return Some(format!(
                    "named like family {} but for {why}; rename it (or add a family) to load it",
                    f.name
                ));
            }
        }
        let name = key.rsplit('/').next().unwrap_or(key);
        self.near_miss.iter().find(|p| p.is_match(name)).map(|p| {
            format!(
                "named like a bill ({:?}) but no family of pipeline {} matches it; rename it (or add a family) to load it",
                p.as_str().trim_start_matches("(?i)"),
                self.name
            )
        })
    }
}

/// `stem` without a trailing copy marker (` (1)`, `(2)`, ` - Copy`, ` copy`, `_copy`).
fn strip_copy_suffix(stem: &str) -> Option<&str> {
    let trimmed = stem.trim_end();
    if let Some(open) = trimmed.strip_suffix(')').and_then(|t| t.rfind('(')) {
        let inside = &trimmed[open + 1..trimmed.len() - 1];
        if !inside.is_empty() && inside.bytes().all(|b| b.is_ascii_digit()) {
            return Some(trimmed[..open].trim_end());
        }
    }
    let lower = trimmed.to_ascii_lowercase();
    for marker in [" - copy", " copy", "_copy", "-copy"] {
        if lower.ends_with(marker) {
            return Some(&trimmed[..trimmed.len() - marker.len()]);
        }
    }
    None
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y%m%d").ok()
}

/// `YYYYMM` or `YYYY-MM` (any separator) of a name, as `YYYY-MM`.
fn parse_month(s: &str) -> Option<String> {
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    Month::from_digits(&digits).map(|m| m.to_string())
}

/// What one snapshot is of: the lake holds exactly one loaded version per unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SnapshotUnit {
    /// Families sharing this name replace each other.
    pub unit: String,
    pub account: String,
    /// `YYYY-MM`
    pub month: String,
}

impl SnapshotUnit {
    /// File name (without extension) of this unit's output in each partition it touches.
    pub fn file_stem(&self) -> String {
        format!(
            "{}-{}-{}",
            self.unit,
            self.account,
            self.month.replace('-', "")
        )
    }
}

impl fmt::Display for SnapshotUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.unit, self.account, self.month)
    }
}

/// How complete a snapshot is: every cumulative one ranks below the final one, later dates above
/// earlier ones.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotRank {
    /// `YYYYMMDD` of the delivery date in the name.
    Cumulative(String),
    Final,
}

impl fmt::Display for SnapshotRank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotRank::Cumulative(d) => write!(f, "daily {d}"),
            SnapshotRank::Final => write!(f, "monthly final"),
        }
    }
}

/// An object recognised as a bill file.
#[derive(Debug, Clone)]
pub struct BillFile {
    pub object: ObjectInfo,
    pub family: String,
    /// The family's native→FOCUS mapping, if its files are not FOCUS.
    pub mapping: Option<std::sync::Arc<Mapping>>,
    /// Whether the rows must all carry the name's account.
    pub accounts: Accounts,
    pub unit: SnapshotUnit,
    pub rank: SnapshotRank,
    /// The `part` the name gives, for families whose snapshots span several objects
    /// (`…-00001.csv.gz`, `…_2.csv`): objects of one unit, rank and folder with different
    /// parts are one snapshot.
    pub part: Option<String>,
    /// For a part: its key with the part number blanked out (`…-{part}-20251203.csv`). Parts
    /// of one snapshot share it; two downloads of the same parts (another date or copy suffix
    /// elsewhere in the name) do not, so they are two snapshots, never one with doubled parts.
    pub part_signature: Option<String>,
    /// Set by the plan on the object that leads a multi-part snapshot: the other parts, in
    /// part order, loaded and replaced together with it.
    pub other_parts: Vec<ObjectInfo>,
}

impl BillFile {
    /// Every object of the snapshot this file leads: itself, then its other parts.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectInfo> {
        std::iter::once(&self.object).chain(self.other_parts.iter())
    }
}

#[derive(Debug, Clone)]
pub enum Classification {
    /// Boxed: a bill file is far larger than the other variants.
    Bill(Box<BillFile>),
    /// Named like a bill but not one any family accepts (an impossible date, a copy suffix,
    /// an extra extension): not loaded, reported, and the run exits non-zero.
    NearMiss(String),
    Unrecognised(String),
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
