//! The command line, compiled into the `billpipe` binary only (the library knows nothing of
//! it). Parsing arguments, checking them, showing progress and printing is all that happens
//! here; the work is in the library.
//!
//! - `args`: the clap definition of every command and flag, and the enums of their values;
//! - `check`: usage checks before any work (exit 2, like clap's own parse errors);
//! - `output`: stdout that ends quietly when closed, error messages, the log, progress;
//! - `commands`: one file per command, and `dispatch`.

pub mod args;
pub mod check;
pub mod commands;
pub mod output;
