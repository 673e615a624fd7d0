//! The `billpipe` command line. Parsing arguments, showing progress and printing is all that
//! happens here; the work is in the library.
//!
//! Every argument is checked before any work starts (`check`), so a mistake costs nothing and
//! exits 2 like clap's own parse errors: a run that would skip every month, write Parquet that
//! cannot be written, or list its own lake as bills is a usage error, not a result. Output to a
//! closed stdout (`billpipe totals | head -1`) ends quietly: the reader has gone, the work is
//! done, so the exit code stays the command's own (see `out`).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use billpipe::generate::{self, GenerateOptions};
use billpipe::ingest::write::WriteOptions;
use billpipe::job::report::{RunReport, EXIT_FAILED, EXIT_LOCKED};
use billpipe::job::run::{self, Progress, RunOptions};
use billpipe::job::state::{self as lake_state, ResetFilter};
use billpipe::state::lock::LockOptions;
use billpipe::state::plan::PlanOptions;
use billpipe::store::s3::S3Options;
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "billpipe",
    version,
    about = "Cloud bill files in a bucket -> typed, snapshot-correct, partitioned Parquet lake"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load new and changed bill files from the source into the lake.
    Run(RunArgs),
    /// Print what `run` would do with every object, and why, changing nothing. Takes `run`'s
    /// command line as it is (flags that only matter when loading are accepted and ignored).
    Plan(RunArgs),
    /// Show what the lake holds per (account, month); `state reset` makes the next run reload.
    State(StateArgs),
    /// Sum BilledCost and EffectiveCost per month, account and currency from the lake's files.
    Totals(TotalsArgs),
    /// Check FOCUS files against the conformance rules without loading anything.
    Validate(ValidateArgs),
    /// Write a deterministic, realistic Tencent FOCUS CSV (tests, examples, benchmarks).
    Generate(GenerateArgs),
    /// Print a shell completion script, e.g. `billpipe completions bash > /etc/bash_completion.d/billpipe`.
    Completions {
        /// The shell to complete in
        shell: clap_complete::Shell,
    },
    /// Print the manual page billpipe(1), or billpipe-COMMAND(1), generated from the same
    /// definitions as --help.
    Man {
        /// A command (run, plan, state, totals, validate, generate) for its own page
        command: Option<String>,
    },
}

#[derive(Args)]
struct ValidateArgs {
    /// Local files or s3://bucket/key objects (plain, gzip, zstd or zip)
    #[arg(required = true)]
    files: Vec<String>,
    /// FOCUS version to check against (default: detected from the columns present)
    #[arg(long)]
    focus_version: Option<String>,
    /// Conformance profile: strict (the spec as written), tencent, off, or a profile file
    /// (.toml). Default: the pipeline's profile for a file one of its families names (read as
    /// `run` reads it), strict for any other file
    #[arg(long)]
    profile: Option<String>,
    /// Pipeline file whose families, CSV options and schemas a file is read with (default: the
    /// bundled Tencent pipeline)
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Print JSON instead of tables
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: S3Args,
}

#[derive(Args, Clone)]
struct S3Args {
    /// S3 endpoint, e.g. https://cos.ap-guangzhou.myqcloud.com (else AWS_ENDPOINT_URL)
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// S3 signing region, e.g. ap-guangzhou (else AWS_REGION / profile)
    #[arg(long, global = true)]
    region: Option<String>,
    /// Path-style addressing (Garage, MinIO); the default is virtual-hosted (COS, AWS)
    #[arg(long, global = true)]
    path_style: bool,
    /// List with ListObjectsV2 instead of v1 markers (COS documents only v1)
    #[arg(long, global = true)]
    list_v2: bool,
    /// S3 lake only: upload Parquet files above this size in parts of this size, in MiB (at
    /// least 5)
    #[arg(long, default_value_t = 16, global = true, value_parser = clap::value_parser!(u64).range(5..))]
    part_mb: u64,
}

impl S3Args {
    fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            list_v2: self.list_v2,
            part_bytes: self.part_mb << 20,
        }
    }
}

#[derive(Args, Clone)]
struct LockArgs {
    /// Wait for another run's lock instead of exiting
    #[arg(long)]
    wait: bool,
    /// Seconds without a heartbeat after which a lock is stale and taken over
    #[arg(long, default_value_t = 120)]
    lock_timeout: u64,
}

impl LockArgs {
    fn options(&self) -> LockOptions {
        LockOptions {
            wait: self.wait,
            stale_after: Duration::from_secs(self.lock_timeout),
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// Where the bills are: a local folder or s3://bucket[/prefix]
    #[arg(long)]
    source: String,
    /// Where the lake is: a local folder or s3://bucket[/prefix]
    #[arg(long)]
    dest: String,
    /// Pipeline file (default: pipelines/tencent.toml, else the built-in copy)
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Write the run report as JSON to this file
    #[arg(long)]
    report: Option<PathBuf>,
    /// Only billing months from this one (YYYY-MM); others are skipped as out of range
    #[arg(long, value_parser = parse_month)]
    from: Option<String>,
    /// Only billing months up to this one (YYYY-MM)
    #[arg(long, value_parser = parse_month)]
    to: Option<String>,
    /// Reload every unit's best snapshot even if unchanged (same result as a fresh load)
    #[arg(long)]
    force: bool,
    /// Objects loaded at the same time (memory grows with it: about 240 MB each)
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Conformance profile instead of the pipeline's (tencent for the default pipeline):
    /// strict, tencent, off, strict-gate, or a .toml file
    #[arg(long)]
    profile: Option<String>,
    /// Gatekeeping: hold out of the lake every row with a finding of this severity (default:
    /// none; findings are counted and the row is loaded, so the lake equals the bill)
    #[arg(long, value_parser = ["error"])]
    quarantine_on: Option<String>,
    /// zstd compression level of the Parquet files, 1 (fastest) to 22 (smallest)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
    zstd_level: i32,
    #[command(flatten)]
    lock: LockArgs,
    #[command(flatten)]
    s3: S3Args,
    /// Also list skipped objects, and log each object to stderr
    #[arg(short, long)]
    verbose: bool,
    /// Print nothing but errors (the exit code and --report still tell everything)
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
}

#[derive(Args)]
struct StateArgs {
    #[command(subcommand)]
    action: Option<StateAction>,
    /// The lake: a local folder or s3://bucket[/prefix]
    #[arg(long, global = true)]
    dest: Option<String>,
    /// Print JSON
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    s3: S3Args,
}

#[derive(Subcommand)]
enum StateAction {
    /// Make the next run reload the matching (account, month) units; says which first.
    Reset {
        /// Only units of this billing account
        #[arg(long)]
        account: Option<String>,
        /// Only units of this billing month (YYYY-MM)
        #[arg(long, value_parser = parse_month)]
        month: Option<String>,
        /// Every unit of the lake (needed when neither --account nor --month is given)
        #[arg(long, conflicts_with_all = ["account", "month"])]
        all: bool,
        #[command(flatten)]
        lock: LockArgs,
    },
}

#[derive(Args)]
struct GenerateArgs {
    /// Billing account id
    #[arg(long, default_value = "200020002001")]
    account: String,
    /// Billing month, YYYY-MM
    #[arg(long, value_parser = parse_month)]
    month: String,
    /// Daily snapshot: include days 1..=DAY (delivered on DAY+1). Without it: the monthly file.
    #[arg(long)]
    through_day: Option<u32>,
    /// Rows per day of the month the file covers
    #[arg(long, default_value_t = 100)]
    rows_per_day: u64,
    /// Grow rows per day until the file is about this many megabytes (overrides --rows-per-day)
    #[arg(long)]
    target_mb: Option<u64>,
    /// Random seed: the same seed and options give the same file, byte for byte
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Make these rows (0-based) unparsable, comma-separated
    #[arg(long, value_delimiter = ',')]
    bad_rows: Vec<u64>,
    /// Add 1e-8 to every BilledCost (a restated, re-delivered bill)
    #[arg(long)]
    restated: bool,
    /// Shape it like real Tencent FOCUS files: credits (negative), Tax rows and adjustments
    /// with empty ContractedCost, ListCost, unit prices, quantities and ServiceName
    #[arg(long)]
    gaps: bool,
    /// Output folder; the file gets Tencent's object name
    #[arg(long)]
    out_dir: PathBuf,
    /// `focus` (Tencent FOCUS CSV) or `detail` (Tencent's native detail bill, as a plain CSV
    /// named `<uin>-<period>-detail.csv`; zip it to make a bill_details object)
    #[arg(long, default_value = "focus", value_parser = ["focus", "detail"])]
    format: String,
    /// With --format detail: Chinese headers and values (a zh_cn file, with a BOM)
    #[arg(long)]
    zh: bool,
    /// A reseller's consolidated bill (--account is the reseller): this many customers' detail
    /// bills interleaved in one zip, --rows-per-day rows per customer; prints each customer's
    /// totals
    #[arg(long, conflicts_with = "target_mb")]
    customers: Option<u32>,
}

fn parse_month(s: &str) -> std::result::Result<String, String> {
    let month: billpipe::values::Month = s.parse().map_err(|e| format!("{e}"))?;
    Ok(month.to_string())
}

/// Flags a command accepts but that do nothing there, hidden from its help: `plan` takes
/// `run`'s whole command line (swap the verb to preview a run), and the read-only commands
/// share the S3 flags of `run`, whose `--part-mb` only sizes uploads.
const HIDDEN: &[(&str, &[&str])] = &[
    (
        "plan",
        &[
            "zstd_level",
            "jobs",
            "profile",
            "quarantine_on",
            "wait",
            "lock_timeout",
            "part_mb",
        ],
    ),
    ("state", &["part_mb"]),
    ("totals", &["part_mb"]),
    ("validate", &["part_mb"]),
];

/// The command line's definition, with `HIDDEN` applied.
fn cli_command() -> clap::Command {
    HIDDEN.iter().fold(Cli::command(), |cmd, (sub, ids)| {
        cmd.mut_subcommand(*sub, |c| {
            ids.iter().fold(c, |c, id| c.mut_arg(*id, |a| a.hide(true)))
        })
    })
}

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&cli_command().get_matches()).unwrap_or_else(|e| e.exit());
    let default_level = match &cli.command {
        Command::Run(a) if a.verbose => "info",
        Command::Run(a) if a.quiet => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BILLPIPE_LOG").unwrap_or_else(|_| {
                // The AWS SDK's own warnings (each credential provider that found nothing,
                // multi-KB dumps) only at -v: billpipe says what is missing in one line.
                let filter = if default_level == "info" {
                    default_level.to_string()
                } else {
                    format!("{default_level},aws_config=error,aws_smithy_runtime=error")
                };
                tracing_subscriber::EnvFilter::new(filter)
            }),
        )
        .init();
    if let Err(e) = check(&cli.command) {
        e.exit();
    }
    let code = match dispatch(cli.command) {
        Ok(code) if stdout_failed() => {
            // Only a write error other than a closed pipe lands here (a full disk).
            eprintln!("billpipe: error: cannot write to stdout");
            code.max(EXIT_FAILED)
        }
        Ok(code) => code,
        Err(e) => {
            eprintln!("billpipe: error: {}", message(&e));
            let locked = e
                .chain()
                .any(|c| matches!(c.downcast_ref(), Some(billpipe::Error::Locked(_))));
            if locked {
                EXIT_LOCKED
            } else {
                EXIT_FAILED
            }
        }
    };
    ExitCode::from(code as u8)
}

/// The error and its causes, each said once: a library error that already names its cause
/// (`nope.csv: No such file or directory (os error 2)`) is not followed by the cause again.
fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static STDOUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes to stdout. When the reader has gone (`| head -1`: EPIPE) nothing more is written and
/// the command ends with its own exit code — a `run` whose summary nobody reads still loaded
/// the lake, and 3 must still say money is missing. Rust ignores SIGPIPE, so without this
/// `println!` would panic.
fn out(args: std::fmt::Arguments) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, Ordering::Relaxed);
        }
    }
}

fn stdout_failed() -> bool {
    use std::io::Write;
    let flushed = std::io::stdout().lock().flush();
    if let Err(e) = flushed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    STDOUT_FAILED.load(std::sync::atomic::Ordering::Relaxed)
}

/// `println!`/`print!` through `out`.
macro_rules! outln {
    () => { out(format_args!("\n")) };
    ($($t:tt)*) => { out(format_args!("{}\n", format_args!($($t)*))) };
}
macro_rules! outp {
    ($($t:tt)*) => { out(format_args!($($t)*)) };
}

/// A usage error of the (sub)command at `path`, printed as clap prints its own (with that
/// command's usage line) and exiting 2.
fn usage_error(path: &[&str], message: impl std::fmt::Display) -> clap::Error {
    fn find(cmd: &mut clap::Command, path: &[&str], message: String) -> clap::Error {
        match path.split_first() {
            Some((first, rest)) => match cmd.find_subcommand_mut(first) {
                Some(sub) => find(sub, rest, message),
                None => cmd.error(ErrorKind::InvalidValue, message),
            },
            None => cmd.error(ErrorKind::InvalidValue, message),
        }
    }
    let mut cmd = cli_command();
    cmd.build();
    find(&mut cmd, path, message.to_string())
}

/// Checks what clap cannot check alone, before any work (see the module docs).
fn check(command: &Command) -> std::result::Result<(), clap::Error> {
    match command {
        Command::Run(a) => check_job(a, "run"),
        Command::Plan(a) => check_job(a, "plan"),
        Command::State(a) => {
            let path: &[&str] = match a.action {
                Some(StateAction::Reset { .. }) => &["state", "reset"],
                None => &["state"],
            };
            if a.dest.is_none() {
                return Err(usage_error(
                    path,
                    "--dest is required: the lake (a local folder or s3://bucket[/prefix])",
                ));
            }
            if let Some(StateAction::Reset {
                account: None,
                month: None,
                all: false,
                ..
            }) = &a.action
            {
                return Err(usage_error(
                    path,
                    "state reset needs --account, --month (or both), or --all to reset every unit of the lake",
                ));
            }
            Ok(())
        }
        Command::Validate(a) => {
            // The schemas folder, looked up as every command does (see `config`).
            let schema_dir = billpipe::config::schema_dir(a.pipeline.as_deref());
            let schema_dir = schema_dir.as_deref();
            if let Some(profile) = &a.profile {
                check_profile(profile, schema_dir).map_err(|m| usage_error(&["validate"], m))?;
            }
            if let Some(v) = &a.focus_version {
                // Without the schemas the check is left to `validate_file`, which says so.
                if let Ok(known) = billpipe::conformance::schema::focus_versions(schema_dir) {
                    if !known.iter().any(|s| &s.version == v) {
                        let names: Vec<&str> = known.iter().map(|s| s.version.as_str()).collect();
                        return Err(usage_error(
                            &["validate"],
                            format!("unknown --focus-version {v:?}; known: {}", names.join(", ")),
                        ));
                    }
                }
            }
            Ok(())
        }
        Command::Totals(_)
        | Command::Generate(_)
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(()),
    }
}

fn check_job(a: &RunArgs, name: &str) -> std::result::Result<(), clap::Error> {
    let path = [name];
    if let (Some(from), Some(to)) = (&a.from, &a.to) {
        if from > to {
            return Err(usage_error(
                &path,
                format!("--from {from} is after --to {to}: no billing month is in range"),
            ));
        }
    }
    if let Some(profile) = &a.profile {
        // The pipeline's schema folder holds its profiles; a pipeline that does not load is
        // reported by the run itself (exit 1, configuration).
        if let Ok(pipeline) = billpipe::state::classify::Pipeline::load(a.pipeline.as_deref()) {
            check_profile(profile, pipeline.schema_dir.as_deref())
                .map_err(|m| usage_error(&path, m))?;
        }
    }
    if billpipe::store::s3::S3Location::parse(&a.source).is_none()
        && std::path::Path::new(&a.source).is_file()
    {
        return Err(usage_error(
            &path,
            format!(
                "--source {} is a file; --source takes a folder or s3://bucket[/prefix] holding bill files (to check one file: billpipe validate {})",
                a.source, a.source
            ),
        ));
    }
    if let Some(why) = dest_inside_source(&a.source, &a.dest) {
        return Err(usage_error(&path, why));
    }
    Ok(())
}

/// A lake inside its own source would list its Parquet files, ledger and quarantine as
/// objects of the source on every run.
fn dest_inside_source(source: &str, dest: &str) -> Option<String> {
    let inside = match (
        billpipe::store::s3::S3Location::parse(source),
        billpipe::store::s3::S3Location::parse(dest),
    ) {
        (Some(s), Some(d)) => s.bucket == d.bucket && d.prefix.starts_with(&s.prefix),
        (None, None) => {
            let (s, d) = (resolve(source.as_ref()), resolve(dest.as_ref()));
            d.starts_with(&s)
        }
        _ => false,
    };
    inside.then(|| {
        format!(
            "--dest {dest} is {} --source {source}: the lake's own files would be listed as objects of the source on every run; put the lake elsewhere",
            if resolve(dest.as_ref()) == resolve(source.as_ref()) { "the same place as" } else { "inside" }
        )
    })
}

/// An absolute path with symbolic links and `..` resolved as far as it exists (the lake's
/// folder may not exist yet).
fn resolve(p: &std::path::Path) -> PathBuf {
    if let Some(loc) = billpipe::store::s3::S3Location::parse(&p.to_string_lossy()) {
        return PathBuf::from(loc.uri());
    }
    let mut abs = PathBuf::new();
    for part in std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .components()
    {
        match part {
            std::path::Component::ParentDir => {
                abs.pop();
            }
            std::path::Component::CurDir => {}
            other => abs.push(other),
        }
    }
    let mut tail = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(mut real) = cur.canonicalize() {
            for name in tail.iter().rev() {
                real.push(name);
            }
            return real;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// A profile name must name a profile (`schemas/profile-<name>.toml` or a built-in one), a
/// `.toml` argument must be a readable profile file.
fn check_profile(name: &str, dir: Option<&std::path::Path>) -> std::result::Result<(), String> {
    use billpipe::conformance::rules::Profile;
    let Err(e) = Profile::load(name, dir) else {
        return Ok(());
    };
    if name.ends_with(".toml") || !e.to_string().contains("unknown profile") {
        return Err(format!("--profile {name}: {e}"));
    }
    let mut known: Vec<String> = ["strict", "strict-gate", "tencent", "tencent-l2", "off"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = file
                .strip_prefix("profile-")
                .and_then(|f| f.strip_suffix(".toml"))
            {
                if !known.iter().any(|k| k == n) {
                    known.push(n.to_string());
                }
            }
        }
    }
    known.retain(|k| Profile::load(k, dir).is_ok());
    let hint = known
        .iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default();
    Err(format!(
        "unknown --profile {name:?}{hint}; known: {}, or a profile file ending in .toml",
        known.join(", ")
    ))
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn dispatch(command: Command) -> Result<i32> {
    match command {
        Command::Run(args) => job(args, false),
        Command::Plan(args) => job(args, true),
        Command::State(args) => state(args),
        Command::Totals(args) => totals(args),
        Command::Validate(args) => validate(args),
        Command::Generate(args) => generate(args),
        Command::Completions { shell } => {
            // Rendered whole, then written through `out`, so `| head` ends quietly.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cli_command(), "billpipe", &mut script);
            outp!("{}", String::from_utf8_lossy(&script));
            Ok(0)
        }
        Command::Man { command } => {
            let mut cmd = cli_command();
            cmd.build();
            let cmd = match &command {
                None => cmd,
                Some(name) => match cmd.find_subcommand(name) {
                    Some(sub) => sub.clone().version(env!("CARGO_PKG_VERSION")),
                    None => usage_error(&["man"], format!("no command {name:?}")).exit(),
                },
            };
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("rendering the manual page")?;
            outp!("{}", String::from_utf8_lossy(&page));
            Ok(0)
        }
    }
}

fn job(args: RunArgs, plan_only: bool) -> Result<i32> {
    let opts = RunOptions {
        pipeline: args.pipeline.clone(),
        s3: args.s3.options(),
        write: WriteOptions {
            zstd_level: args.zstd_level,
            ..WriteOptions::default()
        },
        plan: PlanOptions {
            from: args.from.clone(),
            to: args.to.clone(),
            force: args.force,
            ..PlanOptions::default()
        },
        jobs: args.jobs.max(1),
        profile: args.profile.clone(),
        quarantine_on_error: args.quarantine_on.is_some(),
        lock: args.lock.options(),
        ..RunOptions::new(&args.source, &args.dest)
    };
    let what = format!(
        "{} {} -> {}",
        if plan_only { "plan" } else { "run" },
        args.source,
        args.dest
    );
    let result = if plan_only {
        run::plan_only(&opts)
    } else if args.quiet {
        run::run(&opts)
    } else {
        let mut display = ProgressDisplay::new();
        let r = run::run_with_progress(&opts, &mut |p| display.update(p));
        display.finish();
        r
    };
    let report: RunReport = match result {
        Ok(report) => report,
        Err(e) => {
            // A scheduler reads the report even when the run never started (bad credentials,
            // a missing source, a held lock): it carries the error.
            if let Some(path) = &args.report {
                let mut failed = run::failed_report(
                    if plan_only { "plan" } else { "run" },
                    &opts,
                    &format!("{what}: {e}"),
                );
                failed.exit_code = Some(if matches!(e, billpipe::Error::Locked(_)) {
                    EXIT_LOCKED
                } else {
                    EXIT_FAILED
                });
                let json = serde_json::to_vec_pretty(&failed)?;
                std::fs::write(path, json)
                    .with_context(|| format!("writing report {}", path.display()))?;
            }
            return Err(anyhow::Error::new(e).context(what));
        }
    };
    log_decisions(&report);
    if !args.quiet {
        outp!("{}", report.human(args.verbose));
    } else if let Some(e) = &report.error {
        eprintln!("billpipe: {what}: {e}");
    }
    if let Some(path) = &args.report {
        let report = RunReport {
            exit_code: Some(report.exit_code()),
            ..report.clone()
        };
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing report {}", path.display()))?;
    }
    Ok(report.exit_code())
}

/// At `BILLPIPE_LOG=debug`: the decision about every object, with its reason, and where a
/// loaded object's time went (the report's per-stage seconds), one line each.
fn log_decisions(report: &RunReport) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for o in &report.objects {
        let outcome = serde_json::to_value(o.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        tracing::debug!(key = %o.key, "decision: {outcome} - {}", o.reason);
        if o.bytes_read > 0 {
            tracing::debug!(
                key = %o.key,
                "stages: fetch {:.3} s, decode {:.3} s, write {:.3} s, commit {:.3} s; {} bytes read, {} written, {:.3} s in all",
                o.stages.fetch,
                o.stages.decode,
                o.stages.write,
                o.stages.commit,
                o.bytes_read,
                o.bytes_written,
                o.seconds
            );
        }
    }
}

/// Progress bars on a terminal; on anything else (cron, Kubernetes logs) a plain line per
/// finished object, at most one every 10 seconds plus the last.
struct ProgressDisplay {
    bar: Option<ProgressBar>,
    total_objects: u64,
    total_bytes: u64,
    done_objects: u64,
    done_bytes: u64,
    started: Instant,
    last_line: Option<Instant>,
}

impl ProgressDisplay {
    fn new() -> Self {
        ProgressDisplay {
            bar: None,
            total_objects: 0,
            total_bytes: 0,
            done_objects: 0,
            done_bytes: 0,
            started: Instant::now(),
            last_line: None,
        }
    }

    fn update(&mut self, p: Progress) {
        match p {
            Progress::Planned { objects, bytes } => {
                self.total_objects = objects;
                self.total_bytes = bytes;
                if std::io::stderr().is_terminal() && objects > 0 {
                    let bar = ProgressBar::new(bytes);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} | {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(200));
                    self.bar = Some(bar);
                }
            }
            Progress::Done(o) => {
                self.done_objects += 1;
                self.done_bytes += o.size;
                let msg = format!(
                    "{}/{} objects, last: {}",
                    self.done_objects, self.total_objects, o.key
                );
                if let Some(bar) = &self.bar {
                    bar.inc(o.size);
                    bar.set_message(msg);
                    return;
                }
                let due = self
                    .last_line
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                if due || self.done_objects == self.total_objects {
                    let secs = self.started.elapsed().as_secs_f64().max(1e-3);
                    eprintln!(
                        "billpipe: {}/{} objects, {:.1}/{:.1} MB, {:.1} MB/s",
                        self.done_objects,
                        self.total_objects,
                        self.done_bytes as f64 / 1e6,
                        self.total_bytes as f64 / 1e6,
                        self.done_bytes as f64 / 1e6 / secs
                    );
                    self.last_line = Some(Instant::now());
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn state(args: StateArgs) -> Result<i32> {
    let dest = args
        .dest
        .clone()
        .context("--dest is required: the lake whose state to show")?;
    let s3 = args.s3.options();
    // An empty table for a mistyped path would read as "nothing loaded yet".
    let lake = billpipe::store::lake::open(&dest, false, || {
        billpipe::store::s3::S3Context::connect(&s3)
    })
    .with_context(|| format!("opening the lake {dest}"))?;
    if lake.get(billpipe::state::ledger::LEDGER_PATH)?.is_none() {
        anyhow::bail!(
            "no lake at {dest}: it has no {} (a lake is what `billpipe run --dest {dest}` writes)",
            billpipe::state::ledger::LEDGER_PATH
        );
    }
    drop(lake);
    match args.action {
        None => {
            let ledger = lake_state::state(&dest, &s3)
                .with_context(|| format!("reading the ledger of {dest}"))?;
            if args.json {
                outln!("{}", serde_json::to_string_pretty(&ledger.units)?);
                return Ok(0);
            }
            outln!(
                "{:<14} {:<8} {:<22} {:>9} {:>6} {:>20}  source (etag)",
                "account",
                "month",
                "loaded at",
                "rows",
                "held",
                "BilledCost"
            );
            for e in ledger.units.values() {
                outln!(
                    "{:<14} {:<8} {:<22} {:>9} {:>6} {:>20}  {} ({}){}",
                    e.unit.account,
                    e.unit.month,
                    e.loaded_at,
                    e.rows_loaded,
                    e.rows_quarantined,
                    e.billed_cost,
                    e.source.key,
                    e.source.etag,
                    if e.reset { "  [reload pending]" } else { "" }
                );
            }
            outln!("{} snapshot units", ledger.units.len());
            Ok(0)
        }
        Some(StateAction::Reset {
            account,
            month,
            all: _,
            lock,
        }) => {
            let filter = ResetFilter { account, month };
            let ledger = lake_state::state(&dest, &s3)?;
            let chosen = lake_state::reset_candidates(&ledger, &filter);
            if chosen.is_empty() {
                anyhow::bail!(
                    "nothing to reset: no loaded unit of {dest} matches{}{} (`billpipe state --dest {dest}` lists them)",
                    filter.account.as_ref().map(|a| format!(" --account {a}")).unwrap_or_default(),
                    filter.month.as_ref().map(|m| format!(" --month {m}")).unwrap_or_default(),
                );
            }
            outln!(
                "resetting {} unit(s); the next run reloads them:",
                chosen.len()
            );
            for e in &chosen {
                outln!("  {}  (loaded from {})", e.unit, e.source.key);
            }
            let done = lake_state::state_reset(&dest, &s3, &filter, &lock.options())?;
            if args.json {
                outln!("{}", serde_json::to_string_pretty(&done)?);
            }
            outln!("reset {} unit(s)", done.len());
            Ok(0)
        }
    }
}

fn validate(args: ValidateArgs) -> Result<i32> {
    // One lookup rule for every command: schemas, mappings and profiles next to the pipeline.
    let pipeline = billpipe::state::classify::Pipeline::load(args.pipeline.as_deref())?;
    let schema_dir = pipeline.schema_dir.as_deref();
    if let Some(profile) = &args.profile {
        billpipe::conformance::rules::Profile::load(profile, schema_dir)?;
    }
    if let Some(v) = &args.focus_version {
        let known = billpipe::conformance::schema::focus_versions(schema_dir)?;
        if !known.iter().any(|s| &s.version == v) {
            let names: Vec<&str> = known.iter().map(|s| s.version.as_str()).collect();
            anyhow::bail!("unknown FOCUS version {v:?}; known: {}", names.join(", "));
        }
    }
    let opts = billpipe::job::verdict::ValidateOptions {
        s3: args.s3.options(),
        focus_version: args.focus_version.clone(),
        profile: args.profile.clone(),
    };
    let mut verdicts = Vec::new();
    for file in &args.files {
        let v = billpipe::job::verdict::validate_file(file, &pipeline, &opts)
            .with_context(|| format!("validating {file}"))?;
        verdicts.push(v);
    }
    let passed = verdicts.iter().all(|v| v.passed());
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"passed": passed, "files": verdicts})
            )?
        );
    } else {
        for v in &verdicts {
            let month = v
                .name_month
                .as_deref()
                .map(|m| format!(", billing month {m} by name"))
                .unwrap_or_default();
            outln!(
                "{} (FOCUS {}, {}, profile {}{month}): {} rows, {} with errors",
                v.file,
                v.focus_version,
                v.version_from,
                v.profile,
                v.rows,
                v.rows_with_errors
            );
            if let Some(e) = &v.file_error {
                outln!("  FILE ERROR: {e}");
            }
            if !v.rules.is_empty() {
                outln!(
                    "  {:<44} {:<8} {:>9}  first lines",
                    "rule",
                    "severity",
                    "count"
                );
            }
            let (mut errors, mut warnings) = (0u64, 0u64);
            for (id, r) in &v.rules {
                let sev = match r.severity {
                    Some(billpipe::conformance::rules::Severity::Error) => {
                        errors += r.count;
                        "error"
                    }
                    Some(billpipe::conformance::rules::Severity::Quarantine) => {
                        errors += r.count;
                        "quarantine"
                    }
                    _ => {
                        warnings += r.count;
                        "warning"
                    }
                };
                outln!(
                    "  {id:<44} {sev:<8} {:>9}  {}",
                    r.count,
                    r.examples.join("; ")
                );
                outln!("  {:<44} {}", "", r.message);
            }
            outln!(
                "  verdict: {} ({errors} error findings, {warnings} warnings)",
                if v.passed() { "PASS" } else { "FAIL" }
            );
        }
    }
    Ok(if passed {
        0
    } else {
        billpipe::job::report::EXIT_REJECTIONS
    })
}

fn generate(args: GenerateArgs) -> Result<i32> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let mut opts = GenerateOptions {
        account: args.account.clone(),
        month: args.month.clone(),
        through_day: args.through_day,
        rows_per_day: args.rows_per_day,
        seed: args.seed,
        bad_rows: args.bad_rows.clone(),
        restated: args.restated,
        gaps: args.gaps,
    };
    if let Some(mb) = args.target_mb {
        // Measure one day's worth of rows, then scale to the days the file holds.
        let probe = GenerateOptions {
            through_day: Some(1),
            rows_per_day: 1000,
            ..opts.clone()
        };
        let stats = generate::write_focus_csv(&probe, std::io::sink())?;
        let bytes_per_row = (stats.bytes / stats.rows.max(1)).max(1);
        let days = args.through_day.unwrap_or(30) as u64;
        opts.rows_per_day = (mb * 1_000_000 / bytes_per_row / days.max(1)).max(1);
    }
    if let Some(count) = args.customers {
        let name = generate::consolidated_object_name(&args.account, &args.month, args.seed)?;
        let path = args.out_dir.join(name);
        let stats = generate::write_consolidated_zip(&opts, &generate::customer_ids(count), &path)?;
        outln!(
            "{}: {} rows, {} CSV bytes",
            path.display(),
            stats.rows,
            stats.bytes
        );
        for (c, s) in &stats.customers {
            let sum = generate::format_e8(s.billed_cost_e8);
            outln!("customer {c}: {} rows, BilledCost sum {sum}", s.rows);
        }
        return Ok(0);
    }
    if args.format == "detail" {
        let period = match args.through_day {
            Some(d) => format!("{}{d:02}", args.month.replace('-', "")),
            None => args.month.replace('-', ""),
        };
        let path = args
            .out_dir
            .join(format!("{}-{period}-detail.csv", args.account));
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let stats = generate::write_detail_csv(&opts, args.zh, file)?;
        outln!(
            "{}: {} rows ({} voucher rows), BilledCost sum {}",
            path.display(),
            stats.rows,
            stats.voucher_rows,
            generate::format_e8(stats.billed_cost_e8)
        );
        return Ok(0);
    }
    let name = generate::object_name(&args.account, &args.month, args.through_day)?;
    let path = args.out_dir.join(&name);
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let stats = generate::write_focus_csv(&opts, file)?;
    outln!(
        "{}: {} rows, {} bytes, BilledCost sum {}",
        path.display(),
        stats.rows,
        stats.bytes,
        generate::format_e8(stats.billed_cost_e8)
    );
    Ok(0)
}

#[derive(Args)]
struct TotalsArgs {
    /// The lake: a local folder or s3://bucket[/prefix]
    #[arg(long)]
    dest: String,
    /// Only this billing month (YYYY-MM)
    #[arg(long, value_parser = parse_month)]
    month: Option<String>,
    /// Only this billing account
    #[arg(long)]
    account: Option<String>,
    /// Also group by ServiceName or SubAccountId
    #[arg(long, value_parser = ["service", "sub-account"])]
    by: Option<String>,
    /// Print JSON (amounts as decimal strings)
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV (amounts as decimal strings)
    #[arg(long)]
    csv: bool,
    /// Pipeline file, for how many days a month-to-date file covers (default as for `run`)
    #[arg(long)]
    pipeline: Option<PathBuf>,
    #[command(flatten)]
    s3: S3Args,
}

/// `billpipe totals`: amounts from the lake's Parquet files, snapshots from the ledger.
fn totals(args: TotalsArgs) -> Result<i32> {
    use billpipe::totals::{self, GroupBy, TotalsOptions};
    let opts = TotalsOptions {
        s3: args.s3.options(),
        month: args.month.clone(),
        account: args.account.clone(),
        by: match &args.by {
            Some(by) => GroupBy::from_name(by)?,
            None => GroupBy::Partition,
        },
        pipeline: args.pipeline.clone(),
        ..TotalsOptions::new(&args.dest)
    };
    let t = totals::totals(&opts).with_context(|| format!("totals of {}", args.dest))?;
    if args.json {
        outln!("{}", t.to_json()?);
    } else if args.csv {
        outp!("{}", t.to_csv()?);
    } else {
        outp!("{}", t.human());
        return Ok(0);
    }
    for finding in t.findings() {
        eprintln!("billpipe: note: {finding}");
    }
    Ok(0)
}
