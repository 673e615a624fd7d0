//! The command line's definition: the clap structs of every command and flag, their closed
//! sets of values as enums, and `cli_command`, the one definition `--help`, `billpipe man` and
//! `billpipe completions` are all made from (flags a command accepts but ignores are hidden
//! there). Turning flags into the library's options (`S3Args::options`, ...) is here too;
//! checking them against each other and the disk is `check`'s.

use std::path::PathBuf;
use std::time::Duration;

use billpipe::state::lock::LockOptions;
use billpipe::store::s3::S3Options;
use billpipe::totals::GroupBy;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "billpipe",
    version,
    about = "Cloud bill files in a bucket -> typed, snapshot-correct, partitioned Parquet lake"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The process's arguments, parsed with `cli_command`'s definition; a mistake prints
    /// clap's message and exits 2.
    pub fn from_env() -> Cli {
        Cli::from_arg_matches(&cli_command().get_matches()).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Subcommand)]
pub enum Command {
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
pub struct ValidateArgs {
    /// Local files or s3://bucket/key objects (plain, gzip, zstd or zip)
    #[arg(required = true)]
    pub files: Vec<String>,
    /// FOCUS version to check against (default: detected from the columns present)
    #[arg(long)]
    pub focus_version: Option<String>,
    /// Conformance profile: strict (the spec as written), tencent, off, or a profile file
    /// (.toml). Default: the pipeline's profile for a file one of its families names (read as
    /// `run` reads it), strict for any other file
    #[arg(long)]
    pub profile: Option<String>,
    /// Pipeline file whose families, CSV options and schemas a file is read with (default: the
    /// bundled Tencent pipeline)
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Print JSON instead of tables
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Args, Clone)]
pub struct S3Args {
    /// S3 endpoint, e.g. https://cos.ap-guangzhou.myqcloud.com (else AWS_ENDPOINT_URL)
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
    /// S3 signing region, e.g. ap-guangzhou (else AWS_REGION / profile)
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Path-style addressing (Garage, MinIO); the default is virtual-hosted (COS, AWS)
    #[arg(long, global = true)]
    pub path_style: bool,
    /// List with ListObjectsV2 instead of v1 markers (COS documents only v1)
    #[arg(long, global = true)]
    pub list_v2: bool,
    /// S3 lake only: upload Parquet files above this size in parts of this size, in MiB (at
    /// least 5)
    #[arg(long, default_value_t = 16, global = true, value_parser = clap::value_parser!(u64).range(5..))]
    pub part_mb: u64,
}

impl S3Args {
    pub fn options(&self) -> S3Options {
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
pub struct LockArgs {
    /// Wait for another run's lock instead of exiting
    #[arg(long)]
    pub wait: bool,
    /// Seconds without a heartbeat after which a lock is stale and taken over
    #[arg(long, default_value_t = 120)]
    pub lock_timeout: u64,
}

impl LockArgs {
    pub fn options(&self) -> LockOptions {
        LockOptions {
            wait: self.wait,
            stale_after: Duration::from_secs(self.lock_timeout),
        }
    }
}

#[derive(Args)]
pub struct RunArgs {
    /// Where the bills are: a local folder or s3://bucket[/prefix]
    #[arg(long)]
    pub source: String,
    /// Where the lake is: a local folder or s3://bucket[/prefix]
    #[arg(long)]
    pub dest: String,
    /// Pipeline file (default: pipelines/tencent.toml, else the built-in copy)
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Write the run report as JSON to this file
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Only billing months from this one (YYYY-MM); others are skipped as out of range
    #[arg(long, value_parser = parse_month)]
    pub from: Option<String>,
    /// Only billing months up to this one (YYYY-MM)
    #[arg(long, value_parser = parse_month)]
    pub to: Option<String>,
    /// Reload every unit's best snapshot even if unchanged (same result as a fresh load)
    #[arg(long)]
    pub force: bool,
    /// Objects loaded at the same time (memory grows with it: about 240 MB each)
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Load only the snapshot units of shard I of N (I/N, 0-based), for several processes on
    /// one lake; `--shard N` takes I from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job)
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// List every skipped object in the --report JSON too (default: counts and first examples
    /// per reason; -v implies it)
    #[arg(long)]
    pub report_skipped: bool,
    /// Conformance profile instead of the pipeline's (tencent for the default pipeline):
    /// strict, tencent, off, strict-gate, or a .toml file
    #[arg(long)]
    pub profile: Option<String>,
    /// Gatekeeping: hold out of the lake every row with a finding of this severity (default:
    /// none; findings are counted and the row is loaded, so the lake equals the bill)
    #[arg(long, value_enum)]
    pub quarantine_on: Option<QuarantineOn>,
    /// zstd compression level of the Parquet files, 1 (fastest) to 22 (smallest)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=22))]
    pub zstd_level: i32,
    /// Partitions of fewer rows held back while a file spreading over many partitions is read
    /// (a reseller's customers) are written uncompressed, which makes such bills several times
    /// faster to load; 0 compresses every file with zstd
    #[arg(long, value_name = "ROWS")]
    pub small_partition_rows: Option<u64>,
    #[command(flatten)]
    pub lock: LockArgs,
    #[command(flatten)]
    pub s3: S3Args,
    /// Also list skipped objects, and log each object to stderr
    #[arg(short, long)]
    pub verbose: bool,
    /// Print nothing but errors (the exit code and --report still tell everything)
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Args)]
pub struct StateArgs {
    #[command(subcommand)]
    pub action: Option<StateAction>,
    /// The lake: a local folder or s3://bucket[/prefix]
    #[arg(long, global = true)]
    pub dest: Option<String>,
    /// Print JSON
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Subcommand)]
pub enum StateAction {
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
    /// Fold the ledger's journal into its base now (runs do it themselves when it grows)
    Compact {
        #[command(flatten)]
        lock: LockArgs,
    },
}

/// `--quarantine-on`: the finding severity whose rows are held out of the lake. (The variants
/// carry no doc comments: clap would print them as help of each value, changing `--help`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QuarantineOn {
    // Rows with an error finding.
    Error,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Billing account id
    #[arg(long, default_value = "200020002001")]
    pub account: String,
    /// Billing month, YYYY-MM
    #[arg(long, value_parser = parse_month)]
    pub month: String,
    /// Daily snapshot: include days 1..=DAY (delivered on DAY+1). Without it: the monthly file.
    #[arg(long)]
    pub through_day: Option<u32>,
    /// Rows per day of the month the file covers
    #[arg(long, default_value_t = 100)]
    pub rows_per_day: u64,
    /// Grow rows per day until the file is about this many megabytes (overrides --rows-per-day)
    #[arg(long)]
    pub target_mb: Option<u64>,
    /// Random seed: the same seed and options give the same file, byte for byte
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Make these rows (0-based) unparsable, comma-separated
    #[arg(long, value_delimiter = ',')]
    pub bad_rows: Vec<u64>,
    /// Add 1e-8 to every BilledCost (a restated, re-delivered bill)
    #[arg(long)]
    pub restated: bool,
    /// Shape it like real Tencent FOCUS files: credits (negative), Tax rows and adjustments
    /// with empty ContractedCost, ListCost, unit prices, quantities and ServiceName
    #[arg(long)]
    pub gaps: bool,
    /// Output folder; the file gets Tencent's object name
    #[arg(long)]
    pub out_dir: PathBuf,
    /// `focus` (Tencent FOCUS CSV) or `detail` (Tencent's native detail bill, as a plain CSV
    /// named `<uin>-<period>-detail.csv`; zip it to make a bill_details object)
    #[arg(long, value_enum, default_value = "focus")]
    pub format: GenerateFormat,
    /// With --format detail: Chinese headers and values (a zh_cn file, with a BOM)
    #[arg(long)]
    pub zh: bool,
    /// A reseller's consolidated bill (--account is the reseller): this many customers' detail
    /// bills interleaved in one zip, --rows-per-day rows per customer; prints each customer's
    /// totals
    #[arg(long, conflicts_with = "target_mb")]
    pub customers: Option<u32>,
}

/// `generate --format`: the kind of file written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GenerateFormat {
    // Tencent FOCUS CSV, named as Tencent names the object.
    Focus,
    // Tencent's native detail bill, a plain CSV.
    Detail,
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
            "small_partition_rows",
            "jobs",
            "profile",
            "quarantine_on",
            "wait",
            "lock_timeout",
            "part_mb",
            "shard",
            "report_skipped",
        ],
    ),
    ("state", &["part_mb"]),
    ("totals", &["part_mb"]),
    ("validate", &["part_mb"]),
];

/// The command line's definition, with `HIDDEN` applied.
pub fn cli_command() -> clap::Command {
    HIDDEN.iter().fold(Cli::command(), |cmd, (sub, ids)| {
        cmd.mut_subcommand(*sub, |c| {
            ids.iter().fold(c, |c, id| c.mut_arg(*id, |a| a.hide(true)))
        })
    })
}

#[derive(Args)]
pub struct TotalsArgs {
    /// The lake: a local folder or s3://bucket[/prefix]
    #[arg(long)]
    pub dest: String,
    /// Only this billing month (YYYY-MM)
    #[arg(long, value_parser = parse_month)]
    pub month: Option<String>,
    /// Only this billing account
    #[arg(long)]
    pub account: Option<String>,
    /// Also group by ServiceName or SubAccountId
    #[arg(long, value_enum)]
    pub by: Option<TotalsBy>,
    /// Print JSON (amounts as decimal strings)
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV (amounts as decimal strings)
    #[arg(long)]
    pub csv: bool,
    /// Pipeline file, for how many days a month-to-date file covers (default as for `run`)
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    #[command(flatten)]
    pub s3: S3Args,
}

/// `totals --by`: the column grouped by besides (month, account, currency).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TotalsBy {
    // ServiceName
    Service,
    // SubAccountId
    SubAccount,
}

impl From<TotalsBy> for GroupBy {
    fn from(by: TotalsBy) -> GroupBy {
        match by {
            TotalsBy::Service => GroupBy::Service,
            TotalsBy::SubAccount => GroupBy::SubAccount,
        }
    }
}
