//! The `billpipe` command line. Parsing arguments and printing is all that happens here; the
//! work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use billpipe::generate::{self, GenerateOptions};
use billpipe::report::{RunReport, EXIT_FAILED};
use billpipe::run::{self, RunOptions};
use billpipe::s3::S3Options;
use billpipe::write::WriteOptions;
use clap::{Args, Parser, Subcommand};

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
    Run(JobArgs),
    /// Print what `run` would do with every object, and why, changing nothing.
    Plan(JobArgs),
    /// Write a deterministic, realistic Tencent FOCUS CSV (tests, examples, benchmarks).
    Generate(GenerateArgs),
}

#[derive(Args)]
struct JobArgs {
    /// Where the bills are: a local folder or s3://bucket[/prefix]
    #[arg(long)]
    source: String,
    /// Where the lake is: a local folder or s3://bucket[/prefix]
    #[arg(long)]
    dest: String,
    /// Pipeline file (default: pipelines/tencent-focus.toml, else the built-in copy)
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Write the run report as JSON to this file
    #[arg(long)]
    report: Option<PathBuf>,
    /// S3 endpoint, e.g. https://cos.ap-guangzhou.myqcloud.com (else AWS_ENDPOINT_URL)
    #[arg(long)]
    endpoint: Option<String>,
    /// S3 signing region, e.g. ap-guangzhou (else AWS_REGION / profile)
    #[arg(long)]
    region: Option<String>,
    /// Path-style addressing (Garage, MinIO); the default is virtual-hosted (COS, AWS)
    #[arg(long)]
    path_style: bool,
    /// List with ListObjectsV2 instead of v1 markers (COS documents only v1)
    #[arg(long)]
    list_v2: bool,
    /// Upload lake files above this size in parts of this size (MiB, at least 5)
    #[arg(long, default_value_t = 16)]
    part_mb: u64,
    /// zstd level of the Parquet files
    #[arg(long, default_value_t = 3)]
    zstd_level: i32,
    /// Also list skipped objects in the summary
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// Billing account id
    #[arg(long, default_value = "200020002001")]
    account: String,
    /// Billing month, YYYY-MM
    #[arg(long)]
    month: String,
    /// Daily snapshot: include days 1..=DAY (delivered on DAY+1). Without it: the monthly file.
    #[arg(long)]
    through_day: Option<u32>,
    #[arg(long, default_value_t = 100)]
    rows_per_day: u64,
    /// Grow rows per day until the monthly file is about this many megabytes (overrides --rows-per-day)
    #[arg(long)]
    target_mb: Option<u64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Make these rows (0-based) unparsable, comma-separated
    #[arg(long, value_delimiter = ',')]
    bad_rows: Vec<u64>,
    /// Add 1e-8 to every BilledCost (a restated, re-delivered bill)
    #[arg(long)]
    restated: bool,
    /// Output folder; the file gets Tencent's object name
    #[arg(long)]
    out_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BILLPIPE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("billpipe: error: {e:#}");
            ExitCode::from(EXIT_FAILED as u8)
        }
    }
}

fn dispatch(command: Command) -> Result<i32> {
    match command {
        Command::Run(args) => job(args, false),
        Command::Plan(args) => job(args, true),
        Command::Generate(args) => generate(args),
    }
}

fn job(args: JobArgs, plan_only: bool) -> Result<i32> {
    let opts = RunOptions {
        source: args.source.clone(),
        dest: args.dest.clone(),
        pipeline: args.pipeline.clone(),
        s3: S3Options {
            endpoint: args.endpoint.clone(),
            region: args.region.clone(),
            path_style: args.path_style,
            list_v2: args.list_v2,
            part_bytes: args.part_mb << 20,
        },
        write: WriteOptions {
            zstd_level: args.zstd_level,
            ..WriteOptions::default()
        },
        ..RunOptions::new(&args.source, &args.dest)
    };
    let report: RunReport = if plan_only {
        run::plan_only(&opts)
    } else {
        run::run(&opts)
    }
    .with_context(|| {
        format!(
            "{} {} -> {}",
            if plan_only { "plan" } else { "run" },
            args.source,
            args.dest
        )
    })?;
    print!("{}", report.human(args.verbose));
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing report {}", path.display()))?;
    }
    Ok(report.exit_code())
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
    };
    if let Some(mb) = args.target_mb {
        // Measure one day's worth of rows, then scale: ~30 days in a monthly file.
        let probe = GenerateOptions {
            through_day: Some(1),
            rows_per_day: 1000,
            ..opts.clone()
        };
        let stats = generate::write_focus_csv(&probe, std::io::sink())?;
        let bytes_per_row = (stats.bytes / stats.rows.max(1)).max(1);
        let days = if args.through_day.is_some() {
            args.through_day.unwrap_or(30)
        } else {
            30
        } as u64;
        opts.rows_per_day = (mb * 1_000_000 / bytes_per_row / days).max(1);
    }
    let name = generate::object_name(&args.account, &args.month, args.through_day)?;
    let path = args.out_dir.join(&name);
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let stats = generate::write_focus_csv(&opts, file)?;
    println!(
        "{}: {} rows, {} bytes, BilledCost sum {}",
        path.display(),
        stats.rows,
        stats.bytes,
        generate::format_e8(stats.billed_cost_e8)
    );
    Ok(0)
}
