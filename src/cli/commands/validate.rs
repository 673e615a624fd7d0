//! `billpipe validate`: FOCUS files checked against the conformance rules, read as `run` reads
//! them, nothing loaded; a table per file (or JSON) and exit 3 when one fails.

use anyhow::{Context, Result};

use crate::cli::args::ValidateArgs;
use crate::cli::output::outln;

/// `billpipe validate FILE...`.
pub fn validate(args: ValidateArgs) -> Result<i32> {
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
