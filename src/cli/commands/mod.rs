//! The commands: `dispatch` runs the parsed command line and returns the exit code. Each
//! command's file turns its arguments into the library's options, calls the library, and
//! prints the result; nothing here decides what a bill means.

mod docs;
mod generate;
mod job;
mod state;
mod totals;
mod validate;

use anyhow::Result;
use billpipe::job::report::JobCommand;

use crate::cli::args::Command;

/// Runs `command` (checked by `check::check` before) and returns its exit code.
pub fn dispatch(command: Command) -> Result<i32> {
    match command {
        Command::Run(args) => job::job(args, JobCommand::Run),
        Command::Plan(args) => job::job(args, JobCommand::Plan),
        Command::State(args) => state::state(args),
        Command::Totals(args) => totals::totals(args),
        Command::Validate(args) => validate::validate(args),
        Command::Generate(args) => generate::generate(args),
        Command::Completions { shell } => docs::completions(shell),
        Command::Man { command } => docs::man(command.as_deref()),
    }
}
