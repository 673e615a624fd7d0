//! FOCUS schemas as data: `schemas/focus-<version>.toml` lists every column with its type,
//! feature level, nullability and allowed values. This module only loads them; what the types
//! mean for Arrow lives in `decode`, what the rules mean in `validate`.
//!
//! A schema file also lists cross-column rules (`[[rule]]`): how a rule is written ([`RuleDef`],
//! [`RuleKind`], [`Severity`]) and checked when loaded ([`check_def`]) is part of the file format
//! and lives here; what a rule does to rows lives in `rules`, which reads schemas (so `schema`
//! does not import `rules`).
//!
//! Schemas are found by the one lookup rule of [`crate::config`] (the schemas folder beside the
//! pipeline file, else the copies compiled into the binary).

use std::collections::BTreeMap;
use std::path::Path;

use arrow_schema::{DataType, TimeUnit};

use serde::{Deserialize, Serialize};

use crate::config::{self, Kind};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    String,
    Decimal,
    Timestamp,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureLevel {
    Mandatory,
    Conditional,
    Recommended,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    pub feature_level: FeatureLevel,
    pub nullable: bool,
    #[serde(default)]
    pub allowed_values: Vec<String>,
    /// Where the spec contradicts itself about this column, which reading the schema takes
    /// and why; for people only.
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    pub version: String,
    pub decimal_precision: u8,
    pub decimal_scale: i8,
    #[serde(rename = "column")]
    pub columns: Vec<ColumnDef>,
    /// Column names of earlier FOCUS drafts (0.5, 1.0-preview) and what they became, to tell an
    /// old file from a broken one.
    #[serde(default)]
    pub previous_names: BTreeMap<String, String>,
    /// Cross-column conformance rules (see `rules`).
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleDef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Hold the row out of the lake (file-level rules: reject the file). Opt-in gatekeeping.
    Quarantine,
    Error,
    Warning,
    Off,
}

impl Severity {
    /// A breach of the spec (`error`, or `quarantine` which also holds the row out): what
    /// `validate` fails a file for.
    pub fn is_error(self) -> bool {
        matches!(self, Severity::Error | Severity::Quarantine)
    }
}

/// What a cross-column rule checks. `columns` of the rule are the operands, in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// columns[0] < columns[1] when both are set.
    Ordered,
    /// columns[0] and columns[1] are both null or both set.
    PairedNull,
    /// columns[0] must be null.
    Null,
    /// columns[0] must not be null.
    NotNull,
    /// columns[0] >= 0 when set.
    NonNegative,
    /// columns[0] = columns[1] x columns[2] within the tolerance, when all three are set.
    Product,
    /// columns[0] != `value`.
    NotValue,
    /// columns[0] = `value` when set (a null is the nullability rules' business).
    Value,
    /// columns[0] (a decimal) is 0 when set.
    Zero,
    /// columns[0] sits under its parent: where `parents` lists columns[0]'s value, columns[1]
    /// holds the parent it names (values `parents` does not list are `Allowed.<Column>`'s
    /// business; rows with either cell null are not judged).
    Parent,
    /// columns[0] is a FOCUS Key-Value object: a JSON object, unique keys, no nested values.
    KeyValue,
    /// columns[0] is a JSON object (nesting allowed).
    JsonObject,
    /// columns[1] - columns[0] is a whole number of minutes: both are period bounds, and an
    /// exclusive end bound lands on a minute, an inclusive last second (`…T15:59:59Z`) does not.
    WholeMinutes,
    /// File level: each value of columns[0] goes with one value of columns[1] in the whole file.
    OneValuePer,
    /// columns[0] (a date-time) falls in the billing month named by the file's name.
    PeriodOfName,
}

/// A cross-column rule as written in a schema file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub id: String,
    pub kind: RuleKind,
    pub columns: Vec<String>,
    /// `not_value`: the forbidden value; `value`: the required one.
    #[serde(default)]
    pub value: String,
    /// `parent`: each child value of columns[0] and the value of columns[1] it belongs under.
    #[serde(default)]
    pub parents: BTreeMap<String, String>,
    /// The rule judges only rows where every listed column holds one of the listed values...
    #[serde(default)]
    pub when: BTreeMap<String, Vec<String>>,
    /// ...and no listed column holds one of its listed values...
    #[serde(default)]
    pub unless: BTreeMap<String, Vec<String>>,
    /// ...and these columns are null...
    #[serde(default)]
    pub when_null: Vec<String>,
    /// ...and these are not...
    #[serde(default)]
    pub when_not_null: Vec<String>,
    /// ...and these two columns are both set and differ (e.g. PublisherName vs ProviderName).
    #[serde(default)]
    pub when_differ: Vec<String>,
    /// `product`: allowed difference, relative to the expected value, and at least `tolerance_abs`.
    #[serde(default)]
    pub tolerance_rel: f64,
    #[serde(default)]
    pub tolerance_abs: f64,
    #[serde(default = "default_error")]
    pub severity: Severity,
    pub message: String,
    /// Why the rule reads the spec the way it does (errata, contradictions); for people only.
    #[serde(default)]
    pub note: String,
}

fn default_error() -> Severity {
    Severity::Error
}

impl Schema {
    /// Loads `name` (e.g. `focus-1.1`) from `dir` if given and present, else the embedded copy.
    pub fn load(name: &str, dir: Option<&Path>) -> Result<Schema> {
        let (text, origin) = config::text(dir, Kind::Schema, name)?;
        Schema::parse(&text, &origin)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Schema> {
        let schema: Schema = config::parse(text, origin)?;
        if schema.decimal_precision == 0 || schema.decimal_precision > 38 {
            return Err(Error::Config(format!(
                "{origin}: decimal_precision must be 1..=38"
            )));
        }
        if schema.decimal_scale < 0 || schema.decimal_scale as u8 > schema.decimal_precision {
            return Err(Error::Config(format!(
                "{origin}: decimal_scale must be 0..=decimal_precision"
            )));
        }
        for rule in &schema.rules {
            check_def(rule).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        }
        Ok(schema)
    }

    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The Arrow type billpipe writes for a column of this schema.
    pub fn arrow_type(&self, ty: ColumnType) -> DataType {
        match ty {
            ColumnType::String | ColumnType::Json => DataType::Utf8,
            ColumnType::Decimal => DataType::Decimal128(self.decimal_precision, self.decimal_scale),
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// Checks a rule's operand count, so a schema file with a mistake fails when loaded.
pub fn check_def(r: &RuleDef) -> std::result::Result<(), String> {
    let want = match r.kind {
        RuleKind::Null
        | RuleKind::NotNull
        | RuleKind::NonNegative
        | RuleKind::NotValue
        | RuleKind::Value
        | RuleKind::Zero
        | RuleKind::KeyValue
        | RuleKind::JsonObject
        | RuleKind::PeriodOfName => 1,
        RuleKind::Ordered
        | RuleKind::PairedNull
        | RuleKind::WholeMinutes
        | RuleKind::OneValuePer
        | RuleKind::Parent => 2,
        RuleKind::Product => 3,
    };
    if r.columns.len() != want {
        return Err(format!(
            "rule {}: kind {:?} takes {want} column(s), got {}",
            r.id,
            r.kind,
            r.columns.len()
        ));
    }
    if !matches!(r.when_differ.len(), 0 | 2) {
        return Err(format!(
            "rule {}: when_differ names two columns, got {}",
            r.id,
            r.when_differ.len()
        ));
    }
    if r.kind == RuleKind::Parent && r.parents.is_empty() {
        return Err(format!("rule {}: kind parent needs a parents table", r.id));
    }
    if matches!(r.kind, RuleKind::Value) && r.value.is_empty() {
        return Err(format!("rule {}: kind value needs a value", r.id));
    }
    Ok(())
}

/// Every FOCUS version billpipe knows: the embedded schemas plus any `focus-<version>.toml` in
/// `dir` (a newer version is added by dropping its file there). Oldest first.
pub fn focus_versions(dir: Option<&Path>) -> Result<Vec<Schema>> {
    let mut schemas = config::names(dir, Kind::Schema)
        .into_iter()
        .filter(|n| n.starts_with("focus-"))
        .collect::<Vec<_>>()
        .iter()
        .map(|n| Schema::load(n, dir))
        .collect::<Result<Vec<_>>>()?;
    schemas.sort_by_key(|s| version_key(&s.version));
    Ok(schemas)
}

fn version_key(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// The FOCUS version a header is written in: the newest version one of whose new columns (not
/// in the version before it) appears, else the oldest. `versions` oldest first.
pub fn detect_version<'a>(header: &[String], versions: &'a [Schema]) -> Option<&'a Schema> {
    let has = |name: &str| header.iter().any(|h| h == name);
    for (i, s) in versions.iter().enumerate().rev() {
        let Some(prev) = i.checked_sub(1).map(|p| &versions[p]) else {
            break;
        };
        if s.columns
            .iter()
            .any(|c| prev.column(&c.name).is_none() && has(&c.name))
        {
            return Some(s);
        }
    }
    versions.first()
}

/// For each FOCUS column of any known version, the first version that has it.
pub fn column_versions(versions: &[Schema]) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for s in versions {
        for c in &s.columns {
            out.entry(c.name.clone())
                .or_insert_with(|| s.version.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schemas_load_and_type_money_as_decimal() {
        for name in ["focus-1.0", "focus-1.1", "focus-1.2", "focus-1.3"] {
            let s = Schema::load(name, None).unwrap();
            let billed = s.column("BilledCost").unwrap();
            assert_eq!(billed.ty, ColumnType::Decimal);
            assert_eq!(billed.feature_level, FeatureLevel::Mandatory);
            assert_eq!(s.arrow_type(billed.ty), DataType::Decimal128(38, 18));
            assert_eq!(s.column("BillingAccountId").unwrap().ty, ColumnType::String);
        }
        let v11 = Schema::load("focus-1.1", None).unwrap();
        assert!(v11.column("CapacityReservationId").is_some());
        assert!(Schema::load("focus-1.0", None)
            .unwrap()
            .column("CapacityReservationId")
            .is_none());
    }

    #[test]
    fn versions_are_told_apart_by_their_new_columns() {
        let all = focus_versions(None).unwrap();
        let names: Vec<&str> = all.iter().map(|s| s.version.as_str()).collect();
        assert_eq!(names, ["1.0", "1.1", "1.2", "1.3"]);
        let header = |cols: &[&str]| -> Vec<String> {
            ["BilledCost", "ChargeCategory"]
                .iter()
                .chain(cols)
                .map(|s| s.to_string())
                .collect()
        };
        let v = |cols: &[&str]| detect_version(&header(cols), &all).unwrap().version.clone();
        assert_eq!(v(&[]), "1.0");
        assert_eq!(v(&["SkuMeter"]), "1.1");
        assert_eq!(v(&["SkuMeter", "InvoiceId"]), "1.2");
        assert_eq!(v(&["ServiceProviderName"]), "1.3");
        assert_eq!(column_versions(&all)["CapacityReservationId"], "1.1");
        assert_eq!(column_versions(&all)["BilledCost"], "1.0");
    }

    #[test]
    fn an_unknown_field_is_refused_by_name() {
        let (text, _) = config::text(None, Kind::Schema, "focus-1.0").unwrap();
        let typo = text.replacen(
            "decimal_scale = 18",
            "decimal_scale = 18\ndecimal_scael = 18",
            1,
        );
        let e = Schema::parse(&typo, "typo.toml").unwrap_err().to_string();
        assert!(e.contains("unknown field `decimal_scael`"), "{e}");
        let typo = text.replacen("\nnullable = ", "\nnulable = true\nnullable = ", 1);
        let e = Schema::parse(&typo, "typo.toml").unwrap_err().to_string();
        assert!(e.contains("unknown field `nulable`"), "{e}");
        let typo = text.replacen("[[rule]]\n", "[[rule]]\nseverty = \"warning\"\n", 1);
        let e = Schema::parse(&typo, "typo.toml").unwrap_err().to_string();
        assert!(e.contains("unknown field `severty`"), "{e}");
    }
}
