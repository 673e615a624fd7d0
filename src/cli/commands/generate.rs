//! `billpipe generate`: a deterministic Tencent FOCUS CSV, or a native detail bill, for tests,
//! examples and benchmarks (the writing is `billpipe::generate`'s).

use anyhow::{Context, Result};
use billpipe::generate::{self, GenerateOptions};

use crate::cli::args::{GenerateArgs, GenerateFormat};
use crate::cli::output::outln;

/// `billpipe generate`.
pub fn generate(args: GenerateArgs) -> Result<i32> {
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
    if args.format == GenerateFormat::Detail {
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
