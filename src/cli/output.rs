//! What the command line prints: stdout through `out` (a closed stdout ends quietly, with the
//! command's own exit code), errors with their causes said once (`message`), the log on stderr
//! (`init_logging`), and a run's progress (`ProgressDisplay`: bars on a terminal, a plain line
//! now and then elsewhere).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use billpipe::job::run::Progress;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::args::Command;

/// The log on stderr: `BILLPIPE_LOG` if set, else warnings (`run -v`: info, `run -q`: errors).
pub fn init_logging(command: &Command) {
    let default_level = match command {
        Command::Run(a) if a.verbose => "info",
        Command::Run(a) if a.quiet => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BILLPIPE_LOG").unwrap_or_else(|_| {
                // The AWS SDK's own warnings (each credential provider that found nothing,
                // multi-KB dumps) only at -v: billpipe says what is missing in one line.
                let filter = if default_level == "info" {
                    default_level.to_string()
                } else {
                    format!("{default_level},aws_config=error,aws_smithy_runtime=error")
                };
                tracing_subscriber::EnvFilter::new(filter)
            }),
        )
        .init();
}

/// The error and its causes, each said once: a library error that already names its cause
/// (`nope.csv: No such file or directory (os error 2)`) is not followed by the cause again.
pub fn message(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static STDOUT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes to stdout. When the reader has gone (`| head -1`: EPIPE) nothing more is written and
/// the command ends with its own exit code — a `run` whose summary nobody reads still loaded
/// the lake, and 3 must still say money is missing. Rust ignores SIGPIPE, so without this
/// `println!` would panic.
pub fn out(args: std::fmt::Arguments) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, Ordering::Relaxed);
        }
    }
}

pub fn stdout_failed() -> bool {
    use std::io::Write;
    let flushed = std::io::stdout().lock().flush();
    if let Err(e) = flushed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            STDOUT_FAILED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    STDOUT_FAILED.load(std::sync::atomic::Ordering::Relaxed)
}

/// `println!`/`print!` through `out`.
macro_rules! outln {
    () => { $crate::cli::output::out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::output::out(format_args!("{}\n", format_args!($($t)*))) };
}
macro_rules! outp {
    ($($t:tt)*) => { $crate::cli::output::out(format_args!($($t)*)) };
}
pub(crate) use {outln, outp};

/// Progress bars on a terminal; on anything else (cron, Kubernetes logs) a plain line per
/// finished object, at most one every 10 seconds plus the last.
pub struct ProgressDisplay {
    bar: Option<ProgressBar>,
    total_objects: u64,
    total_bytes: u64,
    done_objects: u64,
    done_bytes: u64,
    started: Instant,
    last_line: Option<Instant>,
}

impl ProgressDisplay {
    pub fn new() -> Self {
        ProgressDisplay {
            bar: None,
            total_objects: 0,
            total_bytes: 0,
            done_objects: 0,
            done_bytes: 0,
            started: Instant::now(),
            last_line: None,
        }
    }

    pub fn update(&mut self, p: Progress) {
        match p {
            Progress::Planned { objects, bytes } => {
                self.total_objects = objects;
                self.total_bytes = bytes;
                if std::io::stderr().is_terminal() && objects > 0 {
                    let bar = ProgressBar::new(bytes);
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} | {msg}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(200));
                    self.bar = Some(bar);
                }
            }
            Progress::Done(o) => {
                self.done_objects += 1;
                self.done_bytes += o.size;
                let msg = format!(
                    "{}/{} objects, last: {}",
                    self.done_objects, self.total_objects, o.key
                );
                if let Some(bar) = &self.bar {
                    bar.inc(o.size);
                    bar.set_message(msg);
                    return;
                }
                let due = self
                    .last_line
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
                if due || self.done_objects == self.total_objects {
                    let secs = self.started.elapsed().as_secs_f64().max(1e-3);
                    eprintln!(
                        "billpipe: {}/{} objects, {:.1}/{:.1} MB, {:.1} MB/s",
                        self.done_objects,
                        self.total_objects,
                        self.done_bytes as f64 / 1e6,
                        self.total_bytes as f64 / 1e6,
                        self.done_bytes as f64 / 1e6 / secs
                    );
                    self.last_line = Some(Instant::now());
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
