//! Crash-test hook. With `BILLPIPE_FAULT_KILL_AT=<point>` in the environment, the process
//! SIGKILLs itself the first time it reaches that point (`fetch`, `write`, `checked`,
//! `publish`, `cleanup`, `ledger`), so tests can prove a kill anywhere leaves the lake
//! consistent. With `BILLPIPE_FAULT_PAUSE_AT=<point>` it waits a second there instead, every
//! time, so tests can make two commits overlap. Without the variables a point costs two
//! environment lookups. A leaf module: the read pipeline and the commit both mark their points
//! here.

pub fn point(name: &str) {
    if std::env::var("BILLPIPE_FAULT_PAUSE_AT").is_ok_and(|p| p == name) {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    if std::env::var("BILLPIPE_FAULT_KILL_AT").is_ok_and(|p| p == name) {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        // SIGKILL is delivered before `kill` returns; never go on past the point.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
}
