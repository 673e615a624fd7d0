//! FOCUS conformance rules as data, evaluated over whole Arrow arrays.
//!
//! Column rules come from the schema's column table: `NotNull.<Column>` for every column that
//! does not allow nulls, `Allowed.<Column>` for every column with allowed values (compared
//! case-sensitively). Cross-column rules are listed in the schema file (`[[rule]]`, one
//! [`RuleKind`] each) with an optional row condition (`when`, `unless`, `when_null`,
//! `when_not_null`, `when_differ`), so "PricingQuantity must be null for Tax rows" or "SkuId
//! must not be null for Usage and Purchase rows unless they are corrections" are data, not code.
//! A new rule of an existing kind is a schema edit; only a new kind of check needs code here.
//!
//! `product` rules (ListCost = ListUnitPrice × PricingQuantity) allow
//! `max(tolerance_abs, tolerance_rel × |expected|)`: FOCUS states the equation but no
//! precision, and an absolute tolerance alone (say 0.01) hides a cost 10,000 times its
//! expected value when the amounts are tiny, so the schemas use 0.1 % relative with a 1e-9
//! floor (below any currency's minor unit, above f64 noise at the decimals' 18 digits).
//!
//! A profile (`schemas/profile-<name>.toml`) adjusts severities for a provider without code:
//! `strict` is the spec as written; `tencent` turns Tencent's documented gaps into warnings and
//! names Tencent's own spellings of allowed values (`[variants]`), which are then counted under
//! `Variant.<Column>` instead of failing `Allowed.<Column>`. Values are never rewritten.
//!
//! Severities: `error` and `warning` keep the row and count it in the report (an error is a
//! breach of the spec, a warning a gap the profile accepts); `quarantine` holds the row out of
//! the lake (or, for a file-level rule, rejects the file) — gatekeeping the user opts in to, in a
//! profile or with `--quarantine-on error`; `off` skips the rule. Judging is not holding out:
//! the lake must equal the bill, so by default no rule removes a row's money. `billpipe
//! validate` treats `error` and `quarantine` alike (both fail the file).
//!
//! Every check produces a boolean mask over the batch with Arrow kernels (null bitmaps, `eq`,
//! bitwise and/or/not, tight loops over primitive values); only the rows a mask selects are
//! ever turned into text, for the report.
//!
//! The module is split by stage: `profile` (severities per provider), `compile` (a schema's
//! rules against one file's layout), `evaluate` (masks over a batch), `findings` (the rule ids
//! and messages of what the decoder finds in raw text); this file holds what they share and
//! what reports use.

use std::collections::BTreeMap;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::BooleanBuffer;
use serde::Serialize;

mod compile;
mod evaluate;
mod findings;
mod profile;
#[cfg(test)]
mod tests;

pub use crate::conformance::schema::{check_def, RuleDef, RuleKind, Severity};
pub use compile::compile;
pub use evaluate::{evaluate, json_problem, FileState};
pub use profile::{Profile, QuarantineOn};

use compile::{Applies, Check};

/// Whether breaking a rule concerns a row (quarantine it) or the whole file (reject it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Row,
    File,
}

#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub id: String,
    pub severity: Severity,
    pub level: Level,
    /// The column a violation is reported against.
    pub column: String,
    pub message: String,
    check: Check,
    applies: Applies,
}

impl CompiledRule {
    /// The rule that a row's billing period is the file name's month. In `run` the checking
    /// step enforces that placement itself, under every profile; the rule only reports.
    pub fn is_placement(&self) -> bool {
        matches!(self.check, Check::PeriodOfName(..))
    }
}

/// One rule's findings in one batch: the rows (indices) that break it, and for rules whose
/// evidence is not a single cell, the text to report for each.
pub struct Violations {
    pub rule: usize,
    pub rows: Vec<usize>,
    pub values: Option<Vec<String>>,
}

/// Per-rule totals for a report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleStats {
    pub severity: Option<Severity>,
    /// What the rule expects, naming the column.
    pub message: String,
    pub count: u64,
    /// The first few lines (and values) that broke the rule.
    pub examples: Vec<String>,
}

pub type RuleCounts = BTreeMap<String, RuleStats>;

/// Examples kept per rule for reports.
pub const EXAMPLES: usize = 3;

/// Adds `count` findings of a rule to `counts`, with examples while there is room (only as
/// many are made as fit).
pub fn tally(
    counts: &mut RuleCounts,
    id: &str,
    severity: Severity,
    message: &str,
    count: u64,
    examples: impl IntoIterator<Item = String>,
) {
    let stats = counts.entry(id.to_string()).or_default();
    stats.severity = Some(severity);
    if stats.message.is_empty() {
        stats.message = message.to_string();
    }
    stats.count += count;
    let room = EXAMPLES.saturating_sub(stats.examples.len());
    stats.examples.extend(examples.into_iter().take(room));
}

/// What the rules need to know about the file beyond its rows.
#[derive(Debug, Clone, Default)]
pub struct FileContext {
    /// The billing month the file's name gives, as UTC bounds in microseconds (start
    /// inclusive, end exclusive), when the name follows a known family.
    pub name_period: Option<(i64, i64)>,
}

fn strings(a: &ArrayRef) -> Option<&StringArray> {
    a.as_any().downcast_ref::<StringArray>()
}

fn decimals(a: &ArrayRef) -> Option<&Decimal128Array> {
    a.as_any().downcast_ref::<Decimal128Array>()
}

fn timestamps(a: &ArrayRef) -> Option<&TimestampMicrosecondArray> {
    a.as_any().downcast_ref::<TimestampMicrosecondArray>()
}

/// True where the array has a value.
fn valid(a: &dyn Array) -> BooleanBuffer {
    match a.nulls() {
        Some(n) => n.inner().clone(),
        None => BooleanBuffer::new_set(a.len()),
    }
}

/// A boolean array's values with nulls read as false.
fn bool_values(b: &BooleanArray) -> BooleanBuffer {
    match b.nulls() {
        Some(n) => b.values() & n.inner(),
        None => b.values().clone(),
    }
}

/// UTC bounds (microseconds; start inclusive, end exclusive) of billing month `YYYY-MM` read at
/// `offset_secs` east of UTC; `None` if `month` is not a month. A wrapper of
/// [`crate::values::Month::bounds`], the one place bounds are computed.
pub fn month_bounds(month: &str, offset_secs: i64) -> Option<(i64, i64)> {
    let month: crate::values::Month = month.parse().ok()?;
    Some(month.bounds(offset_secs))
}

/// The raw text of a cell, for reports.
pub fn cell_text(batch: &RecordBatch, column: &str, row: usize) -> String {
    let Some(c) = batch.column_by_name(column) else {
        return String::new();
    };
    if c.is_null(row) {
        return String::new();
    }
    if let Some(s) = strings(c) {
        return s.value(row).to_string();
    }
    if let Some(d) = decimals(c) {
        return crate::values::format_decimal(d.value(row), d.scale());
    }
    if let Some(t) = timestamps(c) {
        return t
            .value_as_datetime(row)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
    }
    String::new()
}
