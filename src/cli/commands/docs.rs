//! `billpipe completions` and `billpipe man`: shell completion scripts and manual pages, made
//! from the same definition as `--help` (`args::cli_command`).

use anyhow::{Context, Result};

use crate::cli::args::cli_command;
use crate::cli::check::usage_error;
use crate::cli::output::outp;

/// `billpipe completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> Result<i32> {
    // Rendered whole, then written through `out`, so `| head` ends quietly.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli_command(), "billpipe", &mut script);
    outp!("{}", String::from_utf8_lossy(&script));
    Ok(0)
}

/// `billpipe man [COMMAND]`: billpipe(1), or billpipe-COMMAND(1).
pub fn man(command: Option<&str>) -> Result<i32> {
    let mut cmd = cli_command();
    cmd.build();
    let cmd = match command {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            Some(sub) => sub.clone().version(env!("CARGO_PKG_VERSION")),
            None => usage_error(&["man"], format!("no command {name:?}")).exit(),
        },
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .context("rendering the manual page")?;
    outp!("{}", String::from_utf8_lossy(&page));
    Ok(0)
}
