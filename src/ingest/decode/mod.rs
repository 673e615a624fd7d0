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
//! that cannot be read as CSV at all is an error. Numbers and date-times are parsed by
//! [`crate::values`] (exact decimals that never round, an explicit rule for date-times written
//! without a zone). The decoder only reports what it found ([`FindingKind`]); what a finding
//! means for conformance (its rule id, message and severity) is the rules module's business.
//!
//! Files: `layout` (header → output columns), `guard` (the byte scanner that counts lines and
//! follows quoting), `records` (what the guard says about each record: runaway and stray
//! quotes, the end-of-file checks), `builders` (per-batch Arrow builders and cell sources).
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

use arrow_array::builder::{Int64Builder, StringBuilder};
use arrow_array::RecordBatch;
use csv::ByteRecord;

use crate::conformance::schema::Schema;
use crate::error::Rejection;
use crate::values::{is_focus_datetime, is_focus_numeric};
use crate::{Error, Result};

mod builders;
mod guard;
mod layout;
mod records;
#[cfg(test)]
mod tests;

pub use layout::{Layout, MappedInput};
// Value parsing lives in `crate::values`; re-exported for callers that still name it here.
pub use crate::values::{
    days_from_civil, format_decimal, parse_decimal, parse_offset, parse_timestamp,
    year_month_from_days,
};

use builders::{lines_of, resolve, zero_where, Builder, Looked, TableMemo};
use guard::{Guard, RecordLines};
use layout::{Kind, Source};

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
    /// Per output column, the answers of its mapping table (empty for other columns).
    tables: Vec<TableMemo>,
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
        let has_header = reader.read_byte_record(&mut raw).map_err(|e| {
            Error::from(Rejection::new(format!("cannot read the header: {e}")).line(1))
        })?;
        if !has_header {
            return Err(Error::from(Rejection::new("empty file, no header").line(1)));
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
                return Err(Error::from(Rejection::new(format!(
                    "the header is a single column; the file looks {d:?}-delimited but the pipeline expects {wanted:?}"
                )).line(1)));
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
                Error::from(Rejection::new(format!("header column {} is not UTF-8", i + 1)).line(1))
            })?;
            header.push(name.trim().to_string());
        }
        let layout = Layout::from_header(&header, schema, mapped)?;
        Ok(CsvDecoder {
            reader,
            empty_is_null: options.null_values.iter().any(Vec::is_empty),
            header_len: header.len(),
            scratch: vec![Value::Null; layout.columns.len()],
            tables: layout
                .columns
                .iter()
                .map(|_| TableMemo::default())
                .collect(),
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
            return Err(Error::from(
                Rejection::new("not valid UTF-8 (is the file in another encoding, such as GBK?)")
                    .line(line)
                    .column(column.to_string()),
            ));
        }
        if self.record.as_slice().len() > self.options.max_record_bytes {
            return Err(Error::from(
                Rejection::new(format!(
                    "a record of {} bytes exceeds the limit of {} bytes",
                    self.record.as_slice().len(),
                    self.options.max_record_bytes
                ))
                .line(line),
            ));
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
            let resolved = match &col.source {
                Source::Table { .. } => {
                    self.tables[c]
                        .look_up(&col.source, &self.record)
                        .map(|looked| match looked {
                            Looked::Remembered(i) => Some(self.tables[c].value(i)),
                            Looked::Direct(v) => Some(v),
                        })
                }
                source => resolve(source, &self.record),
            };
            let field = match resolved {
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
                    return Err(Error::from(
                        Rejection::new(format!("unreadable CSV: {e}")).line(line),
                    ));
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
                        let value = match src {
                            Source::Table { .. } => match self.tables[c].look_up(src, &self.record)
                            {
                                Ok(Looked::Remembered(i)) => self.tables[c].value(i),
                                Ok(Looked::Direct(v)) => v,
                                Err(_) => b"",
                            },
                            src => resolve(src, &self.record).ok().flatten().unwrap_or(b""),
                        };
                        b.append_value(value);
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
