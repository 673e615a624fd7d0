//! `billpipe state`: what the lake holds per (account, month), and `state reset`, which makes
//! the next run reload the matching units (saying which first).

use anyhow::{Context, Result};
use billpipe::job::state::{self as lake_state, ResetFilter};

use crate::cli::args::{StateAction, StateArgs};
use crate::cli::output::outln;

/// `billpipe state [reset]`.
pub fn state(args: StateArgs) -> Result<i32> {
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
        Some(StateAction::Compact { lock }) => {
            let c = lake_state::state_compact(&dest, &s3, &lock.options())?;
            outln!(
                "ledger compacted: {} journal entries folded into a base of {}",
                c.folded,
                c.base_entries
            );
            Ok(0)
        }
    }
}
