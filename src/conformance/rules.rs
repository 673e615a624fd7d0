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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Decimal128Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::BooleanBuffer;
use serde::{Deserialize, Serialize};

use crate::conformance::schema::Schema;
use crate::ingest::decode::Layout;
use crate::{Error, Result};

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// A profile this one adds to: its entries apply unless this one sets the same key.
    #[serde(default)]
    pub extends: Option<String>,
    #[serde(default)]
    pub severity: HashMap<String, Severity>,
    /// Per column: a provider's spellings of allowed values, and the FOCUS value each stands
    /// for. Such values pass `Allowed.<Column>` and are counted under `Variant.<Column>`.
    #[serde(default)]
    pub variants: BTreeMap<String, BTreeMap<String, String>>,
    /// `"error"`: every rule at severity error quarantines instead (gatekeeping: rows breaking
    /// the spec are held out of the lake). Set here or with `run --quarantine-on error`.
    #[serde(default)]
    pub quarantine_on: Option<QuarantineOn>,
}

/// Which findings hold rows out of the lake besides those at severity `quarantine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuarantineOn {
    Error,
}

const EMBEDDED_PROFILES: &[(&str, &str)] = &[
    ("strict", include_str!("../../schemas/profile-strict.toml")),
    (
        "tencent",
        include_str!("../../schemas/profile-tencent.toml"),
    ),
    ("off", include_str!("../../schemas/profile-off.toml")),
    (
        "tencent-l2",
        include_str!("../../schemas/profile-tencent-l2.toml"),
    ),
    (
        "strict-gate",
        include_str!("../../schemas/profile-strict-gate.toml"),
    ),
];

impl Profile {
    /// The severity this profile gives rule `id`: an entry for it, else the longest matching
    /// family entry (`"NullPlaceholder.*"`), else `"*"`, else `default`.
    pub fn severity_of(&self, id: &str, default: Severity) -> Severity {
        let severity = self.configured_severity(id, default);
        match (severity, self.quarantine_on) {
            (Severity::Error, Some(QuarantineOn::Error)) => Severity::Quarantine,
            (s, _) => s,
        }
    }

    fn configured_severity(&self, id: &str, default: Severity) -> Severity {
        if let Some(s) = self.severity.get(id) {
            return *s;
        }
        self.severity
            .iter()
            .filter_map(|(k, s)| {
                let prefix = k.strip_suffix('*')?;
                id.starts_with(prefix).then_some((prefix.len(), *s))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, s)| s)
            .unwrap_or(default)
    }

    /// Loads a profile by name (`schemas/profile-<name>.toml` in `dir`, else the embedded copy)
    /// or, when `name` ends in `.toml`, from that file.
    pub fn load(name: &str, dir: Option<&Path>) -> Result<Profile> {
        let text = if name.ends_with(".toml") {
            let p = Path::new(name);
            std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?
        } else {
            let file = format!("profile-{name}.toml");
            crate::conformance::schema::config_text(dir, &file, name, EMBEDDED_PROFILES, "profile")?
                .0
        };
        let mut profile: Profile =
            toml::from_str(&text).map_err(|e| Error::Config(format!("profile {name}: {e}")))?;
        if let Some(base) = profile.extends.take() {
            if base == name || base == profile.name {
                return Err(Error::Config(format!("profile {name} extends itself")));
            }
            let base = Profile::load(&base, dir)?;
            profile.quarantine_on = profile.quarantine_on.or(base.quarantine_on);
            for (k, v) in base.severity {
                profile.severity.entry(k).or_insert(v);
            }
            for (column, spellings) in base.variants {
                let mine = profile.variants.entry(column).or_default();
                for (k, v) in spellings {
                    mine.entry(k).or_insert(v);
                }
            }
        }
        Ok(profile)
    }
}

/// A set of strings, tested against a whole string array at once.
#[derive(Debug, Clone)]
struct ValueSet {
    values: Vec<String>,
    hashed: HashSet<String>,
}

impl ValueSet {
    fn new(values: impl IntoIterator<Item = String>) -> ValueSet {
        let values: Vec<String> = values.into_iter().collect();
        ValueSet {
            hashed: values.iter().cloned().collect(),
            values,
        }
    }

    /// True where the value is set and in the set.
    fn mask(&self, a: &StringArray) -> BooleanBuffer {
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
struct Applies {
    when: Vec<(usize, ValueSet)>,
    unless: Vec<(usize, ValueSet)>,
    when_null: Vec<usize>,
    when_not_null: Vec<usize>,
    when_differ: Option<(usize, usize)>,
}

impl Applies {
    fn is_always(&self) -> bool {
        self.when.is_empty()
            && self.unless.is_empty()
            && self.when_null.is_empty()
            && self.when_not_null.is_empty()
            && self.when_differ.is_none()
    }

    fn mask(&self, batch: &RecordBatch) -> BooleanBuffer {
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
enum Check {
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

/// UTC bounds (microseconds; start inclusive, end exclusive) of billing month `YYYY-MM` read at
/// `offset_secs` east of UTC.
pub fn month_bounds(month: &str, offset_secs: i64) -> Option<(i64, i64)> {
    let (y, m) = month.split_once('-')?;
    let (y, m): (i64, u32) = (y.parse().ok()?, m.parse().ok()?);
    if !(1..=12).contains(&m) {
        return None;
    }
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let at =
        |y, m| (crate::ingest::decode::days_from_civil(y, m, 1) * 86_400 - offset_secs) * 1_000_000;
    Some((at(y, m), at(ny, nm)))
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

/// State a file carries from batch to batch (file-level rules).
#[derive(Debug, Default)]
pub struct FileState {
    /// Per rule index: the first value of columns[1] seen for each value of columns[0], and
    /// the line it was seen on.
    first_seen: HashMap<usize, HashMap<String, (String, u64)>>,
}

/// Rows of `batch` that break each rule. `lines` are the rows' source lines (for file-level
/// rules' evidence).
pub fn evaluate(
    rules: &[CompiledRule],
    batch: &RecordBatch,
    lines: Option<&Int64Array>,
    state: &mut FileState,
) -> Vec<Violations> {
    let n = batch.num_rows();
    let mut out = Vec::new();
    for (ri, rule) in rules.iter().enumerate() {
        let col = |i: usize| batch.column(i);
        let broken: BooleanBuffer = match &rule.check {
            Check::NotNull(i) => {
                if col(*i).null_count() == 0 {
                    continue;
                }
                !&valid(col(*i).as_ref())
            }
            Check::Null(i) => {
                if col(*i).null_count() == n {
                    continue;
                }
                valid(col(*i).as_ref())
            }
            Check::Allowed(i, set) => {
                let Some(c) = strings(col(*i)) else { continue };
                &valid(c) & &!&set.mask(c)
            }
            Check::Variant(i, set, _) => {
                let Some(c) = strings(col(*i)) else { continue };
                set.mask(c)
            }
            Check::Ordered(a, b) => {
                let (Some(x), Some(y)) = (timestamps(col(*a)), timestamps(col(*b))) else {
                    continue;
                };
                let (xv, yv) = (x.values(), y.values());
                let wrong = BooleanBuffer::collect_bool(n, |i| xv[i] >= yv[i]);
                &(&wrong & &valid(x)) & &valid(y)
            }
            Check::WholeMinutes(a, b) => {
                let (Some(x), Some(y)) = (timestamps(col(*a)), timestamps(col(*b))) else {
                    continue;
                };
                let (xv, yv) = (x.values(), y.values());
                let wrong = BooleanBuffer::collect_bool(n, |i| {
                    yv[i].wrapping_sub(xv[i]).rem_euclid(60_000_000) != 0
                });
                &(&wrong & &valid(x)) & &valid(y)
            }
            Check::PairedNull(a, b) => {
                let (x, y) = (col(*a), col(*b));
                if x.null_count() == 0 && y.null_count() == 0 {
                    continue;
                }
                &valid(x.as_ref()) ^ &valid(y.as_ref())
            }
            Check::NonNegative(i) => {
                let Some(c) = decimals(col(*i)) else { continue };
                let v = c.values();
                &BooleanBuffer::collect_bool(n, |r| v[r] < 0) & &valid(c)
            }
            Check::NotValue(i, value) => {
                let Some(c) = strings(col(*i)) else { continue };
                match arrow_ord::cmp::eq(c, &StringArray::new_scalar(value)) {
                    Ok(eq) => bool_values(&eq),
                    Err(_) => continue,
                }
            }
            Check::Value(i, value) => {
                let Some(c) = strings(col(*i)) else { continue };
                match arrow_ord::cmp::neq(c, &StringArray::new_scalar(value)) {
                    Ok(ne) => bool_values(&ne),
                    Err(_) => continue,
                }
            }
            Check::Zero(i) => {
                let Some(c) = decimals(col(*i)) else { continue };
                let v = c.values();
                &BooleanBuffer::collect_bool(n, |r| v[r] != 0) & &valid(c)
            }
            Check::Parent(child, parent, parents) => {
                let (Some(c), Some(p)) = (strings(col(*child)), strings(col(*parent))) else {
                    continue;
                };
                // One hash probe per row, like `Allowed` with many values.
                let wrong = BooleanBuffer::collect_bool(n, |r| {
                    parents
                        .get(c.value(r))
                        .is_some_and(|want| want != p.value(r))
                });
                &(&wrong & &valid(c)) & &valid(p)
            }
            Check::Product {
                result,
                a,
                b,
                rel,
                abs,
            } => {
                let (Some(r), Some(x), Some(y)) =
                    (decimals(col(*result)), decimals(col(*a)), decimals(col(*b)))
                else {
                    continue;
                };
                // A tolerance check, so f64 is precise enough; stored amounts stay decimal.
                let scale = 10f64.powi(r.scale() as i32);
                let (rv, xv, yv) = (r.values(), x.values(), y.values());
                let wrong = BooleanBuffer::collect_bool(n, |i| {
                    let got = rv[i] as f64 / scale;
                    let want = (xv[i] as f64 / scale) * (yv[i] as f64 / scale);
                    (got - want).abs() > abs.max(rel * want.abs())
                });
                &(&(&wrong & &valid(r)) & &valid(x)) & &valid(y)
            }
            Check::KeyValue(i) | Check::JsonObject(i) => {
                let Some(c) = strings(col(*i)) else { continue };
                let flat = matches!(rule.check, Check::KeyValue(_));
                // Tags repeat from row to row: judge each distinct text once per batch.
                let mut seen: HashMap<&str, bool> = HashMap::new();
                BooleanBuffer::collect_bool(n, |r| {
                    if c.is_null(r) {
                        return false;
                    }
                    let text = c.value(r);
                    *seen
                        .entry(text)
                        .or_insert_with(|| json_problem(text, flat).is_some())
                })
            }
            Check::PeriodOfName(i, lo, hi) => {
                let Some(c) = timestamps(col(*i)) else {
                    continue;
                };
                let v = c.values();
                &BooleanBuffer::collect_bool(n, |r| v[r] < *lo || v[r] >= *hi) & &valid(c)
            }
            Check::OneValuePer(k, d) => {
                let (Some(key), Some(dep)) = (strings(col(*k)), strings(col(*d))) else {
                    continue;
                };
                let seen = state.first_seen.entry(ri).or_default();
                let applies = rule.applies.mask(batch);
                let mut rows = Vec::new();
                let mut texts = Vec::new();
                for r in (&(&valid(key) & &valid(dep)) & &applies).set_indices() {
                    let line = lines.map(|l| l.value(r) as u64).unwrap_or(0);
                    // Looked up before inserting, so a key is copied once per file, not per row.
                    let (first, at) = match seen.get(key.value(r)) {
                        Some(entry) => entry,
                        None => seen
                            .entry(key.value(r).to_string())
                            .or_insert_with(|| (dep.value(r).to_string(), line)),
                    };
                    if first != dep.value(r) {
                        rows.push(r);
                        texts.push(format!(
                            "{:?} with {:?}, but with {first:?} on line {at}",
                            key.value(r),
                            dep.value(r)
                        ));
                    }
                }
                if !rows.is_empty() {
                    out.push(Violations {
                        rule: ri,
                        rows,
                        values: Some(texts),
                    });
                }
                continue;
            }
        };
        let broken = if rule.applies.is_always() {
            broken
        } else {
            &broken & &rule.applies.mask(batch)
        };
        if broken.count_set_bits() == 0 {
            continue;
        }
        let rows: Vec<usize> = broken.set_indices().collect();
        out.push(Violations {
            rule: ri,
            values: evidence(&rule.check, batch, &rows),
            rows,
        });
    }
    out
}

/// For rules whose broken cell alone does not say what is wrong, the text to report per row.
fn evidence(check: &Check, batch: &RecordBatch, rows: &[usize]) -> Option<Vec<String>> {
    let texts = |i: usize, f: &dyn Fn(&str) -> String| {
        strings(batch.column(i)).map(|c| rows.iter().map(|r| f(c.value(*r))).collect())
    };
    match check {
        Check::Variant(i, _, map) => texts(*i, &|v| {
            format!(
                "{v} (FOCUS: {})",
                map.get(v).map(String::as_str).unwrap_or("?")
            )
        }),
        Check::Parent(child, parent, parents) => {
            let (c, p) = (
                strings(batch.column(*child))?,
                strings(batch.column(*parent))?,
            );
            Some(
                rows.iter()
                    .map(|r| {
                        format!(
                            "{} under {} (its parent is {})",
                            c.value(*r),
                            p.value(*r),
                            parents.get(c.value(*r)).map(String::as_str).unwrap_or("?")
                        )
                    })
                    .collect(),
            )
        }
        Check::KeyValue(i) | Check::JsonObject(i) => {
            let flat = matches!(check, Check::KeyValue(_));
            texts(*i, &|v| {
                format!("{v} ({})", json_problem(v, flat).unwrap_or_default())
            })
        }
        _ => None,
    }
}

/// Why `text` is not a FOCUS JSON object (`flat`: Key-Value Format), or None if it is one.
pub fn json_problem(text: &str, flat: bool) -> Option<String> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct Object {
        flat: bool,
    }
    impl<'de> Visitor<'de> for Object {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut keys = HashSet::new();
            let mut problem = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                let value: serde_json::Value = map.next_value()?;
                if problem.is_none() {
                    if !keys.insert(key.to_string()) {
                        problem = Some(format!("key {key:?} appears twice"));
                    } else if self.flat && (value.is_object() || value.is_array()) {
                        problem = Some(format!("key {key:?} holds a nested value"));
                    }
                }
            }
            Ok(problem)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let result = match (&mut de).deserialize_any(Object { flat }) {
        Ok(problem) => match de.end() {
            Ok(()) => problem,
            Err(_) => Some("text after the object".into()),
        },
        Err(e) if e.is_data() => Some("not a JSON object".into()),
        Err(e) => Some(format!("not valid JSON: {e}")),
    };
    result
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
        return crate::ingest::decode::format_decimal(d.value(row), d.scale());
    }
    if let Some(t) = timestamps(c) {
        return t
            .value_as_datetime(row)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_are_judged_as_focus_says() {
        assert_eq!(
            json_problem(r#"{"项目":"电商","n":1,"ok":true,"x":null}"#, true),
            None
        );
        assert_eq!(json_problem("{}", true), None);
        assert!(json_problem(r#"{"a":{"b":1}}"#, true)
            .unwrap()
            .contains("nested"));
        assert!(json_problem(r#"{"a":[1]}"#, true)
            .unwrap()
            .contains("nested"));
        assert_eq!(json_problem(r#"{"a":{"b":1}}"#, false), None);
        assert!(json_problem(r#"{"a":1,"a":2}"#, true)
            .unwrap()
            .contains("twice"));
        assert!(json_problem("[1,2]", true)
            .unwrap()
            .contains("not a JSON object"));
        assert!(json_problem("{'a':1}", true)
            .unwrap()
            .contains("not valid JSON"));
        assert!(json_problem(r#"{"a":1} x"#, true).is_some());
    }

    #[test]
    fn new_kinds_are_checked_when_loaded() {
        let def = |text: &str| -> RuleDef { toml::from_str(text).unwrap() };
        let base = "id = \"X\"\nmessage = \"m\"\n";
        let parent = def(&format!(
            "{base}kind = \"parent\"\ncolumns = [\"ServiceSubcategory\", \"ServiceCategory\"]"
        ));
        assert!(check_def(&parent).unwrap_err().contains("parents table"));
        let value = def(&format!(
            "{base}kind = \"value\"\ncolumns = [\"PricingCategory\"]"
        ));
        assert!(check_def(&value).unwrap_err().contains("needs a value"));
        let zero = def(&format!(
            "{base}kind = \"zero\"\ncolumns = [\"BilledCost\"]\nwhen_differ = [\"PublisherName\"]"
        ));
        assert!(check_def(&zero).unwrap_err().contains("two columns"));
        let ok = def(&format!(
            "{base}kind = \"zero\"\ncolumns = [\"BilledCost\"]\nwhen_differ = [\"PublisherName\", \"ProviderName\"]"
        ));
        assert_eq!(check_def(&ok), Ok(()));
    }

    #[test]
    fn month_bounds_read_the_month_at_its_offset() {
        // December 2025 in Beijing time starts 2025-11-30T16:00:00Z.
        let (lo, hi) = month_bounds("2025-12", 8 * 3600).unwrap();
        assert_eq!(lo, 1_764_518_400_000_000);
        assert_eq!(hi - lo, 31 * 86_400 * 1_000_000);
        assert!(month_bounds("2025-13", 0).is_none());
    }
}
