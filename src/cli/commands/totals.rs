//! `billpipe totals`: amounts from the lake's Parquet files, snapshots from the ledger, as a
//! table, JSON or CSV (the sums and their findings are `billpipe::totals`'s).

use anyhow::{Context, Result};
use billpipe::totals::{self, GroupBy, TotalsOptions};

use crate::cli::args::TotalsArgs;
use crate::cli::output::{outln, outp};

/// `billpipe totals`: amounts from the lake's Parquet files, snapshots from the ledger.
pub fn totals(args: TotalsArgs) -> Result<i32> {
    let opts = TotalsOptions {
        s3: args.s3.options(),
        month: args.month.clone(),
        account: args.account.clone(),
        by: args.by.map_or(GroupBy::Partition, GroupBy::from),
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
