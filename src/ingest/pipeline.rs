//! The object pipeline: fetch → unpack → header → decode → check, for every object of a
//! snapshot (one, or its parts, in part order) and every CSV member of each, pushing what it
//! reads into a [`Sink`]. `run` reads into a lake sink (Parquet writer + quarantine file, see
//! `job::load`), `validate` into a verdict sink (`job::verdict`). The reading, its options and
//! the order in which errors explain a failure are the same for both, so `validate` judges
//! exactly what `run` would load — the model is ripgrep's `grep-searcher`, whose searcher pushes
//! matches into a sink so output varies without touching the search.
//!
//! Threads: the fetch stage streams on its own thread (`fetch`), decoding and checking run on
//! the caller's, and a sink may hand batches to a thread of its own (the lake's writer). Time a
//! sink spends accepting a batch (waiting for its writer) is not counted as decoding.
//!
//! All members of a snapshot share one checking state (one [`Validator`]): a file split in
//! parts is judged as the one file it is, and a member whose columns differ from the first
//! one's rejects the snapshot.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::conformance::rules::{self, Profile, RuleCounts, Severity};
use crate::conformance::schema::{self, Schema};
use crate::conformance::validate::{CheckContext, CheckMode, RowTally, Validator};
use crate::error::Rejection;
use crate::fault;
use crate::ingest::decode::{CsvDecoder, DecodeOptions, Layout, MappedInput, RowProblem};
use crate::ingest::{fetch, unpack};
use crate::store::source::{ObjectInfo, Source};
use crate::{Error, Result};

/// Which FOCUS schema types a member.
#[derive(Debug, Clone, Copy)]
pub enum SchemaChoice<'a> {
    /// The pipeline's schema (`run`, and `validate` of a key a family takes).
    Fixed(&'a Schema),
    /// `validate` of any other file: the version given, else the one whose columns the header
    /// matches best.
    Detect {
        versions: &'a [Schema],
        forced: Option<&'a str>,
    },
}

/// Everything the pipeline reads an object with.
pub struct Reading<'a> {
    pub schema: SchemaChoice<'a>,
    /// A native format's mapping to FOCUS, with its bill month.
    pub mapped: Option<MappedInput>,
    pub decode: DecodeOptions,
    pub limits: unpack::Limits,
    /// Where a zip is spilled to be read (its central directory is at the end).
    pub spill: PathBuf,
    pub profile: &'a Profile,
    pub check: CheckContext,
    /// Columns every row must have a value in (`run`: the partition columns, period first).
    pub required: Vec<String>,
}

/// Where the pipeline's output goes.
pub trait Sink {
    /// The first CSV member's header is read: `schema` types it as `layout`. An error refuses
    /// the object before any row is read.
    fn begin(&mut self, schema: &Schema, layout: &Arc<Layout>, check: &CheckContext) -> Result<()>;
    /// One checked batch of member `member`: the rows that go on, and the batch's problems
    /// (rows held out, cells loaded as null, rows the decoder set aside).
    fn accept(&mut self, member: &str, rows: RecordBatch, problems: &[RowProblem]) -> Result<()>;
    /// Everything is read (or reading stopped): finish the sink's own work. Called once, also
    /// when `begin` never was. Its error explains a failure better than the reader's ("the
    /// writer stopped" is the consequence of the writer's own error).
    fn close(&mut self) -> Result<()>;
}

/// What reading produced besides what went into the sink.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    pub tally: RowTally,
    /// Findings per rule, file-level (header) and row-level.
    pub rules: RuleCounts,
    /// How the object was packed, header notes.
    pub notes: Vec<String>,
    pub bytes_read: u64,
    pub fetch_seconds: f64,
    pub decode_seconds: f64,
    /// The FOCUS version that typed the rows.
    pub focus_version: Option<String>,
    /// `validate`: the first file-level error (the file is judged to its end anyway).
    pub first_file_error: Option<String>,
}

/// Why reading failed, by stage; [`Failure::explain`] picks the one to report.
#[derive(Debug, Default)]
pub struct Failure {
    /// The download broke off or the object could not be read.
    pub fetch: Option<Error>,
    /// The sink's own error (the writer's).
    pub sink: Option<Error>,
    /// Unpacking, decoding or checking.
    pub read: Option<Error>,
}

impl Failure {
    /// The one error that explains a failed read: a broken download first (it may be worth
    /// another try, and it explains a short file), then the sink's own error (a reader that
    /// could not hand over a batch only saw its consequence), then the reader's.
    pub fn explain(self) -> Option<Error> {
        self.fetch.or(self.sink).or(self.read)
    }
}

/// Reads `objects` into `sink`. Returns what was read, also when reading failed (`validate`
/// reports the rows judged before the failure), and the error that explains the failure.
pub fn read(
    source: &Arc<Source>,
    objects: &[&ObjectInfo],
    reading: &Reading,
    sink: &mut dyn Sink,
) -> (ReadOutcome, Result<()>) {
    let mut outcome = ReadOutcome::default();
    let mut failure = Failure::default();
    let mut checking: Option<(SchemaRef, Validator)> = None;
    let mut decode_time = Duration::ZERO;
    for object in objects {
        let key = &object.key;
        let (reader, fetcher) = match fetch::spawn(source.clone(), (*object).clone()) {
            Ok(f) => f,
            Err(e) => {
                failure.read = Some(e);
                break;
            }
        };
        let mut member = |name: &str, input: &mut dyn Read| -> Result<()> {
            let started = Instant::now();
            let waited = read_member(name, input, reading, sink, &mut checking, &mut outcome)
                .map_err(|e| member_error(name, key, e))?;
            decode_time += started.elapsed().saturating_sub(waited);
            Ok(())
        };
        let unpacked =
            unpack::for_each_member(reader, key, &reading.limits, &reading.spill, &mut member);
        let fetched = fetcher
            .join()
            .map_err(|_| Error::Internal("the fetch thread panicked".into()))
            .and_then(|r| r);
        match (fetched, unpacked) {
            (Err(e), _) => {
                failure.fetch = Some(fetch_failure(e));
                break;
            }
            (Ok(f), Ok(notes)) => {
                outcome.bytes_read += f.bytes;
                outcome.fetch_seconds += f.seconds;
                outcome.notes.extend(notes);
            }
            (Ok(_), Err(e)) => {
                failure.read = Some(e);
                break;
            }
        }
    }
    failure.sink = sink.close().err();
    if let Some((_, validator)) = checking.as_mut() {
        outcome.first_file_error = validator.first_file_error.take();
    }
    outcome.decode_seconds = decode_time.as_secs_f64();
    let result = match failure.explain() {
        Some(e) => Err(e),
        None => Ok(()),
    };
    (outcome, result)
}

/// Reads one CSV member through the checks into the sink. Returns the time spent waiting for
/// the sink.
fn read_member(
    name: &str,
    input: &mut dyn Read,
    reading: &Reading,
    sink: &mut dyn Sink,
    checking: &mut Option<(SchemaRef, Validator)>,
    outcome: &mut ReadOutcome,
) -> Result<Duration> {
    let (schema, input) = choose_schema(reading.schema, reading.decode.delimiter, input)?;
    let decoder = CsvDecoder::new(
        input,
        name,
        schema,
        reading.decode.clone(),
        reading.mapped.as_ref(),
    )?;
    fault::point("fetch");
    let layout = decoder.layout().clone();
    let validator = match checking {
        Some((first, _)) if *first != layout.schema => {
            return Err(Error::rejected(format!(
                "{}: its columns differ from the first CSV member's",
                name.rsplit('#').next().unwrap_or(name)
            )))
        }
        Some((_, v)) => v,
        None => {
            sink.begin(schema, &layout, &reading.check)?;
            let required: Vec<&str> = reading.required.iter().map(String::as_str).collect();
            let (validator, header) =
                Validator::new(schema, &layout, &required, reading.profile, &reading.check)?;
            outcome.notes.extend(header.notes);
            outcome.rules.extend(header.rules);
            outcome.focus_version = Some(schema.version.clone());
            &mut checking.insert((layout.schema.clone(), validator)).1
        }
    };
    let mut waited = Duration::ZERO;
    for item in decoder {
        let decoded = item?;
        let mut problems = decoded.problems;
        if reading.check.mode == CheckMode::Judge {
            // Rows whose fields do not line up with the header never reach the rules: in a
            // verdict they count as type errors of the column where they went wrong.
            for p in &problems {
                rules::tally(
                    &mut outcome.rules,
                    &format!("Type.{}", p.column),
                    Severity::Error,
                    &format!("{} must be a value of its FOCUS type", p.column),
                    1,
                    std::iter::once_with(|| {
                        format!("line {}: {:?} ({})", p.line, p.value, p.reason)
                    }),
                );
            }
        }
        let kept = validator.check(
            decoded.batch,
            &decoded.findings,
            &mut problems,
            &mut outcome.rules,
            &mut outcome.tally,
        )?;
        let t = Instant::now();
        sink.accept(name, kept, &problems)?;
        waited += t.elapsed();
        fault::point("write");
    }
    Ok(waited)
}

/// The member's schema, and its bytes (a header read to detect the version is handed back in
/// front of the rest).
fn choose_schema<'a, 'r>(
    choice: SchemaChoice<'a>,
    delimiter: u8,
    input: &'r mut dyn Read,
) -> Result<(&'a Schema, Box<dyn Read + 'r>)> {
    let (versions, forced) = match choice {
        SchemaChoice::Fixed(schema) => return Ok((schema, Box::new(input))),
        SchemaChoice::Detect { versions, forced } => (versions, forced),
    };
    if let Some(v) = forced {
        let schema = versions
            .iter()
            .find(|s| s.version == v)
            .ok_or_else(|| Error::Config(format!("unknown FOCUS version {v:?}")))?;
        return Ok((schema, Box::new(input)));
    }
    let first = first_line(input)?;
    let header = header_fields(&first, delimiter);
    let schema = schema::detect_version(&header, versions)
        .ok_or_else(|| Error::Config("no FOCUS schema found".into()))?;
    Ok((schema, Box::new(std::io::Cursor::new(first).chain(input))))
}

/// The first line of a member, at most 1 MiB (a header is far shorter).
fn first_line(input: &mut dyn Read) -> Result<Vec<u8>> {
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while first.len() < (1 << 20) {
        let n = input
            .read(&mut byte)
            .map_err(|e| Error::from(Rejection::new(format!("{e}")).line(1)))?;
        if n == 0 {
            break;
        }
        first.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    Ok(first)
}

/// A header line's names, split as CSV (quoted names may hold the delimiter), BOM and blanks
/// trimmed.
fn header_fields(line: &[u8], delimiter: u8) -> Vec<String> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_start_matches('\u{feff}');
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => record.iter().map(|f| f.trim().to_string()).collect(),
        _ => Vec::new(),
    }
}

/// Prefixes a reader's rejection with the zip member it is about (a plain file's name is the
/// key, which the report already shows).
fn member_error(name: &str, key: &str, e: Error) -> Error {
    match e {
        Error::Rejected(why) if name != key => Error::Rejected(why.member(member_of(name))),
        other => other,
    }
}

fn member_of(name: &str) -> &str {
    name.rsplit('#').next().unwrap_or(name)
}

/// A broken-off download can be tried again; anything else the source says is final for this
/// object (the S3 client has already retried requests that failed outright).
fn fetch_failure(e: Error) -> Error {
    match e {
        e @ Error::Fetch { .. } => e,
        other => Error::rejected(format!("reading the object failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(why: &str) -> Option<Error> {
        Some(Error::rejected(why))
    }

    fn explained(f: Failure) -> String {
        f.explain().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn a_broken_download_explains_best() {
        let f = Failure {
            fetch: Some(Error::fetch("s3://b/k", "connection reset")),
            sink: rejected("disk full"),
            read: rejected("line 9: unterminated quote"),
        };
        assert!(matches!(f.explain(), Some(Error::Fetch { .. })));
    }

    #[test]
    fn the_sinks_error_outranks_the_readers() {
        let f = Failure {
            fetch: None,
            sink: rejected("disk full"),
            read: rejected("the writer stopped"),
        };
        assert_eq!(explained(f), "disk full");
    }

    #[test]
    fn the_readers_error_stands_alone() {
        let f = Failure {
            read: rejected("line 9: unterminated quote"),
            ..Failure::default()
        };
        assert_eq!(explained(f), "line 9: unterminated quote");
        assert!(Failure::default().explain().is_none());
    }

    #[test]
    fn member_errors_name_the_member_once() {
        let e = member_error(
            "bills.zip#a.csv",
            "bills.zip",
            Error::rejected("line 2: bad"),
        );
        assert_eq!(e.to_string(), "a.csv: line 2: bad");
        let again = member_error("bills.zip#a.csv", "bills.zip", e);
        assert_eq!(again.to_string(), "a.csv: line 2: bad");
        let plain = member_error("b.csv", "b.csv", Error::rejected("line 2: bad"));
        assert_eq!(plain.to_string(), "line 2: bad");
    }

    #[test]
    fn headers_are_split_as_csv() {
        assert_eq!(
            header_fields(b"\xEF\xBB\xBFBilledCost,\"Tags, all\" , x_A\r\n", b','),
            vec!["BilledCost", "Tags, all", "x_A"]
        );
    }

    #[test]
    fn fetch_failures_stay_retryable_and_others_are_final() {
        assert!(matches!(
            fetch_failure(Error::fetch("s3://b/k", "reset")),
            Error::Fetch { .. }
        ));
        assert!(matches!(
            fetch_failure(Error::Config("x".into())),
            Error::Rejected(_)
        ));
    }
}
