//! The `billpipe` command line: parse, check, dispatch, exit code. Everything else is in `cli`
//! (the command line's definition, usage checks, output, one file per command) and the library.
//!
//! Every argument is checked before any work starts (`cli::check`), so a mistake costs nothing
//! and exits 2 like clap's own parse errors. Output to a closed stdout (`billpipe totals | head
//! -1`) ends quietly: the reader has gone, the work is done, so the exit code stays the
//! command's own (see `cli::output::out`).

mod cli;

use std::process::ExitCode;

use billpipe::job::report::{EXIT_FAILED, EXIT_LOCKED};

use crate::cli::args::Cli;
use crate::cli::output::{message, stdout_failed};

/// jemalloc instead of glibc's malloc. A reseller's consolidated bill is written as thousands of
/// small Parquet files, each a few hundred allocations per column; with glibc's malloc a tenth of
/// the partition writers' time went to malloc, free and `malloc_consolidate`, and its heaps, which
/// fragment and do not shrink, held 280-298 MiB at 20,000 customers unless its mmap threshold was
/// pinned (which cost the single-account bill ~10 % in page faults). Measured in the README
/// (reseller section): less CPU on both shapes; peak RSS 240-270 MiB against 220-240 MiB with
/// glibc and its threshold pinned (jemalloc returns freed pages after ten seconds).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::from_env();
    cli::output::init_logging(&cli.command);
    if let Err(e) = cli::check::check(&cli.command) {
        e.exit();
    }
    let code = match cli::commands::dispatch(cli.command) {
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
