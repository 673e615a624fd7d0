//! Compiling a schema's rules against one file's layout: column rules from the column table,
//! `[[rule]]`s with their row conditions, severities from the profile. Rules about columns the
//! file lacks are left out here, once per file, so evaluation never looks them up.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow_array::{Array, RecordBatch, StringArray};
use arrow_buffer::BooleanBuffer;

use crate::conformance::schema::Schema;
use crate::ingest::decode::Layout;

use super::{
    bool_values, strings, valid, CompiledRule, FileContext, Level, Profile, RuleKind, Severity,
};

/// A set of strings, tested against a whole string array at once.
#[derive(Debug, Clone)]
pub(super) struct ValueSet {
    values: Vec<String>,
    hashed: HashSet<String>,
}

impl ValueSet {
    pub(super) fn new(values: impl IntoIterator<Item = String>) -> ValueSet {
        let values: Vec<String> = values.into_iter().collect();
        ValueSet {
            hashed: values.iter().cloned().collect(),
            values,
        }
    }

    /// True where the value is set and in the set.
    pub(super) fn mask(&self, a: &StringArray) -> BooleanBuffer {
        // A few values: one `eq` kernel each. Many (currency codes): one hash probe per row.
        let found = if self.values.len() <= 8 {
            let mut m = BooleanBuffer::new_unset(a.len());
            for v in &self.values {
                if let Ok(eq) = arrow_ord::cmp::eq(a, &StringArray::new_scalar(v)) {
                    m = &m | &bool_values(&eq);
                }
            }
            m
        } else {
            BooleanBuffer::collect_bool(a.len(), |i| self.hashed.contains(a.value(i)))
        };
        &found & &valid(a)
    }
}

/// A row condition: the rule judges only rows where it holds.
#[derive(Debug, Clone, Default)]
pub(super) struct Applies {
    when: Vec<(usize, ValueSet)>,
    unless: Vec<(usize, ValueSet)>,
    when_null: Vec<usize>,
    when_not_null: Vec<usize>,
    when_differ: Option<(usize, usize)>,
}

impl Applies {
    pub(super) fn is_always(&self) -> bool {
        self.when.is_empty()
            && self.unless.is_empty()
            && self.when_null.is_empty()
            && self.when_not_null.is_empty()
            && self.when_differ.is_none()
    }

    pub(super) fn mask(&self, batch: &RecordBatch) -> BooleanBuffer {
        let n = batch.num_rows();
        let mut m = BooleanBuffer::new_set(n);
        let strings_mask = |i: usize, set: &ValueSet| match strings(batch.column(i)) {
            Some(s) => set.mask(s),
            None => BooleanBuffer::new_unset(n),
        };
        for (i, set) in &self.when {
            m = &m & &strings_mask(*i, set);
        }
        for (i, set) in &self.unless {
            m = &m & &!&strings_mask(*i, set);
        }
        for i in &self.when_null {
            m = &m & &!&valid(batch.column(*i).as_ref());
        }
        for i in &self.when_not_null {
            m = &m & &valid(batch.column(*i).as_ref());
        }
        if let Some((a, b)) = self.when_differ {
            // `neq` is null where either side is null: those rows are not judged.
            m = match (strings(batch.column(a)), strings(batch.column(b))) {
                (Some(x), Some(y)) => match arrow_ord::cmp::neq(x, y) {
                    Ok(ne) => &m & &bool_values(&ne),
                    Err(_) => BooleanBuffer::new_unset(n),
                },
                _ => BooleanBuffer::new_unset(n),
            };
        }
        m
    }
}

#[derive(Debug, Clone)]
pub(super) enum Check {
    NotNull(usize),
    Null(usize),
    Allowed(usize, ValueSet),
    Variant(usize, ValueSet, BTreeMap<String, String>),
    Ordered(usize, usize),
    PairedNull(usize, usize),
    NonNegative(usize),
    NotValue(usize, String),
    Value(usize, String),
    Zero(usize),
    Parent(usize, usize, HashMap<String, String>),
    Product {
        result: usize,
        a: usize,
        b: usize,
        rel: f64,
        abs: f64,
    },
    KeyValue(usize),
    JsonObject(usize),
    WholeMinutes(usize, usize),
    OneValuePer(usize, usize),
    PeriodOfName(usize, i64, i64),
}

/// Compiles the schema's rules (column rules and `[[rule]]`s) against a file's layout. Rules
/// about a column the file does not have are left out (whether a column must be present is a
/// file-level question, decided from its feature level), unless a mapping declares the column
/// unavailable, in which case its nulls are judged like any other. Columns a condition names
/// are read as null where the file lacks them.
pub fn compile(
    schema: &Schema,
    layout: &Layout,
    profile: &Profile,
    ctx: &FileContext,
) -> Vec<CompiledRule> {
    let present = |name: &str| {
        !layout.absent.iter().any(|a| a == name) || layout.unavailable.iter().any(|u| u == name)
    };
    let idx = |name: &str| {
        present(name)
            .then(|| layout.schema.index_of(name).ok())
            .flatten()
    };
    let any_idx = |name: &str| layout.schema.index_of(name).ok();
    let mut rules = Vec::new();
    let mut push = |id: String,
                    column: &str,
                    message: String,
                    default: Severity,
                    check: Check,
                    applies: Applies| {
        // A profile may set every rule at once with "*" (e.g. "off" to load without checks).
        let severity = profile.severity_of(&id, default);
        if severity != Severity::Off {
            let level = match check {
                Check::OneValuePer(..) => Level::File,
                _ => Level::Row,
            };
            rules.push(CompiledRule {
                id,
                severity,
                level,
                column: column.to_string(),
                message,
                check,
                applies,
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
                Applies::default(),
            );
        }
        if !col.allowed_values.is_empty() {
            let variants = profile.variants.get(&col.name).cloned().unwrap_or_default();
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
                Check::Allowed(
                    i,
                    ValueSet::new(col.allowed_values.iter().chain(variants.keys()).cloned()),
                ),
                Applies::default(),
            );
            if !variants.is_empty() {
                let pairs: Vec<String> = variants
                    .iter()
                    .map(|(v, c)| format!("{v} for {c}"))
                    .collect();
                push(
                    format!("Variant.{}", col.name),
                    &col.name,
                    format!(
                        "{} uses the profile's provider spellings ({}); kept as delivered",
                        col.name,
                        pairs.join(", ")
                    ),
                    Severity::Warning,
                    Check::Variant(i, ValueSet::new(variants.keys().cloned()), variants),
                    Applies::default(),
                );
            }
        }
    }
    for r in &schema.rules {
        let cols: Option<Vec<usize>> = r.columns.iter().map(|c| idx(c)).collect();
        let Some(cols) = cols else { continue };
        let set = |m: &BTreeMap<String, Vec<String>>| -> Option<Vec<(usize, ValueSet)>> {
            m.iter()
                .map(|(c, v)| any_idx(c).map(|i| (i, ValueSet::new(v.iter().cloned()))))
                .collect()
        };
        let list = |v: &[String]| -> Option<Vec<usize>> { v.iter().map(|c| any_idx(c)).collect() };
        let (Some(when), Some(unless), Some(when_null), Some(when_not_null), Some(differ)) = (
            set(&r.when),
            set(&r.unless),
            list(&r.when_null),
            list(&r.when_not_null),
            list(&r.when_differ),
        ) else {
            continue; // a condition on a column this schema does not have
        };
        let when_differ = match differ.as_slice() {
            [] => None,
            [a, b] => Some((*a, *b)),
            _ => continue, // not a pair: reported by `check_def`
        };
        let applies = Applies {
            when,
            unless,
            when_null,
            when_not_null,
            when_differ,
        };
        let check = match (r.kind, cols.as_slice()) {
            (RuleKind::Ordered, [a, b]) => Check::Ordered(*a, *b),
            (RuleKind::PairedNull, [a, b]) => Check::PairedNull(*a, *b),
            (RuleKind::Null, [a]) => Check::Null(*a),
            (RuleKind::NotNull, [a]) => Check::NotNull(*a),
            (RuleKind::NonNegative, [a]) => Check::NonNegative(*a),
            (RuleKind::NotValue, [a]) => Check::NotValue(*a, r.value.clone()),
            (RuleKind::Value, [a]) => Check::Value(*a, r.value.clone()),
            (RuleKind::Zero, [a]) => Check::Zero(*a),
            (RuleKind::Parent, [a, b]) => Check::Parent(
                *a,
                *b,
                r.parents
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            (RuleKind::Product, [result, a, b]) => Check::Product {
                result: *result,
                a: *a,
                b: *b,
                rel: r.tolerance_rel,
                abs: r.tolerance_abs,
            },
            (RuleKind::KeyValue, [a]) => Check::KeyValue(*a),
            (RuleKind::JsonObject, [a]) => Check::JsonObject(*a),
            (RuleKind::WholeMinutes, [a, b]) => Check::WholeMinutes(*a, *b),
            (RuleKind::OneValuePer, [a, b]) => Check::OneValuePer(*a, *b),
            (RuleKind::PeriodOfName, [a]) => match ctx.name_period {
                Some((lo, hi)) => Check::PeriodOfName(*a, lo, hi),
                None => continue, // the name gives no billing month to compare with
            },
            _ => continue, // wrong operand count: reported by `Schema::parse`
        };
        // A period's end is what an inclusive-end mistake shows in.
        let reported = match r.kind {
            RuleKind::WholeMinutes => &r.columns[1],
            _ => &r.columns[0],
        };
        push(
            r.id.clone(),
            reported,
            r.message.clone(),
            r.severity,
            check,
            applies,
        );
    }
    rules
}
