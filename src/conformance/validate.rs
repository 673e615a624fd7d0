//! The checking step: decides, from the schema, which rows of a decoded file enter the lake and
//! what is said about them (`billpipe validate` runs the same checks through the same object
//! pipeline, see `job::verdict`). Kept apart from decoding so the rule set (`rules`, data in `schemas/`) grows
//! here without touching the parser.
//!
//! **Judging is not holding out.** The lake must equal the bill, so in `run` ([`CheckMode::Load`])
//! a row leaves the lake only when it cannot be placed or counted:
//! - its partition columns (billing period, account) are null or unreadable — no partition to
//!   go to — or its BilledCost cannot be read (an empty BilledCost is a null amount, judged by
//!   `NotNull.BilledCost`, not a reason to drop the row);
//! - or the user opted in to gatekeeping: a rule or finding at severity `quarantine` (profiles,
//!   `--quarantine-on error`); a file-level rule at `quarantine` rejects the file.
//!
//! Everything else — conformance rules at `error` or `warning`, text-format findings, a cell that
//! does not type or map (loaded as null, recorded with line, column and raw text) — keeps the row
//! and is counted per rule. `billpipe validate` ([`CheckMode::Judge`]) counts `error` and
//! `quarantine` findings as errors and keeps judging to the end of the file.
//!
//! Every batch also feeds a [`RowTally`]: rows read, loaded and held out, and BilledCost loaded
//! and held out, so a run can show that the file's total = the lake's + what was held out.
//!
//! `validate` judges partial files (some FOCUS columns only) on every rule whose columns are
//! present and reports the missing mandatory ones (`Column.Mandatory`): a file is dismissed as
//! "not a FOCUS 1.x file" only when its header is mostly pre-1.0 or foreign, because then its
//! rows would be judged on next to nothing and the one finding that matters would be buried.
//!
//! Row checks run over whole Arrow arrays (null bitmaps and the `filter` kernel), not row by row.

use std::collections::HashMap;

use arrow_array::{Array, BooleanArray, Decimal128Array, Int64Array, RecordBatch};
use arrow_select::filter::filter_record_batch;

use crate::conformance::rules::{
    self, CompiledRule, FileContext, FileState, Level, Profile, RuleCounts, Severity,
};
use crate::conformance::schema::{FeatureLevel, Schema};
use crate::error::Rejection;
use crate::ingest::decode::{Finding, FindingKind, Layout, RowProblem, SOURCE_LINE_COLUMN};
use crate::{Error, Result};

/// What a file's header says about it, for the report.
#[derive(Debug, Clone, Default)]
pub struct HeaderNotes {
    pub notes: Vec<String>,
    /// File-level rule findings that did not reject the file (warnings), for the report.
    pub rules: RuleCounts,
}

/// What the checking step knows beyond the file's own header and rows.
#[derive(Debug, Clone, Default)]
pub struct CheckContext {
    pub file: FileContext,
    /// Every FOCUS column of any version billpipe knows, with the first version that has it
    /// (tells a column of another FOCUS version from a custom column without `x_`).
    pub column_versions: std::sync::Arc<HashMap<String, String>>,
    pub mode: CheckMode,
}

/// What the checks are for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CheckMode {
    /// `run`: rows go to the lake unless they cannot be placed or counted, or a finding is at
    /// severity `quarantine`; a file-level rule at `quarantine` rejects the file at once.
    Load,
    /// `validate`: `error` and `quarantine` findings are errors; the file is read to the end
    /// so one pass shows everything wrong with it.
    #[default]
    Judge,
}

/// The column whose amounts a run reconciles: a row whose BilledCost cannot be read cannot be
/// counted, and a file without it cannot be loaded.
pub const MONEY_COLUMN: &str = "BilledCost";

/// Rows and BilledCost of one snapshot as they went through the checks: every row read is
/// either loaded or held out, and every BilledCost that could be read is either in the lake
/// or held out with its row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowTally {
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_held_out: u64,
    /// BilledCost of the loaded rows (at the schema's decimal scale).
    pub cost_loaded: i128,
    /// BilledCost of the held-out rows whose BilledCost could be read.
    pub cost_held_out: i128,
    /// Held-out rows whose BilledCost could not be read (unparsable, or a row whose fields
    /// do not line up with the header).
    pub cost_unreadable_rows: u64,
}

impl RowTally {
    /// BilledCost of every row whose BilledCost could be read.
    pub fn cost_read(&self) -> i128 {
        self.cost_loaded + self.cost_held_out
    }
}

pub struct Validator {
    /// (output column index, name) of columns a row must have a value in (its partition).
    required: Vec<(usize, String)>,
    /// Output index of BilledCost, when the file has it.
    money: Option<usize>,
    /// `run`: the billing-period column and the UTC bounds of the month the file's name gives.
    /// A row outside it cannot be placed in this file's snapshot (in another month's partition
    /// it would count twice), whatever the profile says.
    placement_month: Option<(usize, i64, i64)>,
    line_column: usize,
    rules: Vec<CompiledRule>,
    profile: Profile,
    state: FileState,
    mode: CheckMode,
    /// The first file-level error seen in validate mode (its count is in the rule stats).
    pub first_file_error: Option<String>,
}

impl Validator {
    /// Checks the header and prepares the row checks. Errors reject the whole file.
    /// `required` are the partition columns, billing period first (rows without them, or in
    /// `run` outside the month the name gives, are held out).
    pub fn new(
        schema: &Schema,
        layout: &Layout,
        required: &[&str],
        profile: &Profile,
        ctx: &CheckContext,
    ) -> Result<(Validator, HeaderNotes)> {
        let mut notes = HeaderNotes::default();
        let mut first_file_error = None;
        // A header rule at severity error rejects the file in `run`; `validate` records it and
        // judges the rows anyway, so one pass shows everything wrong with a file.
        let mut file_rule = |id: &str, message: String, example: String| -> Result<()> {
            match profile.severity_of(id, Severity::Error) {
                Severity::Off => {}
                Severity::Quarantine if ctx.mode == CheckMode::Load => {
                    return Err(Error::from(
                        Rejection::new(format!("[{id}] {message}")).line(1),
                    ))
                }
                severity => {
                    rules::tally(&mut notes.rules, id, severity, &message, 1, [example]);
                    if severity.is_error() && first_file_error.is_none() {
                        first_file_error = Some(format!("line 1: [{id}] {message}"));
                    }
                }
            }
            Ok(())
        };
        let missing: Vec<&str> = schema
            .columns
            .iter()
            .filter(|c| c.feature_level == FeatureLevel::Mandatory)
            .filter(|c| layout.absent.contains(&c.name) && !layout.unavailable.contains(&c.name))
            .map(|c| c.name.as_str())
            .collect();
        if !missing.is_empty() {
            file_rule(
                "Column.Mandatory",
                format!(
                    "header lacks mandatory FOCUS {} column(s): {}",
                    schema.version,
                    missing.join(", ")
                ),
                format!("line 1: {}", missing.join(", ")),
            )?;
        }
        if !layout.unavailable.is_empty() {
            notes.notes.push(format!(
                "mapped from a native format without {} (written as null)",
                layout.unavailable.join(", ")
            ));
        }
        for (found, name) in &layout.case_mismatches {
            notes.notes.push(format!("column {found:?} read as {name}"));
        }
        let not_custom: Vec<&str> = layout
            .extra
            .iter()
            .filter(|n| !n.starts_with("x_"))
            .map(String::as_str)
            .collect();
        // FOCUS: custom columns MUST be prefixed `x_`; a column of another FOCUS version is not
        // custom but is not this version's either. File-level rules: an error rejects the file,
        // a warning keeps the column (as a string) and counts it.
        for name in &not_custom {
            let (id, message) = match ctx.column_versions.get(*name) {
                Some(v) => (
                    "Column.OtherVersion",
                    format!(
                        "column {name:?} is a FOCUS {v} column, not part of FOCUS {}",
                        schema.version
                    ),
                ),
                None => (
                    "CustomColumn.Prefix",
                    format!(
                        "column {name:?} is neither FOCUS {} nor prefixed x_",
                        schema.version
                    ),
                ),
            };
            file_rule(id, message, format!("line 1: {name:?}"))?;
        }
        if !not_custom.is_empty() {
            notes.notes.push(format!(
                "columns not in FOCUS {} and not x_-prefixed, kept as strings: {}",
                schema.version,
                not_custom.join(", ")
            ));
        }
        let mut req = Vec::new();
        for name in required {
            let idx = layout.index_of(name).ok_or_else(|| {
                Error::from(Rejection::new(format!("header lacks required column {name}")).line(1))
            })?;
            req.push((idx, name.to_string()));
        }
        let placement_month = match (ctx.mode, ctx.file.name_period, req.first()) {
            (CheckMode::Load, Some((start, end)), Some((idx, _))) => Some((*idx, start, end)),
            _ => None,
        };
        let money = present(layout, MONEY_COLUMN);
        if ctx.mode == CheckMode::Load && money.is_none() {
            return Err(Error::from(
                Rejection::new(format!(
                    "header lacks {MONEY_COLUMN}; without it no row can be counted"
                ))
                .line(1),
            ));
        }
        let line_column = layout
            .index_of(SOURCE_LINE_COLUMN)
            .ok_or_else(|| Error::rejected("layout has no line column"))?;
        Ok((
            Validator {
                money,
                placement_month,
                required: req,
                line_column,
                rules: rules::compile(schema, layout, profile, &ctx.file),
                profile: profile.clone(),
                state: FileState::default(),
                mode: ctx.mode,
                first_file_error,
            },
            notes,
        ))
    }

    /// Judges a batch: returns the rows for the lake; adds what it holds out (and, in `run`,
    /// the cells it loaded as null) to `problems`, rule findings to `counts`, and the batch's
    /// rows and BilledCost to `tally`. `problems` may already hold rows the decoder set aside
    /// (fields not lined up with the header): they are counted as held out, BilledCost unread.
    pub fn check(
        &mut self,
        batch: RecordBatch,
        findings: &[Finding],
        problems: &mut Vec<RowProblem>,
        counts: &mut RuleCounts,
        tally: &mut RowTally,
    ) -> Result<RecordBatch> {
        let set_aside: std::collections::BTreeSet<u64> = problems
            .iter()
            .filter(|p| p.held_out)
            .map(|p| p.line)
            .collect();
        tally.rows_read += set_aside.len() as u64 + batch.num_rows() as u64;
        tally.rows_held_out += set_aside.len() as u64;
        tally.cost_unreadable_rows += set_aside.len() as u64;
        let load = self.mode == CheckMode::Load;
        let schema_ref = batch.schema();
        let mut hold: Option<Vec<bool>> = None;
        let mut cost_unreadable: Vec<usize> = Vec::new();
        let lines = batch
            .column(self.line_column)
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned();
        let line_of = |row: usize| lines.as_ref().map(|l| l.value(row) as u64).unwrap_or(0);
        // Cells that do not type are null by now: the findings come first, so a partition
        // column that failed to parse is reported as unreadable, not again as null.
        let placement_column = |column: usize| {
            Some(column) == self.money || self.required.iter().any(|(i, _)| *i == column)
        };
        // Placeholders can be in every row: the rule's id, severity and message are worked out
        // once per (rule, column), not once per finding.
        let mut judged: HashMap<(FindingKind, usize), (String, Severity, String)> = HashMap::new();
        for f in findings {
            let (id, severity, message) = judged.entry((f.kind, f.column)).or_insert_with(|| {
                let schema = batch.schema();
                let column = schema.field(f.column).name();
                let id = f.kind.rule_id(column);
                let mut severity = self.profile.severity_of(&id, f.kind.default_severity());
                // A cell loaded as null is never silent, whatever the profile says.
                if matches!(f.kind, FindingKind::Type | FindingKind::Mapping)
                    && severity == Severity::Off
                {
                    severity = Severity::Warning;
                }
                (id, severity, f.kind.message(column))
            });
            if *severity == Severity::Off {
                continue;
            }
            let column = batch.schema().field(f.column).name().clone();
            let example = || match f.detail.is_empty() {
                true => format!("line {}: {:?}", f.line, f.value),
                false => format!("line {}: {:?} ({})", f.line, f.value, f.detail),
            };
            rules::tally(
                counts,
                id,
                *severity,
                message,
                1,
                std::iter::once_with(example),
            );
            let cell_lost = matches!(f.kind, FindingKind::Type | FindingKind::Mapping);
            let reason = match f.detail.is_empty() {
                true => format!("[{id}] {message}"),
                false => format!("[{id}] {message}: {}", f.detail),
            };
            let hold_it = match self.mode {
                CheckMode::Load => {
                    (cell_lost && placement_column(f.column)) || *severity == Severity::Quarantine
                }
                CheckMode::Judge => severity.is_error(),
            };
            if load && cell_lost && Some(f.column) == self.money {
                cost_unreadable.push(f.row);
            }
            if hold_it {
                hold.get_or_insert_with(|| vec![false; batch.num_rows()])[f.row] = true;
            }
            if hold_it || cell_lost {
                problems.push(RowProblem {
                    line: f.line,
                    column,
                    value: f.value.clone(),
                    reason: match (load && hold_it && placement_column(f.column), hold_it) {
                        (true, _) => {
                            format!("{reason}; the row cannot be placed or counted without it")
                        }
                        (false, false) => format!("{reason}; loaded as null"),
                        (false, true) => reason,
                    },
                    held_out: hold_it,
                });
            }
        }
        for (idx, name) in &self.required {
            let col = batch.column(*idx);
            if col.null_count() == 0 {
                continue;
            }
            let hold = hold.get_or_insert_with(|| vec![false; batch.num_rows()]);
            for (row, h) in hold.iter_mut().enumerate() {
                if col.is_null(row) {
                    if !*h {
                        problems.push(RowProblem {
                            line: line_of(row),
                            column: name.clone(),
                            value: String::new(),
                            reason: format!("{name} is null; the row has no partition to go to"),
                            held_out: true,
                        });
                    }
                    *h = true;
                }
            }
        }
        if let Some((idx, start, end)) = self.placement_month {
            let placed_by_rule = self.rules.iter().any(|r| r.is_placement());
            if let Some(periods) = batch
                .column(idx)
                .as_any()
                .downcast_ref::<arrow_array::TimestampMicrosecondArray>()
            {
                let mut held = 0;
                for row in 0..periods.len() {
                    let t = periods.value(row);
                    if periods.is_null(row) || (start..end).contains(&t) {
                        continue;
                    }
                    let hold = hold.get_or_insert_with(|| vec![false; batch.num_rows()]);
                    if !hold[row] {
                        hold[row] = true;
                        held += 1;
                        problems.push(RowProblem {
                            line: line_of(row),
                            column: schema_ref.field(idx).name().clone(),
                            value: rules::cell_text(&batch, schema_ref.field(idx).name(), row),
                            reason: "[BillingPeriod.FileName] the row's billing period is not the month the file's name gives; it cannot be placed in this file's snapshot (in another month's partition it would count twice)".into(),
                            held_out: true,
                        });
                    }
                }
                // Under a profile that turns the rule off or down, the holds are still counted.
                if held > 0 && !placed_by_rule {
                    rules::tally(
                        counts,
                        "BillingPeriod.FileName",
                        Severity::Quarantine,
                        "the row's billing period must be the month the file's name gives (held out under every profile)",
                        held,
                        std::iter::empty(),
                    );
                }
            }
        }
        // A cell that did not type or map is null now; a rule about that very cell would only
        // repeat the finding (NotNull.BilledCost after Type.BilledCost), so it is not reported.
        let failed: std::collections::HashSet<(usize, &str)> = findings
            .iter()
            .filter(|f| matches!(f.kind, FindingKind::Type | FindingKind::Mapping))
            .map(|f| (f.row, schema_ref.field(f.column).name().as_str()))
            .collect();
        for mut v in rules::evaluate(&self.rules, &batch, lines.as_ref(), &mut self.state) {
            let rule = &self.rules[v.rule];
            if !failed.is_empty() {
                let keep: Vec<bool> = v
                    .rows
                    .iter()
                    .map(|&r| !failed.contains(&(r, rule.column.as_str())))
                    .collect();
                let mut k = keep.iter();
                v.rows.retain(|_| *k.next().unwrap_or(&true));
                if let Some(values) = v.values.as_mut() {
                    let mut k = keep.iter();
                    values.retain(|_| *k.next().unwrap_or(&true));
                }
                if v.rows.is_empty() {
                    continue;
                }
            }
            let value_of = |k: usize, row: usize| match &v.values {
                Some(values) => values[k].clone(),
                None => rules::cell_text(&batch, &rule.column, row),
            };
            let first = (line_of(v.rows[0]), value_of(0, v.rows[0]));
            rules::tally(
                counts,
                &rule.id,
                rule.severity,
                &rule.message,
                v.rows.len() as u64,
                v.rows
                    .iter()
                    .enumerate()
                    .map(|(k, &row)| format!("line {}: {:?}", line_of(row), value_of(k, row))),
            );
            let hold_it = match self.mode {
                // Placement is enforced above, once, under every profile.
                CheckMode::Load => rule.severity == Severity::Quarantine && !rule.is_placement(),
                CheckMode::Judge => rule.severity.is_error(),
            };
            if !hold_it {
                continue;
            }
            if rule.level == Level::File {
                let rejection =
                    Rejection::new(format!("[{}] {}: {}", rule.id, rule.message, first.1))
                        .line(first.0)
                        .column(rule.column.clone());
                if load {
                    return Err(rejection.into());
                }
                self.first_file_error.get_or_insert(rejection.to_string());
                continue;
            }
            let hold = hold.get_or_insert_with(|| vec![false; batch.num_rows()]);
            for (k, &row) in v.rows.iter().enumerate() {
                hold[row] = true;
                problems.push(RowProblem {
                    line: line_of(row),
                    column: rule.column.clone(),
                    value: value_of(k, row),
                    reason: format!("[{}] {}", rule.id, rule.message),
                    held_out: true,
                });
            }
        }
        let money = self
            .money
            .and_then(|i| batch.column(i).as_any().downcast_ref::<Decimal128Array>());
        let sum = |keep: &dyn Fn(usize) -> bool| -> Result<i128> {
            let Some(m) = money else { return Ok(0) };
            (0..m.len())
                .filter(|&r| keep(r) && m.is_valid(r))
                .try_fold(0i128, |acc, r| acc.checked_add(m.value(r)))
                .ok_or_else(|| {
                    Error::rejected(format!(
                        "the BilledCost of lines {}..{} adds up beyond what a Decimal128(38) can hold",
                        line_of(0),
                        line_of(m.len().saturating_sub(1))
                    ))
                })
        };
        let add = |total: &mut i128, v: i128| -> Result<()> {
            *total = total.checked_add(v).ok_or_else(|| {
                Error::rejected(
                    "the file's BilledCost adds up beyond what a Decimal128(38) can hold",
                )
            })?;
            Ok(())
        };
        match hold {
            None => {
                tally.rows_loaded += batch.num_rows() as u64;
                add(&mut tally.cost_loaded, sum(&|_| true)?)?;
                Ok(batch)
            }
            Some(hold) => {
                let held = hold.iter().filter(|h| **h).count() as u64;
                cost_unreadable.sort_unstable();
                cost_unreadable.dedup();
                tally.rows_held_out += held;
                tally.rows_loaded += batch.num_rows() as u64 - held;
                tally.cost_unreadable_rows +=
                    cost_unreadable.iter().filter(|&&r| hold[r]).count() as u64;
                add(&mut tally.cost_loaded, sum(&|r| !hold[r])?)?;
                add(&mut tally.cost_held_out, sum(&|r| hold[r])?)?;
                let keep: BooleanArray = hold.iter().map(|h| Some(!h)).collect();
                Ok(filter_record_batch(&batch, &keep)?)
            }
        }
    }
}

/// Output index of a schema column the file has (or a mapping declares unavailable).
fn present(layout: &Layout, name: &str) -> Option<usize> {
    if layout.absent.iter().any(|a| a == name) && !layout.unavailable.iter().any(|u| u == name) {
        return None;
    }
    layout.index_of(name)
}
