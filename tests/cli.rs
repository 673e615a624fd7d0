//! The command line as a newcomer meets it (issue 13): every common mistake is refused before
//! any work with exit 2 and a message naming the flag, a missing lake or an empty reset says
//! so (exit 1), messages are said once, and a closed stdout ends quietly. Each test asserts the
//! exit code and the first line of stderr, which is what a person (or a log alert) reads.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{billpipe, bin, Output};

fn first_line(out: &Output) -> &str {
    out.stderr.lines().next().unwrap_or("")
}

/// Exit code and first line of stderr.
fn assert_fails(out: &Output, code: i32, first: &str) {
    assert_eq!(
        out.code, code,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(first_line(out), first, "stderr:\n{}", out.stderr);
}

/// A lake loaded from the example bucket (exit 3: one held-out row, on purpose).
fn example_lake() -> tempfile::TempDir {
    let lake = tempfile::tempdir().unwrap();
    let out = billpipe(&[
        "run",
        "-q",
        "--source",
        "testdata/bucket",
        "--dest",
        lake.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    lake
}

fn no_lake_written(lake: &Path) {
    assert!(!lake.exists(), "{} was created", lake.display());
}

// Item 2: usage errors exit 2, checked before any work.

#[test]
fn a_mistyped_profile_is_a_usage_error_with_a_suggestion() {
    let out = billpipe(&[
        "validate",
        "--profile",
        "strcit",
        "testdata/bucket/billing/README.txt",
    ]);
    assert_fails(
        &out,
        2,
        "error: unknown --profile \"strcit\" (did you mean strict?); known: strict, strict-gate, tencent, tencent-l2, off, or a profile file ending in .toml",
    );
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let out = billpipe(&[
        "run",
        "--profile",
        "strcit",
        "--source",
        "testdata/bucket",
        "--dest",
        lake.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        first_line(&out).starts_with("error: unknown --profile \"strcit\" (did you mean strict?)")
    );
    no_lake_written(&lake);
    let out = billpipe(&["validate", "--profile", "no-such.toml", "x.csv"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        first_line(&out).starts_with("error: --profile no-such.toml: "),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unknown_focus_version_is_a_usage_error() {
    let out = billpipe(&["validate", "--focus-version", "1.4", "nope.csv"]);
    assert_fails(
        &out,
        2,
        "error: unknown --focus-version \"1.4\"; known: 1.0, 1.1, 1.2, 1.3",
    );
}

#[test]
fn state_without_dest_is_a_usage_error() {
    let out = billpipe(&["state"]);
    assert_fails(
        &out,
        2,
        "error: --dest is required: the lake (a local folder or s3://bucket[/prefix])",
    );
    assert!(
        out.stderr.contains("Usage: billpipe state"),
        "{}",
        out.stderr
    );
    let out = billpipe(&["state", "reset", "--all"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("Usage: billpipe state reset"),
        "{}",
        out.stderr
    );
}

#[test]
fn from_after_to_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    for cmd in ["run", "plan"] {
        let out = billpipe(&[
            cmd,
            "--source",
            "testdata/bucket",
            "--dest",
            lake.to_str().unwrap(),
            "--from",
            "2025-12",
            "--to",
            "2025-11",
        ]);
        assert_fails(
            &out,
            2,
            "error: --from 2025-12 is after --to 2025-11: no billing month is in range",
        );
    }
    no_lake_written(&lake);
}

#[test]
fn a_zstd_level_out_of_range_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let out = billpipe(&[
        "run",
        "--source",
        "testdata/bucket",
        "--dest",
        lake.to_str().unwrap(),
        "--zstd-level",
        "99",
    ]);
    assert_fails(
        &out,
        2,
        "error: invalid value '99' for '--zstd-level <ZSTD_LEVEL>': 99 is not in 1..=22",
    );
    no_lake_written(&lake);
}

#[test]
fn a_lake_inside_or_equal_to_its_source_is_a_usage_error() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path().to_str().unwrap();
    let inside = format!("{s}/lake");
    let out = billpipe(&["run", "--source", s, "--dest", &inside]);
    assert_fails(
        &out,
        2,
        &format!("error: --dest {inside} is inside --source {s}: the lake's own files would be listed as objects of the source on every run; put the lake elsewhere"),
    );
    no_lake_written(Path::new(&inside));
    // The same folder, spelled differently.
    let same = format!("{s}/./x/..");
    let out = billpipe(&["plan", "--source", s, "--dest", &same]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        first_line(&out).starts_with(&format!(
            "error: --dest {same} is the same place as --source {s}"
        )),
        "{}",
        out.stderr
    );
    let out = billpipe(&[
        "run",
        "--source",
        "s3://bills/focus",
        "--dest",
        "s3://bills/focus/lake",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(first_line(&out)
        .starts_with("error: --dest s3://bills/focus/lake is inside --source s3://bills/focus"));
}

// Item 3: state on a folder without a lake, reset without a filter, a filter matching nothing.

#[test]
fn state_of_a_folder_without_a_lake_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let nothing = dir.path().join("no-lake");
    let d = nothing.to_str().unwrap();
    let out = billpipe(&["state", "--dest", d]);
    assert_fails(
        &out,
        1,
        &format!("billpipe: error: no lake at {d}: it has no _billpipe/ledger.json (a lake is what `billpipe run --dest {d}` writes)"),
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn state_reset_needs_a_filter_or_all_and_says_when_nothing_matches() {
    let lake = example_lake();
    let d = lake.path().to_str().unwrap();
    let out = billpipe(&["state", "reset", "--dest", d]);
    assert_fails(
        &out,
        2,
        "error: state reset needs --account, --month (or both), or --all to reset every unit of the lake",
    );
    let out = billpipe(&["state", "reset", "--dest", d, "--month", "2024-01"]);
    assert_fails(
        &out,
        1,
        &format!("billpipe: error: nothing to reset: no loaded unit of {d} matches --month 2024-01 (`billpipe state --dest {d}` lists them)"),
    );
    let out = billpipe(&["state", "reset", "--dest", d, "--all"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("resetting 4 unit(s); the next run reloads them:"),
        "{}",
        out.stdout
    );
    let out = billpipe(&["state", "reset", "--dest", d, "--all", "--month", "2025-11"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

// Item 5: messages said once.

#[test]
fn a_missing_file_is_named_once_with_its_cause() {
    let out = billpipe(&["validate", "nope.csv"]);
    assert_fails(
        &out,
        1,
        "billpipe: error: validating nope.csv: nope.csv: No such file or directory (os error 2)",
    );
}

#[test]
fn a_single_file_as_source_says_what_source_takes() {
    let dir = tempfile::tempdir().unwrap();
    let file = "testdata/bucket/billing/focus/FOCUS-bill_details-200020002001-202511.CSV";
    let out = billpipe(&[
        "run",
        "--source",
        file,
        "--dest",
        dir.path().join("lake").to_str().unwrap(),
    ]);
    assert_fails(
        &out,
        2,
        &format!("error: --source {file} is a file; --source takes a folder or s3://bucket[/prefix] holding bill files (to check one file: billpipe validate {file})"),
    );
}

#[test]
fn a_stale_lock_takeover_is_said_once() {
    let lake = tempfile::tempdir().unwrap();
    // A pid that surely is dead, in this pid namespace: a child that has exited.
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let ns = billpipe::state::lock::pid_namespace().expect("/proc on the test machine");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let lock = serde_json::json!({
        "owner": "someone-else", "host": "some-host", "pid": pid, "command": "run",
        "started_at": now, "heartbeat_at": now, "pid_namespace": ns,
    });
    std::fs::create_dir_all(lake.path().join("_billpipe")).unwrap();
    std::fs::write(lake.path().join("_billpipe/lock.json"), lock.to_string()).unwrap();
    let out = billpipe(&[
        "run",
        "--source",
        "testdata/bucket",
        "--dest",
        lake.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("stale lock").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        first_line(&out).starts_with("billpipe: taking over a stale lock left by "),
        "{}",
        out.stderr
    );
}

// A closed stdout ends quietly, with the command's own exit code.

#[test]
fn a_closed_stdout_ends_quietly_with_the_commands_exit_code() {
    let lake = example_lake();
    let d = lake.path().to_str().unwrap();
    for args in [
        &["totals", "--dest", d, "--json"][..],
        &["totals", "--dest", d][..],
        &["state", "--dest", d][..],
    ] {
        // `| head -0`: the reader is gone before the first write, so every write fails (EPIPE).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let child = Command::new(bin())
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

// Item 4: help that fits the command.

#[test]
fn help_lists_only_flags_that_do_something_there() {
    let help = |args: &[&str]| {
        let out = billpipe(args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out.stdout
    };
    let plan = help(&["plan", "--help"]);
    assert!(
        plan.lines()
            .next()
            .unwrap_or("")
            .starts_with("Print what `run` would do with every object"),
        "{plan}"
    );
    for flag in [
        "--zstd-level",
        "--jobs",
        "--part-mb",
        "--profile",
        "--lock-timeout",
    ] {
        assert!(!plan.contains(flag), "plan --help lists {flag}:\n{plan}");
    }
    for cmd in [
        &["state", "--help"][..],
        &["state", "reset", "--help"],
        &["totals", "--help"],
        &["validate", "--help"],
    ] {
        let text = help(cmd);
        assert!(
            !text.contains("--part-mb"),
            "{cmd:?} lists --part-mb:\n{text}"
        );
    }
    let reset = help(&["state", "reset", "--help"]);
    assert!(
        reset.contains("--account <ACCOUNT>            Only units of this billing account"),
        "{reset}"
    );
    assert!(
        reset.contains("--month <MONTH>                Only units of this billing month (YYYY-MM)"),
        "{reset}"
    );
    let run = help(&["run", "--help"]);
    for shown in [
        "[default: 3]",
        "[default: 1]",
        "[default: 120]",
        "in MiB (at least 5) [default: 16]",
    ] {
        assert!(run.contains(shown), "run --help lacks {shown}:\n{run}");
    }
    // `plan` still takes `run`'s command line as it is.
    let dir = tempfile::tempdir().unwrap();
    let out = billpipe(&[
        "plan",
        "--source",
        "testdata/bucket",
        "--dest",
        dir.path().join("lake").to_str().unwrap(),
        "--zstd-level",
        "9",
        "--jobs",
        "2",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .ends_with("13 objects: 4 to ingest, 0 to replace, 9 to skip\n"),
        "{}",
        out.stdout
    );
}

// Item 1: S3 without credentials.

/// billpipe with no AWS credentials anywhere (environment, files, instance metadata).
fn without_credentials(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("BILLPIPE_LOG")
        .env("HOME", home.path())
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const NO_CREDENTIALS: &str = "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for COS: your SecretId and SecretKey), or a profile (AWS_PROFILE, ~/.aws/credentials); BILLPIPE_LOG=info (or run -v) shows where billpipe looked";

#[test]
fn s3_without_credentials_says_which_keys_to_give_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let l = lake.to_str().unwrap();
    for endpoint in [&["--endpoint", "http://127.0.0.1:9"][..], &[]] {
        let mut args = vec![
            "run",
            "--source",
            "s3://bills/focus",
            "--dest",
            l,
            "--region",
            "ap-guangzhou",
        ];
        args.extend_from_slice(endpoint);
        let out = without_credentials(&args);
        assert_fails(
            &out,
            1,
            &format!(
                "billpipe: error: run s3://bills/focus -> {l}: configuration: {NO_CREDENTIALS}"
            ),
        );
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "no SDK dumps:\n{}",
            out.stderr
        );
    }
    let out = without_credentials(&["state", "--dest", "s3://lake", "--region", "ap-guangzhou"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.ends_with(&format!("{NO_CREDENTIALS}\n")),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    // The chain's detail at -v.
    let out = without_credentials(&[
        "run",
        "-v",
        "--source",
        "s3://bills",
        "--dest",
        l,
        "--region",
        "ap-guangzhou",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("S3 credential chain: "),
        "{}",
        out.stderr
    );
    no_lake_written(&lake);
}

// Item 6: completions and manual pages from the same definitions as --help.

#[test]
fn completions_and_man_pages_are_generated_from_the_command_line() {
    let out = billpipe(&["completions", "bash"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().next(), Some("_billpipe() {"));
    assert!(out.stdout.contains("--zstd-level"), "run's flags complete");
    for shell in ["zsh", "fish"] {
        let out = billpipe(&["completions", shell]);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.stdout.contains("state"), "{shell}");
    }
    let out = billpipe(&["completions", "tcsh"]);
    assert_fails(&out, 2, "error: invalid value 'tcsh' for '<SHELL>'");

    let out = billpipe(&["man"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(".TH billpipe 1"), "{}", out.stdout);
    let out = billpipe(&["man", "run"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            ".TH billpipe-run 1  \"run {}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("zstd compression level"),
        "{}",
        out.stdout
    );
    let out = billpipe(&["man", "nope"]);
    assert_fails(&out, 2, "error: no command \"nope\"");
}

// Item 5: debug logging shows each object's decision and where its time went.

#[test]
fn debug_logging_shows_each_decision_and_its_stage_seconds() {
    let lake = tempfile::tempdir().unwrap();
    let out = common::billpipe_env(
        &[
            "run",
            "-q",
            "--source",
            "testdata/bucket",
            "--dest",
            lake.path().to_str().unwrap(),
        ],
        &[("BILLPIPE_LOG", "billpipe=debug")],
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    let key = "key=billing/focus/FOCUS-bill_details-200020002001-202511.CSV";
    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.ends_with(key)).collect();
    assert!(
        lines.iter().any(|l| l.contains(
            "DEBUG decision: ingest - first snapshot of tencent/200020002001/2025-11 (monthly final)"
        )),
        "{}",
        out.stderr
    );
    assert!(
        lines.iter().any(|l| l.contains("DEBUG stages: fetch ")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("DEBUG decision: skip - not a bill file"),
        "{}",
        out.stderr
    );
}
