//! The record-line [`Guard`]: the byte scanner the CSV parser reads through, which counts
//! physical lines, follows the parser's quoting grammar byte for byte (with a 64-byte fast
//! path), and bounds line length. Kept apart from the decoder because it is the one place
//! that must agree with csv-core's state machine; its tests check exactly that.

use std::io::Read;

/// What the [`Guard`] knows of one record: the lines it starts and ends on, its field count
/// (to stay in step with the parser) and the first quote the parser reads as text.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RecordLines {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) delimiters: usize,
    pub(super) stray: Option<StrayQuote>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct StrayQuote {
    pub(super) line: u64,
    pub(super) field: usize,
    /// After a closing quote (`"12" disk"`) rather than inside an unquoted field (`12" disk`).
    pub(super) after_closing: bool,
}

/// Where a quoted field still open at the end of the input began.
#[derive(Debug, Clone, Copy)]
pub(super) struct OpenQuote {
    pub(super) line: u64,
    pub(super) field: usize,
    /// The last line the input reached.
    pub(super) end: u64,
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
    pub(super) line: u64,
    /// The last byte was `\r`: a `\n` now belongs to the same line break.
    prev_cr: bool,
    current: RecordLines,
    pub(super) records: std::collections::VecDeque<RecordLines>,
    /// Line and field of the quoted field being read.
    quote_at: (u64, usize),
    pub(super) unterminated: Option<OpenQuote>,
    ended: bool,
}

impl<R: Read> Guard<R> {
    pub(super) fn new(inner: R, max_line: usize, delimiter: u8) -> Self {
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
