//! What the [`Guard`](super::guard::Guard) says about the record the parser just returned:
//! its lines (kept in step with the parser, or the file is refused), runaway quotes (their
//! lines held out one by one) and stray quotes (a finding), and the file-level checks at the
//! end of the input. See the `decode` module doc for why each is judged as it is.

use std::io::Read;

use crate::error::Rejection;
use crate::Result;

use super::guard::{RecordLines, StrayQuote};
use super::layout::Source;
use super::{CsvDecoder, FindingKind, RowProblem};

impl<R: Read> CsvDecoder<R> {
    /// File-level checks once the input is exhausted.
    pub(super) fn check_end(&self) -> Result<()> {
        // First: a quote opened in the header would otherwise read as "no data rows".
        if let Some(open) = self.reader.get_ref().unterminated {
            let last = self.last_line.max(open.end);
            return Err(Rejection::new(format!(
                "the file ends inside a quoted field: the quote that opens column {} on line {} is never closed, so lines {}-{} were read as that one field",
                self.header_name(open.field),
                open.line,
                open.line,
                last
            ))
            .line(open.line)
            .into());
        }
        if self.rows_seen == 0 {
            return Err(Rejection::new(
                "no data rows after the header (an empty snapshot would wipe the month; refusing to load it)",
            )
            .line(2)
            .into());
        }
        Ok(())
    }

    /// The Guard's account of the record the parser just returned. The two read the same bytes
    /// by the same rules, so they agree; if they ever do not, the file is refused rather than
    /// loaded with wrong line numbers.
    pub(super) fn record_lines(&mut self) -> Result<RecordLines> {
        let fields = self.record.len();
        let guard = self.reader.get_mut();
        match guard.records.pop_front() {
            Some(at) if at.delimiters + 1 == fields => Ok(at),
            other => Err(Rejection::new(format!(
                "billpipe lost count of the file's lines (the CSV parser read a record of {fields} fields, the line counter {}); refusing to load rows with wrong line numbers",
                other.as_ref().map_or("none".to_string(), |a| format!("{} fields", a.delimiters + 1)),
            ))
            .line(other.as_ref().map_or(guard.line, |a| a.start))
            .into()),
        }
    }

    /// Judges a record that spans lines (a quoted field holds line breaks). When what the field
    /// swallowed reads as whole records, the quote ran away: a quote opened (or lost its closing
    /// twin) and took the following lines into one field, even if the field count comes out
    /// right. Each line of the record is then held out on its own (see the module doc for why
    /// holding out, and why per line). `None`: a real multi-line value.
    pub(super) fn runaway_quote(&self, at: &RecordLines) -> Option<Vec<RowProblem>> {
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
    pub(super) fn stray_quote_finding(&mut self, at: &RecordLines, stray: StrayQuote) {
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
