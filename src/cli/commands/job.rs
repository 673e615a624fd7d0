//! `billpipe run` and `billpipe plan`: one command line, two verbs. Prints the report (or, with
//! `--quiet`, only its error), writes `--report` (also for a run that never started), shows
//! progress while loading, and logs every decision at `BILLPIPE_LOG=debug`.

use anyhow::{Context, Result};
use billpipe::ingest::write::WriteOptions;
use billpipe::job::report::{JobCommand, RunReport, EXIT_FAILED, EXIT_LOCKED};
use billpipe::job::run::{self, RunOptions};
use billpipe::state::plan::PlanOptions;

use crate::cli::args::{QuarantineOn, RunArgs};
use crate::cli::output::{outp, ProgressDisplay};

/// `run` or `plan` with `args`; the exit code is the report's.
pub fn job(args: RunArgs, command: JobCommand) -> Result<i32> {
    let plan_only = command == JobCommand::Plan;
    let opts = RunOptions {
        pipeline: args.pipeline.clone(),
        s3: args.s3.options(),
        write: {
            let defaults = WriteOptions::default();
            WriteOptions {
                zstd_level: args.zstd_level,
                small_partition_rows: args
                    .small_partition_rows
                    .unwrap_or(defaults.small_partition_rows),
                ..defaults
            }
        },
        plan: PlanOptions {
            from: args.from.clone(),
            to: args.to.clone(),
            force: args.force,
            shard: match &args.shard {
                Some(s) => Some(crate::cli::check::shard_of(s).map_err(anyhow::Error::msg)?),
                None => None,
            },
        },
        report_skipped: args.report_skipped || args.verbose,
        jobs: args.jobs.max(1),
        profile: args.profile.clone(),
        quarantine_on_error: args.quarantine_on == Some(QuarantineOn::Error),
        lock: args.lock.options(),
        ..RunOptions::new(&args.source, &args.dest)
    };
    let what = format!("{command} {} -> {}", args.source, args.dest);
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
                let mut failed = run::failed_report(command, &opts, &format!("{what}: {e}"));
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
