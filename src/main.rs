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

/// Buffers over 128 KiB come straight from the kernel and go back to it when freed. glibc
/// raises that threshold to the largest buffer freed so far (up to 32 MiB), after which the
/// megabyte-sized Arrow and Parquet buffers of every batch come from its heaps, which fragment
/// and do not shrink: peak RSS of a 20,000-customer consolidated bill is 229-236 MiB with the
/// threshold fixed and 280-298 MiB without. Fixed only once a snapshot spills to run files, it
/// came too late (298 MiB): the heaps had grown by then. The cost is system time for the
/// mappings, ~1 s per GB of CSV of a single-account bill (README, reseller section).
/// `MALLOC_MMAP_THRESHOLD_` in the environment wins (e.g. 33554432 where memory is plentiful;
/// an empty value means 0 to glibc: every allocation mapped, ten times slower).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_mmap_threshold() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_mmap_threshold() {}

fn main() -> ExitCode {
    fix_mmap_threshold();
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
