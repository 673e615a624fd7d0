//! Usage checks: what clap cannot check alone, done before any work so that a mistake costs
//! nothing and exits 2 like clap's own parse errors. A run that would skip every month, a
//! profile that does not exist, a `--source` that is a file or a lake inside its own source is
//! a usage error, not a result. `usage_error` prints such a message as clap prints its own,
//! with the usage line of the command it is about.

use std::path::PathBuf;

use billpipe::job::report::JobCommand;
use clap::error::ErrorKind;

use crate::cli::args::{cli_command, Command, RunArgs, StateAction};

/// A usage error of the (sub)command at `path`, printed as clap prints its own (with that
/// command's usage line) and exiting 2.
pub fn usage_error(path: &[&str], message: impl std::fmt::Display) -> clap::Error {
    fn find(cmd: &mut clap::Command, path: &[&str], message: String) -> clap::Error {
        match path.split_first() {
            Some((first, rest)) => match cmd.find_subcommand_mut(first) {
                Some(sub) => find(sub, rest, message),
                None => cmd.error(ErrorKind::InvalidValue, message),
            },
            None => cmd.error(ErrorKind::InvalidValue, message),
        }
    }
    let mut cmd = cli_command();
    cmd.build();
    find(&mut cmd, path, message.to_string())
}

/// Checks what clap cannot check alone, before any work (see the module docs).
pub fn check(command: &Command) -> std::result::Result<(), clap::Error> {
    match command {
        Command::Run(a) => check_job(a, JobCommand::Run),
        Command::Plan(a) => check_job(a, JobCommand::Plan),
        Command::State(a) => {
            let path: &[&str] = match a.action {
                Some(StateAction::Reset { .. }) => &["state", "reset"],
                Some(StateAction::Compact { .. }) => &["state", "compact"],
                None => &["state"],
            };
            if a.dest.is_none() {
                return Err(usage_error(
                    path,
                    "--dest is required: the lake (a local folder or s3://bucket[/prefix])",
                ));
            }
            if let Some(StateAction::Reset {
                account: None,
                month: None,
                all: false,
                ..
            }) = &a.action
            {
                return Err(usage_error(
                    path,
                    "state reset needs --account, --month (or both), or --all to reset every unit of the lake",
                ));
            }
            Ok(())
        }
        Command::Validate(a) => {
            // The schemas folder, looked up as every command does (see `config`).
            let schema_dir = billpipe::config::schema_dir(a.pipeline.as_deref());
            let schema_dir = schema_dir.as_deref();
            if let Some(profile) = &a.profile {
                check_profile(profile, schema_dir).map_err(|m| usage_error(&["validate"], m))?;
            }
            if let Some(v) = &a.focus_version {
                // Without the schemas the check is left to `validate_file`, which says so.
                if let Ok(known) = billpipe::conformance::schema::focus_versions(schema_dir) {
                    if !known.iter().any(|s| &s.version == v) {
                        let names: Vec<&str> = known.iter().map(|s| s.version.as_str()).collect();
                        return Err(usage_error(
                            &["validate"],
                            format!("unknown --focus-version {v:?}; known: {}", names.join(", ")),
                        ));
                    }
                }
            }
            Ok(())
        }
        Command::Totals(_)
        | Command::Generate(_)
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(()),
    }
}

/// `--shard I/N`, or `--shard N` with I from `JOB_COMPLETION_INDEX` (Kubernetes Indexed Jobs).
pub fn shard_of(text: &str) -> std::result::Result<billpipe::state::shard::Shard, String> {
    if text.contains('/') {
        return text.parse();
    }
    let count: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("--shard {text:?}: give I/N, or N with JOB_COMPLETION_INDEX set"))?;
    let index = std::env::var("JOB_COMPLETION_INDEX").map_err(|_| {
        format!("--shard {text}: no shard index; give --shard I/{text}, or run as a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)")
    })?;
    format!("{}/{count}", index.trim()).parse()
}

fn check_job(a: &RunArgs, command: JobCommand) -> std::result::Result<(), clap::Error> {
    let path = [command.name()];
    if let Some(shard) = &a.shard {
        shard_of(shard).map_err(|m| usage_error(&path, format!("--shard: {m}")))?;
    }
    if let (Some(from), Some(to)) = (&a.from, &a.to) {
        if from > to {
            return Err(usage_error(
                &path,
                format!("--from {from} is after --to {to}: no billing month is in range"),
            ));
        }
    }
    if let Some(profile) = &a.profile {
        // The pipeline's schema folder holds its profiles; a pipeline that does not load is
        // reported by the run itself (exit 1, configuration).
        if let Ok(pipeline) = billpipe::state::classify::Pipeline::load(a.pipeline.as_deref()) {
            check_profile(profile, pipeline.schema_dir.as_deref())
                .map_err(|m| usage_error(&path, m))?;
        }
    }
    if billpipe::store::s3::S3Location::parse(&a.source).is_none()
        && std::path::Path::new(&a.source).is_file()
    {
        return Err(usage_error(
            &path,
            format!(
                "--source {} is a file; --source takes a folder or s3://bucket[/prefix] holding bill files (to check one file: billpipe validate {})",
                a.source, a.source
            ),
        ));
    }
    if let Some(why) = dest_inside_source(&a.source, &a.dest) {
        return Err(usage_error(&path, why));
    }
    Ok(())
}

/// A lake inside its own source would list its Parquet files, ledger and quarantine as
/// objects of the source on every run.
fn dest_inside_source(source: &str, dest: &str) -> Option<String> {
    let inside = match (
        billpipe::store::s3::S3Location::parse(source),
        billpipe::store::s3::S3Location::parse(dest),
    ) {
        (Some(s), Some(d)) => s.bucket == d.bucket && d.prefix.starts_with(&s.prefix),
        (None, None) => {
            let (s, d) = (resolve(source.as_ref()), resolve(dest.as_ref()));
            d.starts_with(&s)
        }
        _ => false,
    };
    inside.then(|| {
        format!(
            "--dest {dest} is {} --source {source}: the lake's own files would be listed as objects of the source on every run; put the lake elsewhere",
            if resolve(dest.as_ref()) == resolve(source.as_ref()) { "the same place as" } else { "inside" }
        )
    })
}

/// An absolute path with symbolic links and `..` resolved as far as it exists (the lake's
/// folder may not exist yet).
fn resolve(p: &std::path::Path) -> PathBuf {
    if let Some(loc) = billpipe::store::s3::S3Location::parse(&p.to_string_lossy()) {
        return PathBuf::from(loc.uri());
    }
    let mut abs = PathBuf::new();
    for part in std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .components()
    {
        match part {
            std::path::Component::ParentDir => {
                abs.pop();
            }
            std::path::Component::CurDir => {}
            other => abs.push(other),
        }
    }
    let mut tail = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(mut real) = cur.canonicalize() {
            for name in tail.iter().rev() {
                real.push(name);
            }
            return real;
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                tail.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// A profile name must name a profile (`schemas/profile-<name>.toml` or a built-in one), a
/// `.toml` argument must be a readable profile file.
fn check_profile(name: &str, dir: Option<&std::path::Path>) -> std::result::Result<(), String> {
    use billpipe::conformance::rules::Profile;
    let Err(e) = Profile::load(name, dir) else {
        return Ok(());
    };
    if name.ends_with(".toml") || !e.to_string().contains("unknown profile") {
        return Err(format!("--profile {name}: {e}"));
    }
    let mut known: Vec<String> = ["strict", "strict-gate", "tencent", "tencent-l2", "off"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(n) = file
                .strip_prefix("profile-")
                .and_then(|f| f.strip_suffix(".toml"))
            {
                if !known.iter().any(|k| k == n) {
                    known.push(n.to_string());
                }
            }
        }
    }
    known.retain(|k| Profile::load(k, dir).is_ok());
    let hint = known
        .iter()
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean {k}?)"))
        .unwrap_or_default();
    Err(format!(
        "unknown --profile {name:?}{hint}; known: {}, or a profile file ending in .toml",
        known.join(", ")
    ))
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
