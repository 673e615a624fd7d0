//! The decode stage: CSV bytes to typed Arrow record batches, with no type inference.
//!
//! Columns are found by header name, in any order; their types come from the schema (ids stay
//! strings, money is `Decimal128`, date-times are UTC timestamps). Columns the schema does not
//! know are kept as strings. Two lineage columns, `x_SourceKey` and `x_SourceLine`, tie every row
//! back to its object and line.
//!
//! A value that does not parse as its column's type does not stop the file, nor drop its row:
//! the cell is loaded as null and a [`Finding`] of kind `Type` (line, column, raw text, reason)
//! goes to the checking step, which holds the row out only when the cell is one the row cannot
//! be placed or counted without (account, billing period, BilledCost). A native value missing
//! from a mapping table is the same kind of finding (`Mapping`). Only rows whose cells cannot
//! be trusted to be in their columns are set aside here, as [`RowProblem`]s: a row whose field
//! count differs from the header's, and the lines a runaway quote swallowed (below). Only a file
//! that cannot be read as CSV at all is an error. Parsing of numbers and date-times is written
//! here rather than borrowed because the rules are billpipe's: exact decimals that never round,
//! and date-times with an explicit rule for values written without a zone.
//!
//! **Lines.** `x_SourceLine` and every line in a reason is the physical line (header = 1): a
//! line ends at `\n`, `\r\n` or a lone `\r`, in any mix, and a row starts on the line of its
//! first byte, after blank lines and quoted line breaks before it. The CSV parser's own position
//! cannot give that (it counts `\n` only, so a CR-only file is all "line 1", and it starts a
//! CRLF record at the `\n` before it), so the [`Guard`] the bytes pass through counts lines
//! itself while following the parser's grammar byte for byte, and logs each record's first and
//! last line; the decoder takes one log entry per record the parser returns and refuses the
//! file if their field counts ever disagree, rather than load rows under wrong lines.
//!
//! **Runaway quotes.** A quote that opens a field and is closed lines later — a lost closing
//! quote, or a stray quote at a field's start — turns the lines between into one field, and the
//! merged row can even come out with the header's field count. A real multi-line value (an
//! address, a note) does not hold whole records; a runaway field does. So a quoted field with
//! line breaks is judged a runaway when a line inside it reads as a whole record (as many
//! delimiters as the header has, less one), or when the lines it opens and closes on each do
//! (a quote closed one line later). Its lines are **held out, one [`RowProblem`] per line**,
//! rather than the file rejected: the parser is back in step after the closing quote, so the
//! damage is confined to the lines named, and holding them out is what a row that cannot be
//! counted gets everywhere else; the run still ends "money may be missing" (exit 3, the lake
//! short by these rows until a corrected file replaces it). One problem per line, not one per
//! merged row, because each line was a record of the bill: "rows read" then counts the source's
//! records, the quarantine file has each line's text under its own number, and every one of
//! them counts as a row whose BilledCost could not be read. A row spanning lines whose field
//! count is wrong without looking like a runaway is held out once, its reason giving the range.
//!
//! **Stray quotes.** A `"` inside an unquoted field (`12" disk`), or text after the quote that
//! closes a quoted field, is read as text by the parser, as by every lenient CSV reader; the row
//! loads as written with a `StrayQuote` finding on that line and column. A file that ends
//! inside a quoted field is rejected, naming the line and column where that quote opened: the
//! parser accepts such a file silently, and where the field should have ended is unknowable.

use std::io::Read;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Decimal128Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_schema::{Field, Schema as ArrowSchema, SchemaRef};
use csv::ByteRecord;

use std::collections::HashMap;

use crate::conformance::mapping::{self, Mapping};
use crate::conformance::schema::{ColumnType, Schema};
use crate::{Error, Result};

pub const SOURCE_KEY_COLUMN: &str = "x_SourceKey";
pub const SOURCE_LINE_COLUMN: &str = "x_SourceLine";

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub delimiter: u8,
    /// Field values read as null (compared byte for byte, before any parsing).
    pub null_values: Vec<Vec<u8>>,
    /// Offset, in seconds east of UTC, of date-times written without a zone.
    pub naive_offset_secs: i64,
    /// Rows per record batch.
    pub batch_rows: usize,
    /// A line or record longer than this rejects the file (bounds memory on garbage input).
    pub max_record_bytes: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            delimiter: b',',
            null_values: vec![Vec::new()],
            naive_offset_secs: 0,
            batch_rows: 16 * 1024,
            max_record_bytes: 8 << 20,
        }
    }
}

/// A row held out of the lake, or a cell of a loaded row that was set to null, and why. Goes
/// to the unit's quarantine file, so nothing is dropped or nulled without a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    pub line: u64,
    pub column: String,
    pub value: String,
    pub reason: String,
    /// True: the row is not in the lake. False: the row is, with this cell null.
    pub held_out: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Utf8,
    Decimal,
    Timestamp,
}

#[derive(Debug, Clone)]
struct OutColumn {
    name: String,
    source: Source,
    kind: Kind,
}

/// Where an output column's raw value comes from.
#[derive(Debug, Clone)]
enum Source {
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
    zero_when: Vec<(usize, usize, String)>,
    columns: Vec<OutColumn>,
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
                return Err(Error::Rejected(format!(
                    "line 1: header column {} has no name",
                    i + 1
                )));
            }
            if let Some(first) = seen.insert(name.as_str(), i) {
                return Err(Error::Rejected(format!(
                    "line 1: header column name {name:?} appears twice (columns {} and {})",
                    first + 1,
                    i + 1
                )));
            }
            if name == SOURCE_KEY_COLUMN || name == SOURCE_LINE_COLUMN {
                return Err(Error::Rejected(format!(
                    "line 1: header column {name} is reserved for billpipe's lineage"
                )));
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
                return Err(Error::Rejected(format!(
                    "line 1: header column {name:?} would be written as {out}, which exists already"
                )));
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
    for y in 2000..2100 {
        for mo in 1..=12u32 {
            let month = format!("{y:04}-{mo:02}");
            let Some(bounds) = crate::conformance::rules::month_bounds(&month, offset_secs) else {
                continue;
            };
            let micros = if bound == 0 { bounds.0 } else { bounds.1 };
            let Some(t) = chrono::DateTime::from_timestamp_micros(micros) else {
                continue;
            };
            let text = t.format("%Y-%m-%dT%H:%M:%SZ").to_string().into_bytes();
            table.insert(mapping::normalise(&format!("{y:04}{mo:02}")), text.clone());
            table.insert(mapping::normalise(&month), text);
        }
    }
    table
}

/// Output of one decode step: loaded rows and the rows set aside.
pub struct DecodedBatch {
    pub batch: RecordBatch,
    pub problems: Vec<RowProblem>,
    /// Loaded rows whose raw text breaks a FOCUS format rule the typed value cannot show (a
    /// date-time not written `YYYY-MM-DDTHH:mm:ssZ`); the checking step decides their fate.
    pub findings: Vec<Finding>,
}

/// A finding on a loaded row: a text-format rule, or a cell that could not be typed or mapped
/// (loaded as null).
#[derive(Debug, Clone)]
pub struct Finding {
    /// Row index in the batch.
    pub row: usize,
    pub line: u64,
    /// Index of the column in the batch.
    pub column: usize,
    pub value: String,
    pub kind: FindingKind,
    /// Why a `Type` or `Unmapped` cell failed (empty for format findings).
    pub detail: String,
}

/// FOCUS text-format rules only the raw text can show (the typed value looks fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// A date-time not written `YYYY-MM-DDTHH:mm:ssZ`.
    DateTimeFormat,
    /// A number outside FOCUS's Numeric Format (`+1`, `1E+5`, `.5`, `1.`).
    NumericFormat,
    /// A placeholder read as null (`NULL`, `N/A`, `-`, blanks): FOCUS leaves null cells empty.
    NullPlaceholder,
    /// Not a value of the column's type (loaded as null).
    Type,
    /// A native value the mapping table does not list (the mapped cell loaded as null).
    Mapping,
    /// A `"` the CSV parser reads as text: inside a field that is not quoted (`12" disk`), or
    /// followed by text after it closed a quoted field. Loaded as written (every lenient
    /// reader reads it so), but not valid CSV.
    StrayQuote,
    /// A value the mapping's `zero_when` set to 0 (BilledCost on a voucher row): the native
    /// amount is in the finding, so no money changes without a record.
    ZeroedByMapping,
}

impl FindingKind {
    /// The severity a finding has when the profile says nothing: a breach of the spec is an
    /// error; a documented rewrite by the mapping is a warning.
    pub fn default_severity(&self) -> crate::conformance::rules::Severity {
        match self {
            FindingKind::ZeroedByMapping => crate::conformance::rules::Severity::Warning,
            _ => crate::conformance::rules::Severity::Error,
        }
    }

    pub fn rule_id(&self, column: &str) -> String {
        format!("{self:?}.{column}")
    }

    pub fn message(&self, column: &str) -> String {
        match self {
            FindingKind::DateTimeFormat => format!("{column} must be written YYYY-MM-DDTHH:mm:ssZ"),
            FindingKind::NumericFormat => format!(
                "{column} must be in FOCUS Numeric Format (digits with an optional leading -, a . and an exponent such as E-7; no +, separators or units)"
            ),
            FindingKind::NullPlaceholder => format!(
                "{column} holds a placeholder for null; FOCUS leaves a null cell empty (read as null)"
            ),
            FindingKind::Type => format!("{column} must be a value of its FOCUS type"),
            FindingKind::Mapping => format!(
                "{column}: the native value is not in the mapping table (row kept, {column} null); add it to the mapping file"
            ),
            FindingKind::StrayQuote => format!(
                "{column} holds a quote the CSV is not quoting (a field with a \" must be quoted, the quote doubled)"
            ),
            FindingKind::ZeroedByMapping => format!(
                "{column} set to 0 by the mapping's zero_when (a voucher row: the voucher is already netted out of the rows it paid for); the native amount is the finding's value"
            ),
        }
    }
}

/// Reads CSV and yields record batches in the layout decided by its header.
pub struct CsvDecoder<R: Read> {
    /// The parser reads through a [`Guard`], which counts physical lines and follows quoting
    /// byte by byte; line numbers come from it, not from the parser's position.
    reader: csv::Reader<Guard<R>>,
    empty_is_null: bool,
    layout: Arc<Layout>,
    key: String,
    header_len: usize,
    options: DecodeOptions,
    precision: u8,
    scale: i8,
    record: ByteRecord,
    scratch: Vec<Value>,
    finished: bool,
    /// Data rows read so far (loaded or not) and the line the last one started on.
    rows_seen: u64,
    last_line: u64,
    /// FOCUS files are held to FOCUS's text formats; native files (mapped) are not.
    check_formats: bool,
    /// Findings of the row being parsed: (output column, raw value, rule, detail).
    row_findings: Vec<(usize, String, FindingKind, String)>,
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Null,
    Text,
    Decimal(i128),
    Micros(i64),
}

impl<R: Read> CsvDecoder<R> {
    /// Reads the header of `input` (a UTF-8 BOM is skipped) and decides the layout.
    pub fn new(
        input: R,
        key: &str,
        schema: &Schema,
        options: DecodeOptions,
        mapped: Option<&MappedInput>,
    ) -> Result<Self> {
        let input = Guard::new(input, options.max_record_bytes, options.delimiter);
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(options.delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        let mut raw = ByteRecord::new();
        let has_header = reader
            .read_byte_record(&mut raw)
            .map_err(|e| Error::Rejected(format!("line 1: cannot read the header: {e}")))?;
        if !has_header {
            return Err(Error::Rejected("line 1: empty file, no header".into()));
        }
        // The header is the Guard's first record; its lines are not needed.
        reader.get_mut().records.pop_front();
        if raw.len() == 1 {
            let only = String::from_utf8_lossy(&raw[0]);
            let wanted = options.delimiter as char;
            let other = [';', '\t', '|', ',']
                .into_iter()
                .find(|d| *d != wanted && only.contains(*d));
            if let Some(d) = other {
                return Err(Error::Rejected(format!(
                    "line 1: the header is a single column; the file looks {d:?}-delimited but the pipeline expects {wanted:?}"
                )));
            }
        }
        let mut header = Vec::with_capacity(raw.len());
        for (i, field) in raw.iter().enumerate() {
            let field = if i == 0 {
                field.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(field)
            } else {
                field
            };
            let name = std::str::from_utf8(field).map_err(|_| {
                Error::Rejected(format!("line 1: header column {} is not UTF-8", i + 1))
            })?;
            header.push(name.trim().to_string());
        }
        let layout = Layout::from_header(&header, schema, mapped)?;
        Ok(CsvDecoder {
            reader,
            empty_is_null: options.null_values.iter().any(Vec::is_empty),
            header_len: header.len(),
            scratch: vec![Value::Null; layout.columns.len()],
            layout: Arc::new(layout),
            key: key.to_string(),
            options,
            precision: schema.decimal_precision,
            scale: schema.decimal_scale,
            record: ByteRecord::new(),
            finished: false,
            rows_seen: 0,
            last_line: 1,
            check_formats: mapped.is_none(),
            row_findings: Vec::new(),
        })
    }

    pub fn layout(&self) -> &Arc<Layout> {
        &self.layout
    }

    fn is_null(&self, field: &[u8]) -> bool {
        // Hot: runs for every field. Most fields are empty or short, and a libc memcmp call per
        // field (made even for empty slices) cost a fifth of decode time; the first-byte check
        // avoids nearly all of them.
        match field.first() {
            None => self.empty_is_null,
            Some(first) => self
                .options
                .null_values
                .iter()
                .any(|n| n.len() == field.len() && n[0] == *first && n.as_slice() == field),
        }
    }

    /// Parses the current record into `scratch`. Returns whether the row is loadable (a row
    /// whose field count is not the header's is not, and is added to `problems`; a cell that
    /// does not type is loaded as null with a finding), or an error that rejects the file.
    fn parse_record(&mut self, at: &RecordLines, problems: &mut Vec<RowProblem>) -> Result<bool> {
        let line = at.start;
        // One UTF-8 check over the whole record (string fields are not checked again one by one;
        // the batch's string arrays are re-checked in bulk). Bytes that are not UTF-8 mean the
        // file is in another encoding: that is a file problem, not a row problem.
        if std::str::from_utf8(self.record.as_slice()).is_err() {
            let column = (0..self.record.len())
                .find(|i| std::str::from_utf8(&self.record[*i]).is_err())
                .map(|i| self.header_name(i))
                .unwrap_or_default();
            return Err(Error::Rejected(format!(
                "line {line}, column {column}: not valid UTF-8 (is the file in another encoding, such as GBK?)"
            )));
        }
        if self.record.as_slice().len() > self.options.max_record_bytes {
            return Err(Error::Rejected(format!(
                "line {line}: a record of {} bytes exceeds the limit of {} bytes",
                self.record.as_slice().len(),
                self.options.max_record_bytes
            )));
        }
        if at.end > at.start {
            if let Some(held) = self.runaway_quote(at) {
                problems.extend(held);
                return Ok(false);
            }
        }
        if self.record.len() != self.header_len {
            let span = match at.end > at.start {
                true => format!(
                    " (the record spans lines {}-{}: a quoted field holds line breaks)",
                    at.start, at.end
                ),
                false => String::new(),
            };
            problems.push(RowProblem {
                line,
                column: "*".into(),
                value: String::new(),
                reason: format!(
                    "row has {} fields, the header has {}{span}",
                    self.record.len(),
                    self.header_len
                ),
                held_out: true,
            });
            return Ok(false);
        }
        if let Some(stray) = at.stray {
            self.stray_quote_finding(at, stray);
        }
        for (c, col) in self.layout.columns.iter().enumerate() {
            let field = match resolve(&col.source, &self.record) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    self.scratch[c] = Value::Null;
                    continue;
                }
                Err((raw, reason)) => {
                    self.scratch[c] = Value::Null;
                    self.row_findings
                        .push((c, raw, FindingKind::Mapping, reason));
                    continue;
                }
            };
            if self.is_null(field) {
                if self.check_formats && !field.is_empty() {
                    push_finding(
                        &mut self.row_findings,
                        c,
                        field,
                        FindingKind::NullPlaceholder,
                    );
                }
                self.scratch[c] = Value::Null;
                continue;
            }
            let parsed = match col.kind {
                Kind::Utf8 => {
                    // Blanks standing for null: only fields starting with a space are looked at.
                    if self.check_formats
                        && field[0].is_ascii_whitespace()
                        && field.iter().all(u8::is_ascii_whitespace)
                    {
                        push_finding(
                            &mut self.row_findings,
                            c,
                            field,
                            FindingKind::NullPlaceholder,
                        );
                    }
                    Ok(Value::Text)
                }
                Kind::Decimal => {
                    let parsed = parse_decimal(field, self.precision, self.scale);
                    if self.check_formats && parsed.is_ok() && !is_focus_numeric(field) {
                        push_finding(&mut self.row_findings, c, field, FindingKind::NumericFormat);
                    }
                    parsed.map(Value::Decimal)
                }
                Kind::Timestamp => {
                    let parsed = parse_timestamp(field, self.options.naive_offset_secs);
                    if self.check_formats && parsed.is_ok() && !is_focus_datetime(field) {
                        push_finding(
                            &mut self.row_findings,
                            c,
                            field,
                            FindingKind::DateTimeFormat,
                        );
                    }
                    parsed.map(Value::Micros)
                }
            };
            match parsed {
                Ok(v) => self.scratch[c] = v,
                Err(reason) => {
                    self.scratch[c] = Value::Null;
                    self.row_findings.push((
                        c,
                        String::from_utf8_lossy(field).into_owned(),
                        FindingKind::Type,
                        reason,
                    ));
                }
            }
        }
        Ok(true)
    }

    fn header_name(&self, source_index: usize) -> String {
        self.layout
            .columns
            .iter()
            .find(|c| matches!(c.source, Source::Field(i) if i == source_index))
            .map(|c| c.name.clone())
            .unwrap_or_else(|| format!("#{}", source_index + 1))
    }

    fn next_batch(&mut self) -> Result<Option<DecodedBatch>> {
        if self.finished {
            return Ok(None);
        }
        let n = self.options.batch_rows;
        let mut builders: Vec<Builder> = self
            .layout
            .columns
            .iter()
            .map(|c| Builder::new(c.kind, n, self.precision, self.scale))
            .collect();
        let mut keys = StringBuilder::with_capacity(n, n * self.key.len());
        let mut lines = Int64Builder::with_capacity(n);
        let mut problems = Vec::new();
        let mut findings = Vec::new();
        let mut rows = 0;
        while rows < n {
            let more = match self.reader.read_byte_record(&mut self.record) {
                Ok(more) => more,
                Err(e) => {
                    // Only reading can fail (byte records, flexible): the Guard's line is where
                    // the bytes stopped making sense.
                    let line = self.reader.get_ref().line;
                    return Err(Error::Rejected(format!("line {line}: unreadable CSV: {e}")));
                }
            };
            if !more {
                self.finished = true;
                self.check_end()?;
                break;
            }
            let at = self.record_lines()?;
            let line = at.start;
            self.rows_seen += 1;
            self.last_line = line;
            self.row_findings.clear();
            if !self.parse_record(&at, &mut problems)? {
                continue;
            }
            for (c, b) in builders.iter_mut().enumerate() {
                let src = &self.layout.columns[c].source;
                match (self.scratch[c], b) {
                    (Value::Null, b) => b.append_null(),
                    (Value::Text, Builder::Utf8(b)) => {
                        // Checked as UTF-8 in parse_record; the array is re-checked in bulk.
                        let value = resolve(src, &self.record).ok().flatten();
                        b.append_value(value.unwrap_or(b""));
                    }
                    (Value::Decimal(v), Builder::Decimal(b)) => b.append_value(v),
                    (Value::Micros(v), Builder::Timestamp(b)) => b.append_value(v),
                    _ => unreachable!("value kind always matches its column's builder"),
                }
            }
            keys.append_value(&self.key);
            lines.append_value(line as i64);
            for (c, value, kind, detail) in self.row_findings.drain(..) {
                findings.push(Finding {
                    row: rows,
                    line,
                    column: c,
                    value,
                    kind,
                    detail,
                });
            }
            rows += 1;
        }
        if rows == 0 && problems.is_empty() {
            return Ok(None);
        }
        let mut arrays = Vec::with_capacity(builders.len() + 2);
        for b in builders {
            arrays.push(b.finish()?);
        }
        arrays.push(Arc::new(keys.finish()));
        arrays.push(Arc::new(lines.finish()));
        for (target, when, equals) in &self.layout.zero_when {
            let (zeroed, changed) = zero_where(&arrays[*target], &arrays[*when], equals)?;
            arrays[*target] = zeroed;
            let line_of = |row: usize| lines_of(&arrays, row);
            for (row, native) in changed {
                findings.push(Finding {
                    row,
                    line: line_of(row),
                    column: *target,
                    value: format_decimal(native, self.scale),
                    kind: FindingKind::ZeroedByMapping,
                    detail: String::new(),
                });
            }
        }
        let batch = RecordBatch::try_new(self.layout.schema.clone(), arrays)?;
        Ok(Some(DecodedBatch {
            batch,
            problems,
            findings,
        }))
    }
}

impl<R: Read> CsvDecoder<R> {
    /// File-level checks once the input is exhausted.
    fn check_end(&self) -> Result<()> {
        // First: a quote opened in the header would otherwise read as "no data rows".
        if let Some(open) = self.reader.get_ref().unterminated {
            let last = self.last_line.max(open.end);
            return Err(Error::Rejected(format!(
                "line {}: the file ends inside a quoted field: the quote that opens column {} on line {} is never closed, so lines {}-{} were read as that one field",
                open.line,
                self.header_name(open.field),
                open.line,
                open.line,
                last
            )));
        }
        if self.rows_seen == 0 {
            return Err(Error::Rejected(
                "line 2: no data rows after the header (an empty snapshot would wipe the month; refusing to load it)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The Guard's account of the record the parser just returned. The two read the same bytes
    /// by the same rules, so they agree; if they ever do not, the file is refused rather than
    /// loaded with wrong line numbers.
    fn record_lines(&mut self) -> Result<RecordLines> {
        let fields = self.record.len();
        let guard = self.reader.get_mut();
        match guard.records.pop_front() {
            Some(at) if at.delimiters + 1 == fields => Ok(at),
            other => Err(Error::Rejected(format!(
                "line {}: billpipe lost count of the file's lines (the CSV parser read a record of {fields} fields, the line counter {}); refusing to load rows with wrong line numbers",
                other.as_ref().map_or(guard.line, |a| a.start),
                other.map_or("none".to_string(), |a| format!("{} fields", a.delimiters + 1)),
            ))),
        }
    }

    /// Judges a record that spans lines (a quoted field holds line breaks). When what the field
    /// swallowed reads as whole records, the quote ran away: a quote opened (or lost its closing
    /// twin) and took the following lines into one field, even if the field count comes out
    /// right. Each line of the record is then held out on its own (see the module doc for why
    /// holding out, and why per line). `None`: a real multi-line value.
    fn runaway_quote(&self, at: &RecordLines) -> Option<Vec<RowProblem>> {
        let delimiter = self.options.delimiter;
        // The record as physical lines: fields joined by the delimiter, split at line breaks
        // (\r\n, \r or \n), with the delimiters each line holds (quoted ones too: a line is
        // "a whole record" when it has at least the header's count).
        let mut lines: Vec<(Vec<u8>, usize)> = vec![(Vec::new(), 0)];
        // The first field holding a line break, and the line breaks in it. The fields before it
        // are all on the record's first line, so its quote opened there.
        let mut opened: Option<(usize, u64)> = None;
        for (i, field) in self.record.iter().enumerate() {
            if i > 0 {
                let last = lines.last_mut()?;
                last.0.push(delimiter);
                last.1 += 1;
            }
            let mut bytes = field.iter().copied().peekable();
            while let Some(b) = bytes.next() {
                if b == b'\r' || b == b'\n' {
                    if b == b'\r' && bytes.peek() == Some(&b'\n') {
                        bytes.next();
                    }
                    match &mut opened {
                        None => opened = Some((i, 1)),
                        Some((f, breaks)) if *f == i => *breaks += 1,
                        Some(_) => {}
                    }
                    lines.push((Vec::new(), 0));
                    continue;
                }
                let last = lines.last_mut()?;
                last.0.push(b);
                last.1 += usize::from(b == delimiter);
            }
        }
        let (field, breaks) = opened?;
        let whole = |l: &(Vec<u8>, usize)| l.1 >= self.header_len.saturating_sub(1).max(2);
        let (first, rest) = lines.split_first()?;
        let (last, inner) = rest.split_last()?;
        if !(inner.iter().any(whole) || whole(first) && whole(last)) {
            return None;
        }
        let open = at.start;
        let close = at.start + breaks;
        let end = at.start + lines.len() as u64 - 1;
        let column = self.header_name(field);
        let records = lines
            .iter()
            .filter(|l| !l.0.iter().all(u8::is_ascii_whitespace))
            .count();
        let reason = format!(
            "runaway quote: the quote that opens column {column} on line {open} closes only on line {close}, so lines {open}-{end} were read as one record, and the lines it swallowed read as whole records; each of these {records} lines is held out as an unreadable row (its BilledCost is not counted)"
        );
        Some(
            lines
                .into_iter()
                .enumerate()
                .filter(|(_, l)| !l.0.iter().all(u8::is_ascii_whitespace))
                .map(|(i, (text, _))| RowProblem {
                    line: at.start + i as u64,
                    column: column.clone(),
                    value: String::from_utf8_lossy(&text).into_owned(),
                    reason: reason.clone(),
                    held_out: true,
                })
                .collect(),
        )
    }

    /// A `"` the CSV parser read as text (inside an unquoted field, or after the quote that
    /// closes a quoted one): the row loads as written, with a finding naming where.
    fn stray_quote_finding(&mut self, at: &RecordLines, stray: StrayQuote) {
        let Some(c) = self
            .layout
            .columns
            .iter()
            .position(|c| matches!(c.source, Source::Field(i) if i == stray.field))
        else {
            return;
        };
        let value = self.record.get(stray.field).unwrap_or_default();
        let what = match stray.after_closing {
            false => "a `\"` inside a field that is not quoted",
            true => "text after the quote that closes a quoted field",
        };
        let place = match stray.line == at.start {
            true => String::new(),
            false => format!(" (on line {})", stray.line),
        };
        self.row_findings.push((
            c,
            String::from_utf8_lossy(value).into_owned(),
            FindingKind::StrayQuote,
            format!("{what}{place}, read as part of the value"),
        ));
    }
}

fn push_finding(
    findings: &mut Vec<(usize, String, FindingKind, String)>,
    column: usize,
    field: &[u8],
    kind: FindingKind,
) {
    findings.push((
        column,
        String::from_utf8_lossy(field).into_owned(),
        kind,
        String::new(),
    ));
}

/// What the [`Guard`] knows of one record: the lines it starts and ends on, its field count
/// (to stay in step with the parser) and the first quote the parser reads as text.
#[derive(Debug, Clone, Copy, Default)]
struct RecordLines {
    start: u64,
    end: u64,
    delimiters: usize,
    stray: Option<StrayQuote>,
}

#[derive(Debug, Clone, Copy)]
struct StrayQuote {
    line: u64,
    field: usize,
    /// After a closing quote (`"12" disk"`) rather than inside an unquoted field (`12" disk`).
    after_closing: bool,
}

/// Where a quoted field still open at the end of the input began.
#[derive(Debug, Clone, Copy)]
struct OpenQuote {
    line: u64,
    field: usize,
    /// The last line the input reached.
    end: u64,
}

/// The CSV grammar as csv-core reads it with billpipe's settings (`"` quotes, doubled to
/// escape, no escape character, no comments, `\r`, `\n` or `\r\n` end a record, empty lines
/// skipped). See csv-core's `transition_nfa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    StartRecord,
    StartField,
    InField,
    Quoted,
    /// A `"` inside a quoted field: an escaped quote if another follows, else the field's end.
    QuoteInQuoted,
}

/// Watches the raw bytes on their way to the CSV parser. It sees every byte, so it is where
/// lines are counted: a physical line ends at `\n`, `\r\n` or a lone `\r` (Excel on old Macs,
/// mixed exports), whatever the parser thinks a record is, and each record is logged with the
/// lines it starts and ends on. Following the same quoting rules as the parser, it also tells
/// a quote that opens a field from a quote the parser reads as text (`12" disk`), and knows
/// where a quoted field that is still open at the end of the input began (the parser silently
/// accepts such a file). And it bounds line length, so garbage without line breaks cannot grow
/// the parser's buffers without limit.
///
/// The Guard reads ahead of the parser by at most one buffer; records it has seen wait in
/// `records` until the decoder takes them, one per record the parser returns.
pub struct Guard<R> {
    inner: R,
    max_line: usize,
    delimiter: u8,
    /// Bytes since the last line break.
    line_len: usize,
    lex: Lex,
    /// The physical line the next byte is on (1-based).
    line: u64,
    /// The last byte was `\r`: a `\n` now belongs to the same line break.
    prev_cr: bool,
    current: RecordLines,
    records: std::collections::VecDeque<RecordLines>,
    /// Line and field of the quoted field being read.
    quote_at: (u64, usize),
    unterminated: Option<OpenQuote>,
    ended: bool,
}

impl<R: Read> Guard<R> {
    fn new(inner: R, max_line: usize, delimiter: u8) -> Self {
        Guard {
            inner,
            max_line,
            delimiter,
            line_len: 0,
            lex: Lex::StartRecord,
            line: 1,
            prev_cr: false,
            current: RecordLines::default(),
            records: std::collections::VecDeque::new(),
            quote_at: (1, 0),
            unterminated: None,
            ended: false,
        }
    }

    fn end_record(&mut self) {
        self.current.end = self.line;
        self.records.push_back(self.current);
        self.lex = Lex::StartRecord;
    }

    fn stray(&mut self, after_closing: bool) {
        if self.current.stray.is_none() {
            self.current.stray = Some(StrayQuote {
                line: self.line,
                field: self.current.delimiters,
                after_closing,
            });
        }
    }

    /// One byte through the grammar, then through the line count.
    #[inline]
    fn step(&mut self, b: u8) -> std::io::Result<()> {
        let term = b == b'\r' || b == b'\n';
        if self.lex == Lex::StartRecord && !term {
            self.current = RecordLines {
                start: self.line,
                ..RecordLines::default()
            };
            self.lex = Lex::StartField;
        }
        let d = self.delimiter;
        match self.lex {
            Lex::StartRecord => {}
            Lex::StartField | Lex::InField if b == d => {
                self.current.delimiters += 1;
                self.lex = Lex::StartField;
            }
            Lex::StartField | Lex::InField if term => self.end_record(),
            Lex::StartField if b == b'"' => {
                self.quote_at = (self.line, self.current.delimiters);
                self.lex = Lex::Quoted;
            }
            Lex::StartField => self.lex = Lex::InField,
            Lex::InField => {
                if b == b'"' {
                    self.stray(false);
                }
            }
            Lex::Quoted => {
                if b == b'"' {
                    self.lex = Lex::QuoteInQuoted;
                }
            }
            Lex::QuoteInQuoted => {
                if b == b'"' {
                    self.lex = Lex::Quoted;
                } else if b == d {
                    self.current.delimiters += 1;
                    self.lex = Lex::StartField;
                } else if term {
                    self.end_record();
                } else {
                    self.stray(true);
                    self.lex = Lex::InField;
                }
            }
        }
        if b == b'\r' || (b == b'\n' && !self.prev_cr) {
            self.line += 1;
        }
        self.prev_cr = b == b'\r';
        if term {
            self.line_len = 0;
        } else {
            self.line_len += 1;
            self.check_line_len()?;
        }
        Ok(())
    }

    #[inline]
    fn check_line_len(&self) -> std::io::Result<()> {
        if self.line_len > self.max_line {
            return Err(std::io::Error::other(format!(
                "a line longer than {} bytes (not a CSV bill?)",
                self.max_line
            )));
        }
        Ok(())
    }

    fn scan(&mut self, data: &[u8]) -> std::io::Result<()> {
        let mut chunks = data.chunks_exact(64);
        for chunk in &mut chunks {
            if let Ok(chunk) = <&[u8; 64]>::try_from(chunk) {
                self.scan_chunk(chunk)?;
            }
        }
        for b in chunks.remainder() {
            self.step(*b)?;
        }
        Ok(())
    }

    /// 64 bytes: runs without quotes or line breaks (the bulk of a file) only move the
    /// delimiter count, or nothing inside quotes, and are skipped with bit masks; every other
    /// byte goes through [`Guard::step`].
    fn scan_chunk(&mut self, chunk: &[u8; 64]) -> std::io::Result<()> {
        let (special, delimiters) = masks(chunk, self.delimiter);
        let mut pos = 0;
        while pos < 64 {
            if matches!(self.lex, Lex::StartField | Lex::InField | Lex::Quoted) {
                let run = ((special >> pos).trailing_zeros() as usize).min(64 - pos);
                if run > 0 {
                    if self.lex != Lex::Quoted {
                        let within = (delimiters >> pos) & low_bits(run);
                        self.current.delimiters += within.count_ones() as usize;
                        self.lex = match (delimiters >> (pos + run - 1)) & 1 {
                            1 => Lex::StartField,
                            _ => Lex::InField,
                        };
                    }
                    self.prev_cr = false;
                    self.line_len += run;
                    self.check_line_len()?;
                    pos += run;
                    continue;
                }
            }
            self.step(chunk[pos])?;
            pos += 1;
        }
        Ok(())
    }

    /// The end of the input: the parser returns a record still open as it is, even inside
    /// quotes; the Guard logs it and remembers where such a quote opened.
    fn finish(&mut self) {
        if self.ended {
            return;
        }
        self.ended = true;
        if self.lex == Lex::Quoted {
            let end = match self.line_len {
                0 if self.line > self.quote_at.0 => self.line - 1,
                _ => self.line,
            };
            self.unterminated = Some(OpenQuote {
                line: self.quote_at.0,
                field: self.quote_at.1,
                end,
            });
        }
        if self.lex != Lex::StartRecord {
            self.end_record();
            if let Some(open) = self.unterminated {
                if let Some(last) = self.records.back_mut() {
                    last.end = open.end;
                }
            }
        }
    }
}

/// Bit masks of a 64-byte chunk (bit j = byte j): quotes and line breaks, and delimiters.
/// Flags are set byte-wise (a loop the compiler turns into vector compares), then packed
/// eight at a time with a multiply, which is several times faster than shifting bits in.
fn masks(chunk: &[u8; 64], delimiter: u8) -> (u64, u64) {
    let mut special = [0u8; 64];
    let mut delimiters = [0u8; 64];
    for ((b, s), d) in chunk.iter().zip(&mut special).zip(&mut delimiters) {
        *s = u8::from((*b == b'"') | (*b == b'\r') | (*b == b'\n'));
        *d = u8::from(*b == delimiter);
    }
    (pack(&special), pack(&delimiters))
}

/// Packs 64 bytes that are each 0 or 1 into the bits of a u64 (byte j → bit j).
fn pack(flags: &[u8; 64]) -> u64 {
    let mut bits = 0u64;
    for (k, eight) in flags.chunks_exact(8).enumerate() {
        let mut word = [0u8; 8];
        word.copy_from_slice(eight);
        // Byte i (0 or 1) of the word lands on bit 56 + i of the product.
        let gathered = u64::from_le_bytes(word).wrapping_mul(0x0102_0408_1020_4080) >> 56;
        bits |= gathered << (8 * k);
    }
    bits
}

/// The lowest `n` bits set (`n` ≤ 64).
fn low_bits(n: usize) -> u64 {
    match n {
        64.. => u64::MAX,
        _ => (1u64 << n) - 1,
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish();
        }
        self.scan(&buf[..n])?;
        Ok(n)
    }
}

impl<R: Read> Iterator for CsvDecoder<R> {
    type Item = Result<DecodedBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_batch() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                self.finished = true;
                Some(Err(e))
            }
        }
    }
}

/// The raw bytes of an output column for the current row: `None` for an absent column, an error
/// for a value a mapping table does not know.
/// The raw bytes of an output column's value. `Err((native value, reason))` when a mapping
/// table does not list the native value.
fn resolve<'a>(
    source: &'a Source,
    record: &'a ByteRecord,
) -> std::result::Result<Option<&'a [u8]>, (String, String)> {
    match source {
        Source::Absent => Ok(None),
        Source::Field(i) => Ok(record.get(*i)),
        Source::Constant(v) => Ok(Some(v)),
        Source::Table {
            field,
            native,
            values,
        } => {
            let raw = record.get(*field).unwrap_or(b"");
            let key = mapping::normalise(&String::from_utf8_lossy(raw));
            match values.get(&key) {
                Some(v) => Ok(Some(v)),
                None => {
                    let raw = String::from_utf8_lossy(raw).into_owned();
                    let reason = format!(
                        "{native} {raw:?} is not in the mapping table; add it to the mapping file"
                    );
                    Err((raw, reason))
                }
            }
        }
    }
}

/// `column` with 0 wherever `when` equals `equals` (BilledCost on Credit rows), and the rows
/// whose value that changed, with the value they had.
fn zero_where(
    column: &ArrayRef,
    when: &ArrayRef,
    equals: &str,
) -> Result<(ArrayRef, Vec<(usize, i128)>)> {
    use arrow_array::{Array, Decimal128Array};
    let (Some(values), Some(flags)) = (
        column.as_any().downcast_ref::<Decimal128Array>(),
        when.as_any().downcast_ref::<StringArray>(),
    ) else {
        return Ok((column.clone(), Vec::new()));
    };
    let mut changed = Vec::new();
    let zeroed: Decimal128Array = (0..values.len())
        .map(|i| {
            if flags.is_valid(i) && flags.value(i) == equals {
                if values.is_valid(i) && values.value(i) != 0 {
                    changed.push((i, values.value(i)));
                }
                Some(0)
            } else if values.is_valid(i) {
                Some(values.value(i))
            } else {
                None
            }
        })
        .collect();
    let zeroed = zeroed.with_precision_and_scale(values.precision(), values.scale())?;
    Ok((Arc::new(zeroed), changed))
}

/// The source line of row `row` (the lineage column is the last array).
fn lines_of(arrays: &[ArrayRef], row: usize) -> u64 {
    arrays
        .last()
        .and_then(|a| a.as_any().downcast_ref::<arrow_array::Int64Array>())
        .map_or(0, |l| l.value(row) as u64)
}

enum Builder {
    /// Strings are collected as bytes and turned into a `StringArray` once per batch, so the
    /// UTF-8 check runs over the whole buffer instead of once more per value.
    Utf8(BinaryBuilder),
    Decimal(Decimal128Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    fn new(kind: Kind, rows: usize, precision: u8, scale: i8) -> Builder {
        match kind {
            Kind::Utf8 => Builder::Utf8(BinaryBuilder::with_capacity(rows, rows * 16)),
            Kind::Decimal => Builder::Decimal(
                Decimal128Builder::with_capacity(rows)
                    .with_precision_and_scale(precision, scale)
                    .unwrap_or_else(|_| Decimal128Builder::with_capacity(rows)),
            ),
            Kind::Timestamp => Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Utf8(b) => b.append_null(),
            Builder::Decimal(b) => b.append_null(),
            Builder::Timestamp(b) => b.append_null(),
        }
    }

    fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            Builder::Utf8(mut b) => {
                let (offsets, values, nulls) = b.finish().into_parts();
                Arc::new(StringArray::try_new(offsets, values, nulls)?)
            }
            Builder::Decimal(mut b) => Arc::new(b.finish()),
            Builder::Timestamp(mut b) => Arc::new(b.finish()),
        })
    }
}

/// Parses an exact decimal (`-12.5`, `3`, `35.2E-7`) into an integer scaled by `10^scale`.
/// Never rounds: digits past the scale must be zeros, and the value must fit `precision`.
pub fn parse_decimal(s: &[u8], precision: u8, scale: i8) -> std::result::Result<i128, String> {
    let err = |why: &str| Err(format!("not a decimal number ({why})"));
    let mut i = 0;
    let negative = match s.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let mut mantissa: i128 = 0;
    let mut digits = 0u32; // significant digits accumulated
    let mut frac_digits: i32 = 0;
    let mut pending_zeros: u32 = 0; // fractional zeros not yet applied (trailing zeros are free)
    let mut seen_digit = false;
    let mut in_frac = false;
    let overflow = || format!("does not fit DECIMAL({precision},{scale})");
    while i < s.len() {
        let b = s[i];
        match b {
            b'0'..=b'9' => {
                seen_digit = true;
                let d = (b - b'0') as i128;
                if in_frac {
                    if d == 0 {
                        pending_zeros += 1;
                        i += 1;
                        continue;
                    }
                    for _ in 0..pending_zeros {
                        mantissa = mantissa.checked_mul(10).ok_or_else(overflow)?;
                    }
                    frac_digits += pending_zeros as i32 + 1;
                    pending_zeros = 0;
                } else if mantissa == 0 && d == 0 {
                    i += 1;
                    continue;
                }
                mantissa = mantissa
                    .checked_mul(10)
                    .and_then(|m| m.checked_add(d))
                    .ok_or_else(overflow)?;
                digits += 1;
                if digits > 38 {
                    return Err(overflow());
                }
            }
            b'.' if !in_frac => in_frac = true,
            b'e' | b'E' => break,
            _ => return err("unexpected character"),
        }
        i += 1;
    }
    if !seen_digit {
        return err("no digits");
    }
    let mut exponent: i32 = 0;
    if i < s.len() {
        // exponent part
        let exp =
            std::str::from_utf8(&s[i + 1..]).map_err(|_| "not a decimal number".to_string())?;
        if exp.is_empty() || exp.starts_with('+') && exp.len() == 1 {
            return err("empty exponent");
        }
        exponent = exp
            .parse::<i32>()
            .map_err(|_| "not a decimal number (bad exponent)".to_string())?;
        if exponent.abs() > 100 {
            return Err(overflow());
        }
    }
    let shift = scale as i32 - frac_digits + exponent;
    let mut value = mantissa;
    if shift >= 0 {
        for _ in 0..shift {
            value = value.checked_mul(10).ok_or_else(overflow)?;
        }
    } else {
        for _ in 0..(-shift) {
            if value % 10 != 0 {
                return Err(format!(
                    "has more than {scale} fractional digits; billpipe does not round"
                ));
            }
            value /= 10;
        }
    }
    let limit = 10i128.checked_pow(precision as u32).unwrap_or(i128::MAX);
    if value >= limit {
        return Err(overflow());
    }
    Ok(if negative { -value } else { value })
}

/// Formats a scaled decimal for people and reports, without trailing zeros.
pub fn format_decimal(value: i128, scale: i8) -> String {
    let scale = scale.max(0) as u32;
    let unit = 10i128.pow(scale);
    let sign = if value < 0 { "-" } else { "" };
    let abs = value.unsigned_abs();
    let int = abs / unit as u128;
    let frac = abs % unit as u128;
    if frac == 0 {
        return format!("{sign}{int}");
    }
    let frac = format!("{:0width$}", frac, width = scale as usize);
    format!("{sign}{int}.{}", frac.trim_end_matches('0'))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month) of a day count since 1970-01-01.
pub fn year_month_from_days(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// FOCUS's Date/Time Format: exactly `YYYY-MM-DDTHH:mm:ssZ`.
fn is_focus_datetime(s: &[u8]) -> bool {
    s.len() == 20
        && s[4] == b'-'
        && s[7] == b'-'
        && s[10] == b'T'
        && s[13] == b':'
        && s[16] == b':'
        && s[19] == b'Z'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|i| s[*i].is_ascii_digit())
}

/// FOCUS's Numeric Format: `-?digits[.digits][E-?digits]` (a leading `+`, a bare `.5` or `5.`,
/// and a `+` in the exponent are not allowed; the decoder still reads them exactly).
fn is_focus_numeric(s: &[u8]) -> bool {
    let digits = |s: &[u8], i: &mut usize| {
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    let mut i = usize::from(s.first() == Some(&b'-'));
    if !digits(s, &mut i) {
        return false;
    }
    if s.get(i) == Some(&b'.') {
        i += 1;
        if !digits(s, &mut i) {
            return false;
        }
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if s.get(i) == Some(&b'-') {
            i += 1;
        }
        if !digits(s, &mut i) {
            return false;
        }
    }
    i == s.len()
}

/// Parses an ISO 8601 date-time into microseconds since the epoch, UTC.
///
/// Accepted: `YYYY-MM-DD`, then optionally `T` or a space and `HH:MM[:SS[.fraction]]`, then
/// optionally `Z` or `±HH:MM` / `±HHMM`. Without a zone the value is read at `naive_offset_secs`
/// (UTC for FOCUS, UTC+8 for Tencent's native bills); FOCUS itself requires the `Z` form, and
/// whether a file follows that is the validator's call, not the decoder's.
pub fn parse_timestamp(s: &[u8], naive_offset_secs: i64) -> std::result::Result<i64, String> {
    let bad = || {
        Err(format!(
            "not a date-time (expected YYYY-MM-DDTHH:MM:SSZ), got {:?}",
            String::from_utf8_lossy(s)
        ))
    };
    let num = |a: usize, b: usize| -> Option<i64> {
        let part = s.get(a..b)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            part.iter()
                .fold(0i64, |acc, d| acc * 10 + (d - b'0') as i64),
        )
    };
    if s.len() < 10 || s[4] != b'-' || s[7] != b'-' {
        return bad();
    }
    let (Some(y), Some(mo), Some(d)) = (num(0, 4), num(5, 7), num(8, 10)) else {
        return bad();
    };
    let mo = mo as u32;
    let d = d as u32;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) {
        return Err(format!("not a real date: {:?}", String::from_utf8_lossy(s)));
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    let mut micros = 0i64;
    let mut i = 10;
    if i < s.len() && (s[i] == b'T' || s[i] == b' ') {
        let (Some(h), Some(mi)) = (num(i + 1, i + 3), num(i + 4, i + 6)) else {
            return bad();
        };
        if s.get(i + 3) != Some(&b':') || h > 23 || mi > 59 {
            return bad();
        }
        secs += h * 3600 + mi * 60;
        i += 6;
        if s.get(i) == Some(&b':') {
            let Some(sec) = num(i + 1, i + 3) else {
                return bad();
            };
            if sec > 59 {
                return bad();
            }
            secs += sec;
            i += 3;
            if s.get(i) == Some(&b'.') {
                i += 1;
                let start = i;
                while i < s.len() && s[i].is_ascii_digit() {
                    if i - start < 6 {
                        micros = micros * 10 + (s[i] - b'0') as i64;
                    } else if s[i] != b'0' {
                        return Err(format!(
                            "date-time has sub-microsecond digits, which billpipe does not round: {:?}",
                            String::from_utf8_lossy(s)
                        ));
                    }
                    i += 1;
                }
                if i == start {
                    return bad();
                }
                for _ in (i - start).min(6)..6 {
                    micros *= 10;
                }
            }
        }
    }
    let offset = match &s[i..] {
        b"" => naive_offset_secs,
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    let digits = [*h1, *h2, *m1, *m2];
                    if !digits.iter().all(u8::is_ascii_digit) {
                        return bad();
                    }
                    (
                        ((h1 - b'0') * 10 + (h2 - b'0')) as i64,
                        ((m1 - b'0') * 10 + (m2 - b'0')) as i64,
                    )
                }
                [h1, h2] if h1.is_ascii_digit() && h2.is_ascii_digit() => {
                    (((h1 - b'0') * 10 + (h2 - b'0')) as i64, 0)
                }
                _ => return bad(),
            };
            let o = h * 3600 + m * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return bad(),
    };
    Ok((secs - offset) * 1_000_000 + micros)
}

/// Parses `+08:00` style offsets from configuration into seconds.
pub fn parse_offset(text: &str) -> Result<i64> {
    let micros = parse_timestamp(format!("1970-01-01T00:00:00{text}").as_bytes(), 0)
        .map_err(|_| Error::Config(format!("bad UTC offset {text:?} (expected like +08:00)")))?;
    Ok(-micros / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> std::result::Result<i128, String> {
        parse_decimal(s.as_bytes(), 38, 18)
    }

    const E18: i128 = 1_000_000_000_000_000_000;

    /// Hands out at most `step` bytes per read, so states cross buffer boundaries.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// (start line, end line, fields) of every record, as the Guard logs them while csv reads
    /// through it; asserts the two agree on the records and their field counts.
    fn guard_records(data: &[u8], step: usize) -> (Vec<(u64, u64, usize)>, Guard<Trickle<'_>>) {
        let guard = Guard::new(Trickle { data, step }, 1 << 20, b',');
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(guard);
        let mut record = ByteRecord::new();
        let mut out = Vec::new();
        while reader.read_byte_record(&mut record).unwrap() {
            let at = reader
                .get_mut()
                .records
                .pop_front()
                .expect("a record per record");
            assert_eq!(
                at.delimiters + 1,
                record.len(),
                "{:?}",
                String::from_utf8_lossy(data)
            );
            out.push((at.start, at.end, record.len()));
        }
        assert!(reader.get_mut().records.is_empty());
        (out, reader.into_inner())
    }

    #[test]
    fn lines_are_physical_lines_whatever_the_line_ends() {
        let long = "x".repeat(200);
        for (eol, name) in [("\n", "LF"), ("\r\n", "CRLF"), ("\r", "CR")] {
            let text = format!(
                "h1,h2{eol}a,b{eol}\"multi{eol}line\",c{eol}{eol}d,\"{long}\"{eol}\"{long}{eol}{long}\",e{eol}f,g"
            );
            for step in [1, 3, 64, 65, 8192] {
                let (records, _) = guard_records(text.as_bytes(), step);
                assert_eq!(
                    records,
                    vec![
                        (1, 1, 2),
                        (2, 2, 2),
                        (3, 4, 2),
                        (6, 6, 2),
                        (7, 8, 2),
                        (9, 9, 2)
                    ],
                    "{name}, reads of {step}"
                );
            }
        }
        // Mixed: CRLF, LF and CR in one file, and a CRLF split as \r | \n between reads.
        let text = b"h1,h2\r\na,b\nc,d\re,\"f\r\ng\"\r\nh,i";
        for step in 1..8 {
            let (records, _) = guard_records(text, step);
            assert_eq!(
                records,
                vec![(1, 1, 2), (2, 2, 2), (3, 3, 2), (4, 5, 2), (6, 6, 2)]
            );
        }
    }

    #[test]
    fn the_guard_stays_in_step_with_the_parser_on_any_bytes() {
        // Random bytes from the alphabet that matters to CSV: the Guard must split records and
        // fields exactly as csv-core does, and its start line must be the line of the record's
        // first byte, counted independently here from the parser's byte positions.
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..4000 {
            // Every other round mostly plain text, so long runs take the Guard's fast path.
            let alphabet: &[u8] = match round % 2 {
                0 => b"ab,\"\r\n ",
                _ => b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa,,,,\"\r\n",
            };
            let len = (next() % 400) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let step = 1 + (next() % 70) as usize;
            let (records, guard) = guard_records(&data, step);
            // Independent: record starts from the parser, lines from the bytes.
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(data.as_slice());
            let mut record = ByteRecord::new();
            let mut i = 0;
            while reader.read_byte_record(&mut record).unwrap() {
                let mut at = record.position().unwrap().byte() as usize;
                while matches!(data.get(at), Some(b'\r' | b'\n')) {
                    at += 1;
                }
                let before = &data[..at];
                let line = 1 + before
                    .iter()
                    .enumerate()
                    .filter(|(j, b)| {
                        **b == b'\r' || (**b == b'\n' && (*j == 0 || before[j - 1] != b'\r'))
                    })
                    .count() as u64;
                assert_eq!(records[i].0, line, "{:?}", String::from_utf8_lossy(&data));
                i += 1;
            }
            assert_eq!(i, records.len());
            for r in &records {
                assert!(r.1 >= r.0 && r.0 <= guard.line);
            }
        }
    }

    #[test]
    fn quotes_are_told_apart() {
        // A quote inside an unquoted field is text; the file does not end inside quotes.
        let (records, guard) = guard_records(b"a,b\n12\" disk,x\nc,d\n", 5);
        assert_eq!(records.len(), 3);
        assert!(guard.unterminated.is_none());
        let guard = Guard::new(&b"a,b\n12\" disk,x\nc,d\n"[..], 1 << 20, b',');
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(guard);
        let mut record = ByteRecord::new();
        let mut strays = Vec::new();
        while reader.read_byte_record(&mut record).unwrap() {
            let at = reader.get_mut().records.pop_front().unwrap();
            strays.push(at.stray.map(|s| (s.line, s.field, s.after_closing)));
        }
        assert_eq!(strays, vec![None, Some((2, 0, false)), None]);
        // A quote left open: where it opened, and the last line it swallowed.
        let (_, guard) = guard_records(b"a,b\r\nc,d\r\ne,\"{\"\"k\"\":1\r\nf,g\r\n", 4);
        let open = guard.unterminated.unwrap();
        assert_eq!((open.line, open.field, open.end), (3, 1, 4));
        // Doubled quotes and a quote after a closing quote.
        let guard = Guard::new(&b"\"x\"\"y\",\"12\" disk\",z\n"[..], 1 << 20, b',');
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(guard);
        assert!(reader.read_byte_record(&mut record).unwrap());
        let at = reader.get_mut().records.pop_front().unwrap();
        let stray = at.stray.unwrap();
        assert_eq!((stray.field, stray.after_closing), (1, true));
    }

    #[test]
    fn long_lines_are_bounded_whatever_ends_them() {
        let mut text = b"a,b\r".to_vec();
        text.extend(std::iter::repeat_n(b'x', 300));
        let guard = Guard::new(text.as_slice(), 256, b',');
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(guard);
        let mut record = ByteRecord::new();
        let err = loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => continue,
                Ok(false) => panic!("a 300-byte line passed a 256-byte limit"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("longer than 256 bytes"), "{err}");
        assert_eq!(reader.get_ref().line, 2);
        // CR-only lines are lines: a file of short CR lines passes.
        let text = "a,b\r".repeat(200);
        let (records, _) = guard_records(text.as_bytes(), 8192);
        assert_eq!(records.len(), 200);
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(dec("12.5").unwrap(), 12 * E18 + E18 / 2);
        assert_eq!(dec("-0.00000001").unwrap(), -10_000_000_000);
        assert_eq!(dec("0").unwrap(), 0);
        assert_eq!(dec("+3").unwrap(), 3 * E18);
        assert_eq!(dec(".5").unwrap(), E18 / 2);
        assert_eq!(dec("35.2E-7").unwrap(), 3_520_000_000_000);
        assert_eq!(dec("1e3").unwrap(), 1000 * E18);
        // 15 fractional digits (FOCUS sample ConsumedQuantity), trailing zeros past the scale
        assert_eq!(dec("0.002007490000000").unwrap(), 2_007_490_000_000_000);
        assert_eq!(dec("2.00000000000000000000000000").unwrap(), 2 * E18);
        assert!(dec("0.0000000000000000001")
            .unwrap_err()
            .contains("fractional"));
        assert!(dec("100000000000000000000").is_err()); // 21 integer digits
        assert_eq!(
            dec("99999999999999999999").unwrap(),
            99999999999999999999 * E18
        );
        for bad in ["", "-", "1.2.3", "abc", "1,000", "1e", "12 ", "$5"] {
            assert!(dec(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_decimal(dec("-12.50").unwrap(), 18), "-12.5");
        assert_eq!(format_decimal(dec("7").unwrap(), 18), "7");
        assert_eq!(format_decimal(dec("-0.05").unwrap(), 18), "-0.05");
    }

    #[test]
    fn focus_numeric_format() {
        for ok in ["0", "-12.5", "35.2E-7", "3e5", "1.50"] {
            assert!(is_focus_numeric(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "+1", "35.2E+7", ".5", "5.", "1,000", "1 000", "", "-", "1e", "$1",
        ] {
            assert!(!is_focus_numeric(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_utc() {
        let t = |s: &str| parse_timestamp(s.as_bytes(), 0);
        let z = t("2025-11-30T15:59:59Z").unwrap();
        assert_eq!(z, 1_764_518_399_000_000);
        assert_eq!(t("2025-11-30 15:59:59").unwrap(), z);
        assert_eq!(t("2025-11-30T23:59:59+08:00").unwrap(), z);
        assert_eq!(t("2025-11-30T23:59:59+0800").unwrap(), z);
        assert_eq!(
            parse_timestamp(b"2025-11-30 23:59:59", 8 * 3600).unwrap(),
            z
        );
        assert_eq!(t("2025-11-30T15:59:59.5Z").unwrap(), z + 500_000);
        assert_eq!(
            t("2025-11-30").unwrap(),
            z - (15 * 3600 + 59 * 60 + 59) * 1_000_000
        );
        assert_eq!(t("1969-12-31T23:59:59Z").unwrap(), -1_000_000);
        for bad in [
            "2025-02-30T00:00:00Z",
            "2025-13-01",
            "30/11/2025",
            "2025-11-30T24:00:00Z",
            "2025-11-30T10:00:00 PST",
            "x",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_offset("+08:00").unwrap(), 8 * 3600);
        assert_eq!(parse_offset("-05:30").unwrap(), -(5 * 3600 + 1800));
        let days = days_from_civil(2024, 2, 29);
        assert_eq!(year_month_from_days(days), (2024, 2));
        assert_eq!(year_month_from_days(-1), (1969, 12));
    }
}
