//! The checking step: decides, from the schema, whether a decoded file and its rows may enter
//! the lake. Kept apart from decoding so the FOCUS rule set can grow here (conformance rules as
//! data are a separate piece of work) without touching the parser.
//!
//! It checks:
//! - file level: every `mandatory` column of the schema is in the header (else the file is
//!   rejected whole, with the missing names);
//! - row level: the partition columns (billing period and account) are not null, since a row
//!   without them has no partition to go to. Such rows are quarantined, never dropped;
//! - the schema's conformance rules (`rules`), at the severities of the pipeline's profile:
//!   errors quarantine the row with the rule id, warnings are counted per rule in the report.
//!
//! Row checks run over whole Arrow arrays (null bitmaps and the `filter` kernel), not row by row.

use arrow_array::{Array, BooleanArray, Int64Array, RecordBatch};
use arrow_select::filter::filter_record_batch;

use crate::decode::{Layout, RowProblem, SOURCE_LINE_COLUMN};
use crate::rules::{self, CompiledRule, Profile, RuleCounts, Severity};

/// Examples kept per rule for the report.
const EXAMPLES: usize = 3;
use crate::schema::{FeatureLevel, Schema};
use crate::{Error, Result};

/// What a file's header says about it, for the report.
#[derive(Debug, Clone, Default)]
pub struct HeaderNotes {
    pub notes: Vec<String>,
}

pub struct Validator {
    /// (output column index, name) of columns a row must have a value in.
    required: Vec<(usize, String)>,
    line_column: usize,
    rules: Vec<CompiledRule>,
}

impl Validator {
    /// Checks the header and prepares the row checks. Errors reject the whole file.
    pub fn new(
        schema: &Schema,
        layout: &Layout,
        required: &[&str],
        profile: &Profile,
    ) -> Result<(Validator, HeaderNotes)> {
        let missing: Vec<&str> = schema
            .columns
            .iter()
            .filter(|c| c.feature_level == FeatureLevel::Mandatory)
            .filter(|c| layout.absent.contains(&c.name) && !layout.unavailable.contains(&c.name))
            .map(|c| c.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Rejected(format!(
                "line 1: header lacks mandatory FOCUS {} column(s): {}",
                schema.version,
                missing.join(", ")
            )));
        }
        let mut notes = HeaderNotes::default();
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
                Error::Rejected(format!("line 1: header lacks required column {name}"))
            })?;
            req.push((idx, name.to_string()));
        }
        let line_column = layout
            .index_of(SOURCE_LINE_COLUMN)
            .ok_or_else(|| Error::Rejected("layout has no line column".into()))?;
        Ok((
            Validator {
                required: req,
                line_column,
                rules: rules::compile(schema, layout, profile),
            },
            notes,
        ))
    }

    /// Splits a batch into rows that pass and problems for those that do not.
    pub fn check(
        &self,
        batch: RecordBatch,
        problems: &mut Vec<RowProblem>,
        counts: &mut RuleCounts,
    ) -> Result<RecordBatch> {
        let mut keep: Option<Vec<bool>> = None;
        let lines = batch
            .column(self.line_column)
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned();
        for (idx, name) in &self.required {
            let col = batch.column(*idx);
            if col.null_count() == 0 {
                continue;
            }
            let keep = keep.get_or_insert_with(|| vec![true; batch.num_rows()]);
            for (row, k) in keep.iter_mut().enumerate() {
                if col.is_null(row) {
                    if *k {
                        problems.push(RowProblem {
                            line: lines.as_ref().map(|l| l.value(row) as u64).unwrap_or(0),
                            column: name.clone(),
                            value: String::new(),
                            reason: format!("{name} is null; the row has no partition to go to"),
                        });
                    }
                    *k = false;
                }
            }
        }
        for v in rules::evaluate(&self.rules, &batch) {
            let rule = &self.rules[v.rule];
            let stats = counts.entry(rule.id.clone()).or_default();
            stats.severity = Some(rule.severity);
            stats.count += v.rows.len() as u64;
            for &row in &v.rows {
                let line = lines.as_ref().map(|l| l.value(row) as u64).unwrap_or(0);
                let value = rules::cell_text(&batch, &rule.column, row);
                if stats.examples.len() < EXAMPLES {
                    stats.examples.push(format!("line {line}: {value:?}"));
                }
                if rule.severity == Severity::Error {
                    let keep = keep.get_or_insert_with(|| vec![true; batch.num_rows()]);
                    keep[row] = false;
                    problems.push(RowProblem {
                        line,
                        column: rule.column.clone(),
                        value,
                        reason: format!("[{}] {}", rule.id, rule.message),
                    });
                }
            }
        }
        match keep {
            None => Ok(batch),
            Some(keep) => Ok(filter_record_batch(&batch, &BooleanArray::from(keep))?),
        }
    }
}
