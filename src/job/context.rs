//! What a run works with: its options ([`RunOptions`]) and, once opened, its [`Context`] (the
//! pipeline, profile, source and its listing, lake and ledger) shared by the jobs that load
//! snapshots.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::conformance::rules::Profile;
use crate::ingest::decode::{parse_offset, DecodeOptions};
use crate::ingest::unpack;
use crate::ingest::write::WriteOptions;
use crate::state::classify::Pipeline;
use crate::state::ledger::Ledger;
use crate::state::lock::LockOptions;
use crate::state::plan::PlanOptions;
use crate::store::lake::{self, Lake};
use crate::store::s3::{S3Context, S3Options};
use crate::store::source::{self, ObjectInfo, Source};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub source: String,
    pub dest: String,
    pub pipeline: Option<PathBuf>,
    pub s3: S3Options,
    pub write: WriteOptions,
    pub batch_rows: usize,
    pub plan: PlanOptions,
    /// Objects loaded at the same time (each has its own bounded pipeline).
    pub jobs: usize,
    pub lock: LockOptions,
    /// Attempts at reading one object when its download breaks off (connection reset,
    /// truncated body); requests that fail outright are retried by the S3 client itself.
    pub fetch_attempts: u32,
    /// Decompression bounds (zip-bomb guards).
    pub limits: unpack::Limits,
    /// Conformance profile instead of the pipeline's (`strict`, `tencent`, ...).
    pub profile: Option<String>,
    /// Gatekeeping (`--quarantine-on error`): rows with error findings are held out.
    pub quarantine_on_error: bool,
    /// List every skipped object in the JSON report (`--report-skipped`, `-v`), not only their
    /// counts and first examples by reason.
    pub report_skipped: bool,
}

impl RunOptions {
    pub fn new(source: impl Into<String>, dest: impl Into<String>) -> RunOptions {
        RunOptions {
            source: source.into(),
            dest: dest.into(),
            pipeline: None,
            s3: S3Options::default(),
            write: WriteOptions::default(),
            batch_rows: DecodeOptions::default().batch_rows,
            plan: PlanOptions::default(),
            jobs: 1,
            lock: LockOptions::default(),
            fetch_attempts: 4,
            limits: unpack::Limits::default(),
            profile: None,
            quarantine_on_error: false,
            report_skipped: false,
        }
    }
}

pub(crate) struct Context {
    pub(crate) pipeline: Pipeline,
    pub(crate) profile: Profile,
    pub(crate) source: Arc<Source>,
    /// The source's listing, taken before the lake is touched: a missing bucket, bad
    /// credentials or an unreachable endpoint fail the run before anything is written.
    pub(crate) listing: Vec<ObjectInfo>,
    pub(crate) lake: Arc<Lake>,
    /// Shared by the jobs; held only to read an entry or to record and save one.
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) decode: DecodeOptions,
    pub(crate) period_offset_secs: i64,
    /// Every FOCUS column of any known version (see `validate::CheckContext`).
    pub(crate) column_versions: Arc<std::collections::HashMap<String, String>>,
}

pub(crate) fn open(opts: &RunOptions, writable: bool) -> Result<Context> {
    let pipeline = Pipeline::load(opts.pipeline.as_deref())?;
    // One S3 client for source and destination, made only if either needs it.
    let shared: Mutex<Option<S3Context>> = Mutex::new(None);
    let s3 = || -> Result<S3Context> {
        let mut guard = shared
            .lock()
            .map_err(|_| Error::Internal("the S3 client lock is poisoned".into()))?;
        if let Some(ctx) = guard.as_ref() {
            return Ok(ctx.clone());
        }
        let ctx = S3Context::connect(&opts.s3)?;
        *guard = Some(ctx.clone());
        Ok(ctx)
    };
    let source: Arc<Source> = Arc::from(source::open(&opts.source, s3)?);
    let listing = source.list()?;
    let mut lake = lake::open(&opts.dest, writable, s3)?;
    if let Some(shard) = opts.plan.shard {
        lake = lake.for_shard(&shard.label());
    }
    let lake: Arc<Lake> = Arc::new(lake);
    // A run (writable) reads the ledger once it holds the lake's lock; reading it here too
    // would cost a second O(units) load.
    let ledger = Mutex::new(if writable {
        Ledger::default()
    } else {
        Ledger::load(lake.as_ref())?
    });
    let decode = decode_options(&pipeline, opts.batch_rows)?;
    let period_offset_secs = parse_offset(&pipeline.partition.period_utc_offset)?;
    let profile_name = opts.profile.as_deref().unwrap_or(&pipeline.profile);
    let mut profile = Profile::load(profile_name, pipeline.schema_dir.as_deref())?;
    if opts.quarantine_on_error {
        profile.quarantine_on = Some(crate::conformance::rules::QuarantineOn::Error);
    }
    let column_versions = Arc::new(crate::conformance::schema::column_versions(
        &crate::conformance::schema::focus_versions(pipeline.schema_dir.as_deref())?,
    ));
    Ok(Context {
        column_versions,
        profile,
        pipeline,
        source,
        listing,
        lake,
        ledger,
        decode,
        period_offset_secs,
    })
}

pub(crate) fn lock_ledger(ledger: &Mutex<Ledger>) -> Result<std::sync::MutexGuard<'_, Ledger>> {
    ledger
        .lock()
        .map_err(|_| Error::Internal("the ledger lock is poisoned by a panicked job".into()))
}

/// How the pipeline's files are read: its CSV options as decoder options.
pub(crate) fn decode_options(pipeline: &Pipeline, batch_rows: usize) -> Result<DecodeOptions> {
    let delimiter =
        *pipeline.csv.delimiter.as_bytes().first().ok_or_else(|| {
            Error::Config(format!("{}: [csv] delimiter is empty", pipeline.origin))
        })?;
    Ok(DecodeOptions {
        delimiter,
        null_values: pipeline
            .csv
            .null_values
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        naive_offset_secs: parse_offset(&pipeline.csv.naive_time_offset)?,
        batch_rows: batch_rows.max(1),
        max_record_bytes: pipeline.csv.max_record_bytes,
    })
}
