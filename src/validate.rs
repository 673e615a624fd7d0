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

use crate::decode::{Finding, Layout, RowProblem, SOURCE_LINE_COLUMN};
use crate::rules::{self, CompiledRule, Profile, RuleCounts, Severity};

/// Examples kept per rule for the report.
const EXAMPLES: usize = 3;
use crate::schema::{FeatureLevel, Schema};
use crate::{Error, Result};

/// What a file's header says about it, for the report.
#[derive(Debug, Clone, Default)]
pub struct HeaderNotes {
    pub notes: Vec<String>,
    /// File-level rule findings that did not reject the file (warnings), for the report.
    pub rules: RuleCounts,
}

pub struct Validator {
    /// (output column index, name) of columns a row must have a value in.
    required: Vec<(usize, String)>,
    line_column: usize,
    rules: Vec<CompiledRule>,
    profile: Profile,
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
        // FOCUS: custom columns MUST be prefixed `x_`. A file-level rule: an error rejects the
        // file, a warning keeps the column (as a string) and counts it.
        for name in &not_custom {
            let id = "CustomColumn.Prefix";
            match profile.severity_of(id, Severity::Error) {
                Severity::Off => {}
                Severity::Error => {
                    return Err(Error::Rejected(format!(
                        "line 1: [{id}] column {name:?} is neither FOCUS {} nor prefixed x_",
                        schema.version
                    )))
                }
                Severity::Warning => {
                    let stats = notes.rules.entry(id.to_string()).or_default();
                    stats.severity = Some(Severity::Warning);
                    stats.count += 1;
                    if stats.examples.len() < EXAMPLES {
                        stats.examples.push(format!("line 1: {name:?}"));
                    }
                }
            }
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
                profile: profile.clone(),
            },
            notes,
        ))
    }

    /// Splits a batch into rows that pass and problems for those that do not.
    pub fn check(
        &self,
        batch: RecordBatch,
        findings: &[Finding],
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
        for f in findings {
            let severity = self.profile.severity_of(&f.rule, Severity::Error);
            if severity == Severity::Off {
                continue;
            }
            let stats = counts.entry(f.rule.clone()).or_default();
            stats.severity = Some(severity);
            stats.count += 1;
            if stats.examples.len() < EXAMPLES {
                stats
                    .examples
                    .push(format!("line {}: {:?}", f.line, f.value));
            }
            if severity == Severity::Error {
                keep.get_or_insert_with(|| vec![true; batch.num_rows()])[f.row] = false;
                problems.push(RowProblem {
                    line: f.line,
                    column: f.column.clone(),
                    value: f.value.clone(),
                    reason: format!(
                        "[{}] {} must be written YYYY-MM-DDTHH:mm:ssZ",
                        f.rule, f.column
                    ),
                });
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

/// The verdict on one file checked by `billpipe validate`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileVerdict {
    pub file: String,
    pub focus_version: String,
    pub profile: String,
    pub rows: u64,
    pub rows_with_errors: u64,
    /// Per rule: severity, count, first examples. Values that do not parse as their column's
    /// type appear as `Type.<Column>`.
    pub rules: RuleCounts,
    /// Set when the file cannot be judged row by row (unreadable, not FOCUS 1.x, ...).
    pub file_error: Option<String>,
}

impl FileVerdict {
    pub fn passed(&self) -> bool {
        self.file_error.is_none() && self.rows_with_errors == 0
    }
}

/// FOCUS versions `validate` knows, newest first, with a column only that version (or later) has.
const VERSION_MARKERS: &[(&str, &[&str])] = &[
    (
        "1.2",
        &[
            "BillingAccountType",
            "InvoiceId",
            "PricingCurrency",
            "SubAccountType",
        ],
    ),
    (
        "1.1",
        &[
            "CapacityReservationId",
            "ServiceSubcategory",
            "SkuMeter",
            "SkuPriceDetails",
            "CommitmentDiscountQuantity",
        ],
    ),
    ("1.0", &[]),
];

/// Picks the FOCUS version from the columns a file has: the newest whose own columns appear.
pub fn detect_version(header: &[String]) -> &'static str {
    VERSION_MARKERS
        .iter()
        .find(|(_, marks)| marks.is_empty() || marks.iter().any(|m| header.iter().any(|h| h == m)))
        .map(|(v, _)| *v)
        .unwrap_or("1.0")
}

/// Validates one file or `s3://bucket/key` object (compressed or not) without writing anything.
pub fn validate_file(
    uri: &str,
    s3: &crate::s3::S3Options,
    version: Option<&str>,
    profile: &Profile,
    schema_dir: Option<&std::path::Path>,
) -> Result<FileVerdict> {
    use crate::decode::{CsvDecoder, DecodeOptions};
    use crate::source::{LocalSource, ObjectInfo, S3Source, Source};
    use std::io::Read;
    use std::sync::Arc;

    let (source, object): (Arc<dyn Source>, ObjectInfo) = match crate::s3::S3Location::parse(uri) {
        Some(loc) => {
            let key = loc.prefix.trim_end_matches('/').to_string();
            let root = crate::s3::S3Location {
                bucket: loc.bucket,
                prefix: String::new(),
            };
            let ctx = crate::s3::S3Context::connect(s3)?;
            let object = ObjectInfo {
                key,
                size: 0,
                etag: String::new(),
                last_modified: None,
            };
            (Arc::new(S3Source::new(root, ctx)), object)
        }
        None => {
            let path = std::path::Path::new(uri);
            let size = std::fs::metadata(path)
                .map_err(|e| Error::io(path, e))?
                .len();
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let key = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let object = ObjectInfo {
                key,
                size,
                etag: String::new(),
                last_modified: None,
            };
            (Arc::new(LocalSource::new(dir)), object)
        }
    };
    let mut verdict = FileVerdict {
        file: uri.to_string(),
        focus_version: version.unwrap_or("").to_string(),
        profile: profile.name.clone(),
        rows: 0,
        rows_with_errors: 0,
        rules: RuleCounts::new(),
        file_error: None,
    };
    let (reader, fetcher) = crate::fetch::spawn(source, object.clone())?;
    let spill = std::env::temp_dir().join(format!("billpipe-validate-{}", std::process::id()));
    // Placeholders FOCUS forbids are read as null, so the NotNull rules report them.
    let options = DecodeOptions {
        null_values: ["", "NULL", "null", "N/A"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        ..DecodeOptions::default()
    };
    let result = crate::unpack::for_each_member(
        reader,
        &object.key,
        &Default::default(),
        &spill,
        &mut |name, input| {
            // Read the header line first to pick the version, then hand it back to the decoder.
            let mut first = Vec::new();
            let mut byte = [0u8; 1];
            while first.len() < (1 << 20)
                && input
                    .read(&mut byte)
                    .map_err(|e| Error::Rejected(e.to_string()))?
                    == 1
            {
                first.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            let chosen = match version {
                Some(v) => v.to_string(),
                None => {
                    let text = String::from_utf8_lossy(&first);
                    let header: Vec<String> = text
                        .trim_start_matches('\u{feff}')
                        .trim_end()
                        .split(',')
                        .map(|h| h.trim().trim_matches('"').to_string())
                        .collect();
                    detect_version(&header).to_string()
                }
            };
            let schema = Schema::load(&format!("focus-{chosen}"), schema_dir)?;
            verdict.focus_version = chosen;
            let rest = std::io::Cursor::new(first).chain(input);
            let decoder = CsvDecoder::new(rest, name, &schema, options.clone(), None)?;
            check_rows(decoder, &schema, profile, &mut verdict)
        },
    );
    let _ = std::fs::remove_dir_all(&spill);
    let fetched = fetcher.join();
    match (result, fetched) {
        (_, Ok(Err(e))) => verdict.file_error = Some(e.to_string()),
        (Err(e), _) => verdict.file_error = Some(e.to_string()),
        _ => {}
    }
    Ok(verdict)
}

fn check_rows<R: std::io::Read>(
    decoder: crate::decode::CsvDecoder<R>,
    schema: &Schema,
    profile: &Profile,
    verdict: &mut FileVerdict,
) -> Result<()> {
    let layout = decoder.layout().clone();
    let mandatory = schema
        .columns
        .iter()
        .filter(|c| c.feature_level == FeatureLevel::Mandatory)
        .count();
    let missing = schema
        .columns
        .iter()
        .filter(|c| c.feature_level == FeatureLevel::Mandatory && layout.absent.contains(&c.name))
        .count();
    if missing * 2 > mandatory {
        return Err(Error::Rejected(format!(
            "not a FOCUS 1.x file: {missing} of {mandatory} mandatory FOCUS {} columns are missing (FOCUS 0.5 or another format?)",
            schema.version
        )));
    }
    let (validator, header) = Validator::new(schema, &layout, &[], profile)?;
    verdict.rules.extend(header.rules);
    for item in decoder {
        let decoded = item?;
        verdict.rows += decoded.batch.num_rows() as u64;
        let mut problems = decoded.problems;
        for p in &problems {
            let stats = verdict
                .rules
                .entry(format!("Type.{}", p.column))
                .or_default();
            stats.severity = Some(Severity::Error);
            stats.count += 1;
            if stats.examples.len() < EXAMPLES {
                stats
                    .examples
                    .push(format!("line {}: {:?} ({})", p.line, p.value, p.reason));
            }
        }
        let typed_errors: std::collections::BTreeSet<u64> =
            problems.iter().map(|p| p.line).collect();
        verdict.rows += typed_errors.len() as u64;
        problems.clear();
        validator.check(
            decoded.batch,
            &decoded.findings,
            &mut problems,
            &mut verdict.rules,
        )?;
        let rule_errors: std::collections::BTreeSet<u64> =
            problems.iter().map(|p| p.line).collect();
        verdict.rows_with_errors += typed_errors.len() as u64 + rule_errors.len() as u64;
    }
    Ok(())
}
