//! One writer per lake: a lock object in the destination (`_billpipe/lock.json`) naming its
//! owner (run id, host, pid) with a heartbeat the holder refreshes every `HEARTBEAT` seconds.
//!
//! A second run finds the lock and stops with a clear message (or waits, with `--wait`). A lock
//! whose heartbeat is older than the stale timeout (default 120 s), or whose owner is a dead
//! process on this very host, was left by a killed run and is taken over.
//!
//! Creating the lock is exclusive where the store allows it: a hard link on a local file system
//! (fails if the name exists), `PutObject` with `If-None-Match: *` on S3. Garage ignores
//! `If-None-Match`, and COS support is unverified: there, two runs starting within the same
//! second can both believe they hold the lock. billpipe re-reads the lock after writing it and
//! backs off if another owner's id is there, which narrows that window but cannot close it; on
//! such stores run one scheduler per lake. (It also looks before it writes, so it never
//! overwrites a live lock that is already there.)

use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::lake::Lake;
use crate::{Error, Result};

pub const LOCK_PATH: &str = "_billpipe/lock.json";
const HEARTBEAT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub owner: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub started_at: u64,
    pub heartbeat_at: u64,
}

#[derive(Debug, Clone)]
pub struct LockOptions {
    /// Wait for a live lock instead of failing.
    pub wait: bool,
    /// A heartbeat older than this marks the lock stale.
    pub stale_after: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        LockOptions {
            wait: false,
            stale_after: Duration::from_secs(120),
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// A held lock. Dropping it stops the heartbeat and removes the lock.
pub struct LakeLock {
    lake: Arc<dyn Lake>,
    info: LockInfo,
    /// Dropping it wakes the heartbeat thread and ends it.
    stop: Option<std::sync::mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LakeLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeLock")
            .field("info", &self.info)
            .finish()
    }
}

impl LockInfo {
    fn describe(&self) -> String {
        format!(
            "run {} on host {} (pid {}, `{}`), started {} s ago, last heartbeat {} s ago",
            self.owner,
            self.host,
            self.pid,
            self.command,
            now().saturating_sub(self.started_at),
            now().saturating_sub(self.heartbeat_at)
        )
    }

    fn is_stale(&self, stale_after: Duration) -> bool {
        if self.host == hostname() && !process_alive(self.pid) {
            return true;
        }
        now().saturating_sub(self.heartbeat_at) > stale_after.as_secs()
    }
}

/// Takes the lake's lock or explains who holds it.
pub fn acquire(lake: Arc<dyn Lake>, command: &str, options: &LockOptions) -> Result<LakeLock> {
    let owner = format!(
        "{:x}{:x}",
        now(),
        std::process::id() as u64
            ^ (SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0) as u64)
    );
    let mut info = LockInfo {
        owner,
        host: hostname(),
        pid: std::process::id(),
        command: command.to_string(),
        started_at: now(),
        heartbeat_at: now(),
    };
    loop {
        // Look first: on stores that ignore If-None-Match, creating would overwrite a live lock.
        match read(lake.as_ref())? {
            Some(held) if held.is_stale(options.stale_after) => {
                tracing::warn!("taking over a stale lock: {}", held.describe());
                eprintln!("billpipe: taking over a stale lock left by {}", held.describe());
                lake.delete(LOCK_PATH)?;
            }
            Some(held) if options.wait => {
                tracing::info!("waiting for the lock held by {}", held.describe());
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            Some(held) => {
                return Err(Error::Locked(format!(
                    "{} is locked by another billpipe {}; run again later, pass --wait to wait for it, or delete {LOCK_PATH} if you are sure no run is alive",
                    lake.uri(),
                    held.describe()
                )))
            }
            None => {}
        }
        info.heartbeat_at = now();
        let bytes = serde_json::to_vec_pretty(&info).map_err(|e| Error::Config(e.to_string()))?;
        if lake.create_new(LOCK_PATH, &bytes)? {
            if lake.exclusive_create() {
                return Ok(start(lake, info));
            }
            // Two runs that both found no lock may both have "created" it; the one whose id
            // does not read back steps aside.
            std::thread::sleep(Duration::from_millis(500));
            let now_there = read(lake.as_ref())?;
            if now_there.as_ref().map(|l| &l.owner) == Some(&info.owner) {
                return Ok(start(lake, info));
            }
        }
    }
}

fn read(lake: &dyn Lake) -> Result<Option<LockInfo>> {
    match lake.get(LOCK_PATH)? {
        None => Ok(None),
        // An unreadable lock (half written by a store without atomic PUT) counts as stale.
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or(LockInfo {
            owner: "unreadable".into(),
            host: "unknown".into(),
            pid: 0,
            command: String::new(),
            started_at: 0,
            heartbeat_at: 0,
        }))),
    }
}

/// Starts the heartbeat thread of a freshly taken lock.
fn start(lake: Arc<dyn Lake>, info: LockInfo) -> LakeLock {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let heartbeat = {
        let (lake, mut info) = (lake.clone(), info.clone());
        std::thread::Builder::new()
            .name("billpipe-lock".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                    info.heartbeat_at = now();
                    let written = serde_json::to_vec_pretty(&info)
                        .map_err(|e| Error::Config(e.to_string()))
                        .and_then(|b| lake.put(LOCK_PATH, &b));
                    if let Err(e) = written {
                        tracing::warn!("lock heartbeat failed: {e}");
                    }
                }
            })
            .ok()
    };
    LakeLock {
        lake,
        info,
        stop: Some(stop),
        heartbeat,
    }
}

impl LakeLock {
    pub fn info(&self) -> &LockInfo {
        &self.info
    }
}

impl Drop for LakeLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        if let Ok(Some(held)) = read(self.lake.as_ref()) {
            if held.owner == self.info.owner {
                let _ = self.lake.delete(LOCK_PATH);
            }
        }
    }
}
