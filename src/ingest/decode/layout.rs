//! How a file's header maps to output columns ([`Layout`]), decided once per file: schema
//! columns found by name (exactly, else ignoring case), the native columns and tables of a
//! mapping, constants, the bill month's period bounds, and unknown columns kept as strings.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{Field, Schema as ArrowSchema, SchemaRef};

use crate::conformance::mapping::{self, Mapping};
use crate::conformance::schema::{ColumnType, Schema};
use crate::error::Rejection;
use crate::values::{parse_offset, Month};
use crate::{Error, Result};

use super::{SOURCE_KEY_COLUMN, SOURCE_LINE_COLUMN};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Utf8,
    Decimal,
    Timestamp,
}

#[derive(Debug, Clone)]
pub(super) struct OutColumn {
    pub(super) name: String,
    pub(super) source: Source,
    pub(super) kind: Kind,
}

/// Where an output column's raw value comes from.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// Not in the file: null.
    Absent,
    /// A field of the row.
    Field(usize),
    /// The same value on every row (mapping constants, the bill month's period bounds).
    Constant(Vec<u8>),
    /// Looked up in a mapping table by the value of a field.
    Table {
        field: usize,
        native: String,
        values: Arc<HashMap<String, Vec<u8>>>,
    },
}

/// A native-format file's mapping to FOCUS plus what comes from outside the file.
#[derive(Debug, Clone)]
pub struct MappedInput {
    pub mapping: Arc<Mapping>,
    /// BillingPeriodStart and BillingPeriodEnd of the bill month, as UTC date-time text.
    pub period: (String, String),
}

/// How a file's header maps to output columns. Decided once per file.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Output schema: schema columns in schema order, then unknown columns in file order, then
    /// the two lineage columns.
    pub schema: SchemaRef,
    /// Schema columns the file does not have (written as all-null so every file of a lake has
    /// the same FOCUS columns).
    pub absent: Vec<String>,
    /// File columns the schema does not know, kept as strings.
    pub extra: Vec<String>,
    /// Header names matched only case-insensitively: (in file, schema name).
    pub case_mismatches: Vec<(String, String)>,
    /// Mandatory columns a mapping declares its native format does not have.
    pub unavailable: Vec<String>,
    /// Columns set to 0 where another column has a value (`zero_when`), as output indices.
    pub(super) zero_when: Vec<(usize, usize, String)>,
    pub(super) columns: Vec<OutColumn>,
}

impl Layout {
    /// Builds the layout from a header row. Fails on duplicated or empty names, and on names
    /// that collide with the lineage columns.
    pub fn from_header(
        header: &[String],
        schema: &Schema,
        mapped: Option<&MappedInput>,
    ) -> Result<Layout> {
        let mut seen = std::collections::HashMap::new();
        for (i, name) in header.iter().enumerate() {
            if name.is_empty() {
                return Err(Error::from(
                    Rejection::new(format!("header column {} has no name", i + 1)).line(1),
                ));
            }
            if let Some(first) = seen.insert(name.as_str(), i) {
                return Err(Error::from(
                    Rejection::new(format!(
                        "header column name {name:?} appears twice (columns {} and {})",
                        first + 1,
                        i + 1
                    ))
                    .line(1),
                ));
            }
            if name == SOURCE_KEY_COLUMN || name == SOURCE_LINE_COLUMN {
                return Err(Error::from(
                    Rejection::new(format!(
                        "header column {name} is reserved for billpipe's lineage"
                    ))
                    .line(1),
                ));
            }
        }
        let mut used = vec![false; header.len()];
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        let mut absent = Vec::new();
        let mut case_mismatches = Vec::new();
        for col in &schema.columns {
            if let Some(m) = mapped {
                let source = mapped_source(col.name.as_str(), header, m, &mut used);
                if matches!(source, Source::Absent) {
                    absent.push(col.name.clone());
                }
                fields.push(Field::new(&col.name, schema.arrow_type(col.ty), true));
                columns.push(OutColumn {
                    name: col.name.clone(),
                    source,
                    kind: kind_of(col.ty),
                });
                continue;
            }
            let exact = header.iter().position(|h| h == &col.name);
            let source = exact.or_else(|| {
                let found = header
                    .iter()
                    .enumerate()
                    .position(|(i, h)| !used[i] && h.eq_ignore_ascii_case(&col.name));
                if let Some(i) = found {
                    case_mismatches.push((header[i].clone(), col.name.clone()));
                }
                found
            });
            match source {
                Some(i) => used[i] = true,
                None => absent.push(col.name.clone()),
            }
            fields.push(Field::new(&col.name, schema.arrow_type(col.ty), true));
            columns.push(OutColumn {
                name: col.name.clone(),
                source: source.map_or(Source::Absent, Source::Field),
                kind: kind_of(col.ty),
            });
        }
        // Native columns used to derive others stay too: nothing is rewritten out of sight.
        if let Some(m) = mapped {
            for d in &m.mapping.derived {
                if let Some(i) = Mapping::find(header, &d.from) {
                    used[i] = false;
                }
            }
        }
        let mut extra = Vec::new();
        for (i, name) in header.iter().enumerate() {
            if used[i] {
                continue;
            }
            // Mapped files: native names become `x_` columns; FOCUS files keep theirs.
            let out = match mapped {
                Some(_) => mapping::custom_name(name),
                None => name.clone(),
            };
            if fields.iter().any(|f: &Field| f.name() == &out) {
                return Err(Error::from(
                    Rejection::new(format!(
                        "header column {name:?} would be written as {out}, which exists already"
                    ))
                    .line(1),
                ));
            }
            extra.push(out.clone());
            fields.push(Field::new(&out, arrow_schema::DataType::Utf8, true));
            columns.push(OutColumn {
                name: out,
                source: Source::Field(i),
                kind: Kind::Utf8,
            });
        }
        let index = |name: &str| columns.iter().position(|c: &OutColumn| c.name == name);
        let mut zero_when = Vec::new();
        if let Some(m) = mapped {
            for z in &m.mapping.zero_when {
                if let (Some(target), Some(when)) = (index(&z.column), index(&z.when_column)) {
                    zero_when.push((target, when, z.equals.clone()));
                }
            }
        }
        let unavailable = mapped
            .map(|m| m.mapping.unavailable.clone())
            .unwrap_or_default();
        fields.push(Field::new(
            SOURCE_KEY_COLUMN,
            arrow_schema::DataType::Utf8,
            false,
        ));
        fields.push(Field::new(
            SOURCE_LINE_COLUMN,
            arrow_schema::DataType::Int64,
            false,
        ));
        Ok(Layout {
            schema: Arc::new(ArrowSchema::new(fields)),
            absent,
            extra,
            case_mismatches,
            unavailable,
            zero_when,
            columns,
        })
    }

    /// Index of a column in the output schema.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.schema.index_of(name).ok()
    }
}

fn kind_of(ty: ColumnType) -> Kind {
    match ty {
        ColumnType::String | ColumnType::Json => Kind::Utf8,
        ColumnType::Decimal => Kind::Decimal,
        ColumnType::Timestamp => Kind::Timestamp,
    }
}

/// Where a FOCUS column of a mapped (native) file comes from; marks the native field used.
fn mapped_source(focus: &str, header: &[String], m: &MappedInput, used: &mut [bool]) -> Source {
    let mapping = &m.mapping;
    if let Some(i) = mapping
        .columns
        .get(focus)
        .and_then(|a| Mapping::find(header, a))
    {
        used[i] = true;
        return Source::Field(i);
    }
    for d in &mapping.derived {
        let (Some(pos), Some(field)) = (
            d.sets.iter().position(|s| s == focus),
            Mapping::find(header, &d.from),
        ) else {
            continue;
        };
        used[field] = true;
        let values = d
            .table
            .iter()
            .map(|(k, v)| (k.clone(), v[pos].clone().into_bytes()))
            .collect();
        return Source::Table {
            field,
            native: header[field].clone(),
            values: Arc::new(values),
        };
    }
    if let Some(v) = mapping.constants.get(focus) {
        return Source::Constant(v.clone().into_bytes());
    }
    let bound = match focus {
        "BillingPeriodStart" => 0,
        "BillingPeriodEnd" => 1,
        _ => return Source::Absent,
    };
    // The row's own billing month when the file has it (the native column stays an x_ column
    // too), else the month the file's name gives.
    if let Some(field) = Mapping::find(header, &mapping.billing_month) {
        return Source::Table {
            field,
            native: header[field].clone(),
            values: Arc::new(month_bounds_table(&mapping.time_offset, bound)),
        };
    }
    let period = if bound == 0 { &m.period.0 } else { &m.period.1 };
    Source::Constant(period.clone().into_bytes())
}

/// `YYYY-MM` and `YYYYMM` (as `mapping::normalise` keys them) of the months 2000-2099, each to
/// its start (`bound` 0) or exclusive end (1) as UTC text, the month read at `offset`.
fn month_bounds_table(offset: &str, bound: usize) -> HashMap<String, Vec<u8>> {
    let offset_secs = parse_offset(offset).unwrap_or(0);
    let mut table = HashMap::with_capacity(2 * 100 * 12);
    for month in (2000..2100).flat_map(|y| (1..=12).filter_map(move |m| Month::new(y, m))) {
        let bounds = month.bounds(offset_secs);
        let micros = if bound == 0 { bounds.0 } else { bounds.1 };
        let Some(t) = chrono::DateTime::from_timestamp_micros(micros) else {
            continue;
        };
        let text = t.format("%Y-%m-%dT%H:%M:%SZ").to_string().into_bytes();
        let (y, mo) = (month.year(), month.month());
        table.insert(mapping::normalise(&format!("{y:04}{mo:02}")), text.clone());
        table.insert(mapping::normalise(&month.to_string()), text);
    }
    table
}
