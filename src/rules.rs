//! FOCUS conformance rules as data, evaluated over whole Arrow arrays.
//!
//! Column rules come from the schema's column table: `NotNull.<Column>` for every column that
//! does not allow nulls, `Allowed.<Column>` for every column with allowed values (compared
//! case-sensitively). Cross-column rules are listed in the schema file (`[[rule]]`, kinds below).
//! A profile (`schemas/profile-<name>.toml`) adjusts severities for a provider without code:
//! `strict` is the spec as written; `tencent` turns Tencent's documented gaps into warnings.
//!
//! Severities: `error` quarantines the row (rule id, line, column, value), `warning` keeps it and
//! counts it in the report, `off` skips the rule.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use arrow_array::{
    Array, ArrayRef, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use serde::{Deserialize, Serialize};

use crate::decode::Layout;
use crate::schema::Schema;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Off,
}

/// A cross-column rule as written in a schema file.
#[derive(Debug, Clone, Deserialize)]
pub struct RuleDef {
    pub id: String,
    /// `ordered` (columns[0] < columns[1] when both set), `paired_null` (both null or neither),
    /// `non_negative` (columns[0] >= 0), `not_value_when` (columns[0] != value where
    /// columns[1] == when).
    pub kind: String,
    pub columns: Vec<String>,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub when: String,
    /// `product`: rows where this column holds `except_value` are not judged.
    #[serde(default)]
    pub except_column: Option<String>,
    #[serde(default)]
    pub except_value: String,
    /// `product`: allowed difference, relative to the expected value, and at least `tolerance_abs`.
    #[serde(default)]
    pub tolerance_rel: f64,
    #[serde(default)]
    pub tolerance_abs: f64,
    #[serde(default = "default_error")]
    pub severity: Severity,
    pub message: String,
}

fn default_error() -> Severity {
    Severity::Error
}

#[derive(Debug, Clone, Deserialize)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub severity: HashMap<String, Severity>,
}

const EMBEDDED_PROFILES: &[(&str, &str)] = &[
    ("strict", include_str!("../schemas/profile-strict.toml")),
    ("tencent", include_str!("../schemas/profile-tencent.toml")),
];

impl Profile {
    /// The severity this profile gives rule `id` (an entry for it, else `"*"`, else `default`).
    pub fn severity_of(&self, id: &str, default: Severity) -> Severity {
        self.severity
            .get(id)
            .or_else(|| self.severity.get("*"))
            .copied()
            .unwrap_or(default)
    }

    pub fn load(name: &str, dir: Option<&Path>) -> Result<Profile> {
        let text = match dir.map(|d| d.join(format!("profile-{name}.toml"))) {
            Some(p) if p.exists() => std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?,
            _ => EMBEDDED_PROFILES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.to_string())
                .ok_or_else(|| Error::Config(format!("unknown profile {name:?}")))?,
        };
        toml::from_str(&text).map_err(|e| Error::Config(format!("profile {name}: {e}")))
    }
}

#[derive(Debug, Clone)]
enum Check {
    NotNull(usize),
    Allowed(usize, HashSet<String>),
    Ordered(usize, usize),
    PairedNull(usize, usize),
    NonNegative(usize),
    NotValueWhen {
        column: usize,
        value: String,
        other: usize,
        when: String,
    },
    /// columns[0] = columns[1] x columns[2] within a tolerance, except where `except` matches.
    Product {
        result: usize,
        a: usize,
        b: usize,
        except: Option<(usize, String)>,
        rel: f64,
        abs: f64,
    },
}

#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub id: String,
    pub severity: Severity,
    /// The column a violation is reported against.
    pub column: String,
    pub message: String,
    check: Check,
}

/// One rule's findings in one batch: the rows (indices) that break it.
pub struct Violations {
    pub rule: usize,
    pub rows: Vec<usize>,
}

/// Per-rule totals for a report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleStats {
    pub severity: Option<Severity>,
    pub count: u64,
    /// The first few lines (and values) that broke the rule.
    pub examples: Vec<String>,
}

pub type RuleCounts = BTreeMap<String, RuleStats>;

/// Compiles the schema's rules (column rules and `[[rule]]`s) against a file's layout. Rules
/// about a column the file does not have are left out (whether a column must be present is a
/// file-level question, decided from its feature level), unless a mapping declares the column
/// unavailable, in which case its nulls are judged like any other.
pub fn compile(schema: &Schema, layout: &Layout, profile: &Profile) -> Vec<CompiledRule> {
    let present = |name: &str| {
        !layout.absent.iter().any(|a| a == name) || layout.unavailable.iter().any(|u| u == name)
    };
    let idx = |name: &str| {
        present(name)
            .then(|| layout.schema.index_of(name).ok())
            .flatten()
    };
    let mut rules = Vec::new();
    let mut push = |id: String, column: &str, message: String, default: Severity, check: Check| {
        // A profile may set every rule at once with "*" (e.g. "off" to load without checks).
        let severity = profile.severity_of(&id, default);
        if severity != Severity::Off {
            rules.push(CompiledRule {
                id,
                severity,
                column: column.to_string(),
                message,
                check,
            });
        }
    };
    for col in &schema.columns {
        let Some(i) = idx(&col.name) else { continue };
        if !col.nullable {
            push(
                format!("NotNull.{}", col.name),
                &col.name,
                format!("{} must not be null (FOCUS {})", col.name, schema.version),
                Severity::Error,
                Check::NotNull(i),
            );
        }
        if !col.allowed_values.is_empty() {
            push(
                format!("Allowed.{}", col.name),
                &col.name,
                if col.allowed_values.len() <= 12 {
                    format!(
                        "{} must be one of {} (case-sensitive)",
                        col.name,
                        col.allowed_values.join(", ")
                    )
                } else {
                    format!(
                        "{} must be one of the {} values FOCUS {} lists (case-sensitive)",
                        col.name,
                        col.allowed_values.len(),
                        schema.version
                    )
                },
                Severity::Error,
                Check::Allowed(i, col.allowed_values.iter().cloned().collect()),
            );
        }
    }
    for r in &schema.rules {
        let cols: Option<Vec<usize>> = r.columns.iter().map(|c| idx(c)).collect();
        let Some(cols) = cols else { continue };
        let check = match (r.kind.as_str(), cols.as_slice()) {
            ("ordered", [a, b]) => Check::Ordered(*a, *b),
            ("paired_null", [a, b]) => Check::PairedNull(*a, *b),
            ("non_negative", [a]) => Check::NonNegative(*a),
            ("product", [result, a, b]) => Check::Product {
                result: *result,
                a: *a,
                b: *b,
                except: r
                    .except_column
                    .as_deref()
                    .and_then(&idx)
                    .map(|c| (c, r.except_value.clone())),
                rel: r.tolerance_rel,
                abs: r.tolerance_abs,
            },
            ("not_value_when", [a, b]) => Check::NotValueWhen {
                column: *a,
                value: r.value.clone(),
                other: *b,
                when: r.when.clone(),
            },
            _ => continue,
        };
        push(
            r.id.clone(),
            &r.columns[0],
            r.message.clone(),
            r.severity,
            check,
        );
    }
    rules
}

fn strings(a: &ArrayRef) -> Option<&StringArray> {
    a.as_any().downcast_ref::<StringArray>()
}

/// Rows of `batch` that break each rule. Runs column-wise over the arrays.
pub fn evaluate(rules: &[CompiledRule], batch: &RecordBatch) -> Vec<Violations> {
    let n = batch.num_rows();
    let mut out = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        let col = |i: usize| batch.column(i);
        let rows: Vec<usize> = match &rule.check {
            Check::NotNull(i) => {
                let c = col(*i);
                if c.null_count() == 0 {
                    continue;
                }
                (0..n).filter(|r| c.is_null(*r)).collect()
            }
            Check::Allowed(i, set) => {
                let Some(c) = strings(col(*i)) else { continue };
                (0..n)
                    .filter(|r| c.is_valid(*r) && !set.contains(c.value(*r)))
                    .collect()
            }
            Check::Ordered(a, b) => {
                let (Some(x), Some(y)) = (
                    col(*a).as_any().downcast_ref::<TimestampMicrosecondArray>(),
                    col(*b).as_any().downcast_ref::<TimestampMicrosecondArray>(),
                ) else {
                    continue;
                };
                (0..n)
                    .filter(|r| x.is_valid(*r) && y.is_valid(*r) && x.value(*r) >= y.value(*r))
                    .collect()
            }
            Check::PairedNull(a, b) => {
                let (x, y) = (col(*a), col(*b));
                if x.null_count() == 0 && y.null_count() == 0 {
                    continue;
                }
                (0..n).filter(|r| x.is_null(*r) != y.is_null(*r)).collect()
            }
            Check::NonNegative(i) => {
                let Some(c) = col(*i).as_any().downcast_ref::<Decimal128Array>() else {
                    continue;
                };
                (0..n)
                    .filter(|r| c.is_valid(*r) && c.value(*r) < 0)
                    .collect()
            }
            Check::Product {
                result,
                a,
                b,
                except,
                rel,
                abs,
            } => {
                let dec = |i: usize| col(i).as_any().downcast_ref::<Decimal128Array>();
                let (Some(r), Some(x), Some(y)) = (dec(*result), dec(*a), dec(*b)) else {
                    continue;
                };
                let skip = except
                    .as_ref()
                    .and_then(|(c, v)| strings(col(*c)).map(|s| (s, v)));
                // A tolerance check, so f64 is precise enough; stored amounts stay decimal.
                let scale = 10f64.powi(r.scale() as i32);
                (0..n)
                    .filter(|i| r.is_valid(*i) && x.is_valid(*i) && y.is_valid(*i))
                    .filter(|i| !skip.is_some_and(|(s, v)| s.is_valid(*i) && s.value(*i) == v))
                    .filter(|i| {
                        let got = r.value(*i) as f64 / scale;
                        let want = (x.value(*i) as f64 / scale) * (y.value(*i) as f64 / scale);
                        (got - want).abs() > abs.max(rel * want.abs())
                    })
                    .collect()
            }
            Check::NotValueWhen {
                column,
                value,
                other,
                when,
            } => {
                let (Some(x), Some(y)) = (strings(col(*column)), strings(col(*other))) else {
                    continue;
                };
                (0..n)
                    .filter(|r| {
                        x.is_valid(*r)
                            && y.is_valid(*r)
                            && x.value(*r) == value
                            && y.value(*r) == when
                    })
                    .collect()
            }
        };
        if !rows.is_empty() {
            out.push(Violations { rule: ri, rows });
        }
    }
    out
}

/// The raw text of a cell, for reports.
pub fn cell_text(batch: &RecordBatch, column: &str, row: usize) -> String {
    let Some(c) = batch.column_by_name(column) else {
        return String::new();
    };
    if c.is_null(row) {
        return String::new();
    }
    arrow_cast_display(c, row)
}

fn arrow_cast_display(c: &ArrayRef, row: usize) -> String {
    if let Some(s) = strings(c) {
        return s.value(row).to_string();
    }
    if let Some(d) = c.as_any().downcast_ref::<Decimal128Array>() {
        return d.value_as_string(row);
    }
    if let Some(t) = c.as_any().downcast_ref::<TimestampMicrosecondArray>() {
        return t.value(row).to_string();
    }
    String::new()
}
