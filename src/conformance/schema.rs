//! FOCUS schemas as data: `schemas/focus-<version>.toml` lists every column with its type,
//! feature level, nullability and allowed values. This module only loads them; what the types
//! mean for Arrow lives in `decode`, what the rules mean in `validate`.
//!
//! Schemas are looked up beside the pipeline file (`<pipeline dir>/../schemas/`); when that folder
//! does not exist (an installed binary run outside the repository) the copies compiled into the
//! binary are used, so `billpipe` works from any directory.

use std::path::Path;

use arrow_schema::{DataType, TimeUnit};
use serde::Deserialize;

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
pub struct Schema {
    pub version: String,
    pub decimal_precision: u8,
    pub decimal_scale: i8,
    #[serde(rename = "column")]
    pub columns: Vec<ColumnDef>,
    /// Column names of earlier FOCUS drafts (0.5, 1.0-preview) and what they became, to tell an
    /// old file from a broken one.
    #[serde(default)]
    pub previous_names: std::collections::BTreeMap<String, String>,
    /// Cross-column conformance rules (see `rules`).
    #[serde(default, rename = "rule")]
    pub rules: Vec<crate::conformance::rules::RuleDef>,
}

/// Schemas shipped in the binary, for runs outside the repository.
const EMBEDDED: &[(&str, &str)] = &[
    ("focus-1.0", include_str!("../../schemas/focus-1.0.toml")),
    ("focus-1.1", include_str!("../../schemas/focus-1.1.toml")),
    ("focus-1.2", include_str!("../../schemas/focus-1.2.toml")),
    ("focus-1.3", include_str!("../../schemas/focus-1.3.toml")),
];

impl Schema {
    /// Loads `name` (e.g. `focus-1.1`) from `dir` if given and present, else the embedded copy.
    pub fn load(name: &str, dir: Option<&Path>) -> Result<Schema> {
        let (text, origin) = config_text(dir, &format!("{name}.toml"), name, EMBEDDED, "schema")?;
        Schema::parse(&text, &origin)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Schema> {
        let schema: Schema =
            toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
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
            crate::conformance::rules::check_def(rule)
                .map_err(|e| Error::Config(format!("{origin}: {e}")))?;
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

/// The text of config file `file` in `dir` when it is there, else the copy compiled into the
/// binary under `name` (so billpipe works outside the repository), with where it came from.
/// `what` names the kind of file for errors ("schema", "mapping", "profile").
pub fn config_text(
    dir: Option<&Path>,
    file: &str,
    name: &str,
    embedded: &[(&str, &str)],
    what: &str,
) -> Result<(String, String)> {
    if let Some(path) = dir.map(|d| d.join(file)).filter(|p| p.exists()) {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        return Ok((text, path.display().to_string()));
    }
    embedded
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| (t.to_string(), format!("embedded {what} {name}")))
        .ok_or_else(|| Error::Config(format!("unknown {what} {name:?}")))
}

/// Every FOCUS version billpipe knows: the embedded schemas plus any `focus-<version>.toml` in
/// `dir` (a newer version is added by dropping its file there). Oldest first.
pub fn focus_versions(dir: Option<&Path>) -> Result<Vec<Schema>> {
    let mut names: Vec<String> = EMBEDDED.iter().map(|(n, _)| n.to_string()).collect();
    if let Some(dir) = dir {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if let Some(name) = file.strip_suffix(".toml") {
                    if name.starts_with("focus-") && !names.iter().any(|n| n == name) {
                        names.push(name.to_string());
                    }
                }
            }
        }
    }
    let mut schemas = names
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
}
