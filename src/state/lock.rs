//! One writer per lake: a lock object in the destination (`_billpipe/lock.json`) naming its
//! owner (run id, host, pid) with a heartbeat the holder refreshes while it runs.
//!
//! A second run finds the lock and stops with a clear message (or waits, with `--wait`). The lock
//! is taken over only when its owner is certainly gone:
//!
//! - its pid is dead **in this pid namespace of this boot** (`/proc/sys/kernel/random/boot_id`
//!   plus `/proc/self/ns/pid`, recorded in the lock). A host name says nothing about pids in
//!   another container, and where `/proc` is missing (macOS) every pid would look dead, so
//!   without a matching namespace the pid is never consulted;
//! - or its heartbeat is more than the stale timeout (default 120 s) away from this clock — in
//!   the past (a killed run) or in the *future* (a clock that was or is ahead; without this bound
//!   such a lock would never turn stale) — **and** the lock does not change while this run
//!   watches it for one heartbeat period (at most [`WATCH_MAX`]). A live holder rewrites it
//!   within that time whatever its clock says, so a skewed but live lock is not taken over.
//!
//! The holder's side is a lease ([`crate::store::lake::Fence`]): every write of the run goes through the
//! lake handle's fence, which the lock opens when taken and renews with each heartbeat written.
//! The heartbeat reads the lock before rewriting it and never overwrites another owner's (or
//! re-creates a removed one): it marks the fence lost instead, and the run stops at its next
//! write. A lease not renewed for 3/4 of the stale timeout lapses for good, so a holder that
//! cannot heartbeat stops writing before anyone may take the lake over. (Clocks must agree within
//! the timeout for the ages to mean anything; the watch catches a live holder either way.)
//!
//! Creating the lock is exclusive where the store allows it: a hard link on a local file system
//! (fails if the name exists), `PutObject` with `If-None-Match: *` on S3. Garage ignores
//! `If-None-Match`, and COS support is unverified: there, two runs starting within the same
//! second can both believe they hold the lock. billpipe re-reads the lock after writing it (and
//! after every takeover, where two runs may have removed the same stale lock) and backs off if
//! another owner's id is there, which narrows that window but cannot close it; on such stores
//! run one scheduler per lake. (It also looks before it writes, so it never overwrites a live
//! lock that is already there.)

use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::lake::Lake;
use crate::{Error, Result};

/// The lock object (kept with the lake, whose fence lets only it be written without the lock).
pub use crate::store::lake::{LOCKS_DIR, LOCK_PATH};
/// The longest time between two heartbeats (shorter for short stale timeouts).
const HEARTBEAT_MAX: Duration = Duration::from_secs(15);
/// The longest a suspect lock is watched for a heartbeat before it is taken over.
pub const WATCH_MAX: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub owner: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub started_at: u64,
    pub heartbeat_at: u64,
    /// Boot id and pid namespace of the owner: its pid means something only where both match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
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

impl LockOptions {
    /// Time between heartbeats: an eighth of the stale timeout, within 250 ms ..= 15 s.
    fn heartbeat(&self) -> Duration {
        (self.stale_after / 8).clamp(Duration::from_millis(250), HEARTBEAT_MAX)
    }

    /// How long the holder may write after its last heartbeat: 3/4 of the stale timeout (at
    /// least four heartbeats), so it stops before others may call the lock stale.
    fn lease(&self) -> Duration {
        (self.stale_after * 3 / 4).max(self.heartbeat() * 4)
    }

    /// How long a suspect lock is watched for a heartbeat.
    fn watch(&self) -> Duration {
        self.stale_after.min(WATCH_MAX)
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

/// This process's boot id and pid namespace, where `/proc` tells them (Linux); `None` elsewhere.
pub fn pid_namespace() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

/// A held lock. Dropping it stops the heartbeat, closes the lake's fence, removes this run's
/// staging folder and removes the lock (if it is still this run's).
pub struct LakeLock {
    lake: Arc<Lake>,
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

/// What a lock found in the lake says about its owner.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Refreshed recently by this clock's reading: respect it.
    Live,
    /// Its owner process is dead (same pid namespace): take it over now.
    Dead,
    /// Its heartbeat is more than the timeout away from this clock: watch it before deciding.
    Suspect,
}

impl LockInfo {
    fn describe(&self) -> String {
        let t = now();
        let heartbeat = if self.heartbeat_at > t {
            format!(
                "last heartbeat {} s in the FUTURE of this clock (clock skew?)",
                self.heartbeat_at - t
            )
        } else {
            format!("last heartbeat {} s ago", t - self.heartbeat_at)
        };
        format!(
            "run {} on host {} (pid {}, `{}`), started {} s ago, {heartbeat}",
            self.owner,
            self.host,
            self.pid,
            self.command,
            t.saturating_sub(self.started_at),
        )
    }

    fn judge(&self, stale_after: Duration) -> Verdict {
        if let (Some(theirs), Some(ours)) = (&self.pid_namespace, pid_namespace()) {
            if *theirs == ours && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists() {
                return Verdict::Dead;
            }
        }
        let t = now();
        if t.abs_diff(self.heartbeat_at) > stale_after.as_secs() {
            Verdict::Suspect
        } else {
            Verdict::Live
        }
    }
}

/// Takes the lake's lock or explains who holds it. Once taken, the lake's fence is open and the
/// run's staging folder is ready (see `lake`).
pub fn acquire(lake: Arc<Lake>, command: &str, options: &LockOptions) -> Result<LakeLock> {
    let mut info = LockInfo {
        owner: lake.run_id().to_string(),
        host: hostname(),
        pid: std::process::id(),
        command: command.to_string(),
        started_at: now(),
        heartbeat_at: now(),
        pid_namespace: pid_namespace(),
    };
    loop {
        // Look first: on stores that ignore If-None-Match, creating would overwrite a live lock.
        let mut took_over = false;
        if let Some(bytes) = lake.get(lake.lock_path())? {
            let held = parse(&bytes);
            let verdict = match held.judge(options.stale_after) {
                Verdict::Suspect => match watch(lake.as_ref(), &bytes, options.watch())? {
                    Watched::Unchanged => Verdict::Dead,
                    Watched::Gone => continue,
                    Watched::Changed => Verdict::Live,
                },
                v => v,
            };
            match verdict {
                Verdict::Dead => {
                    // Remove exactly the lock judged, not one another run wrote meanwhile.
                    if lake.get(lake.lock_path())?.as_deref() != Some(bytes.as_slice()) {
                        continue;
                    }
                    // Said once, on stderr even with -q: a takeover is worth knowing about.
                    eprintln!("billpipe: taking over a stale lock left by {}", held.describe());
                    lake.delete(lake.lock_path())?;
                    took_over = true;
                }
                Verdict::Live | Verdict::Suspect if options.wait => {
                    tracing::info!("waiting for the lock held by {}", held.describe());
                    std::thread::sleep(Duration::from_secs(2));
                    continue;
                }
                Verdict::Live | Verdict::Suspect => {
                    return Err(Error::Locked(format!(
                        "{} is locked by another billpipe {}; run again later, pass --wait to wait for it, or delete {} if you are sure no run is alive",
                        lake.uri(),
                        held.describe(),
                        lake.lock_path()
                    )))
                }
            }
        }
        let taken = Instant::now();
        info.heartbeat_at = now();
        let bytes = serde_json::to_vec_pretty(&info).map_err(|e| Error::Config(e.to_string()))?;
        match lake.put_if_absent(lake.lock_path(), &bytes) {
            Ok(()) => {}
            // Someone else created it first: look again.
            Err(Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e),
        }
        if !lake.put_if_absent_is_exclusive() || took_over {
            // Two runs that both found no lock (or both removed the same stale one) may both
            // have "created" it; the one whose id does not read back steps aside.
            std::thread::sleep(Duration::from_millis(500));
            let now_there = lake.get(lake.lock_path())?.map(|b| parse(&b));
            if now_there.as_ref().map(|l| &l.owner) != Some(&info.owner) {
                continue;
            }
        }
        // Shards exclude the whole-lake run and it excludes them (shards never exclude each
        // other: their units are disjoint). Checked once our own lock is in place, so of two
        // runs starting together at least one sees the other.
        if let Some(other) = excluding(&lake, options)? {
            lake.delete(lake.lock_path())?;
            if options.wait {
                tracing::info!("waiting for {other}");
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
            return Err(Error::Locked(format!(
                "{} is being loaded by {other}; run again later or pass --wait to wait for it",
                lake.uri()
            )));
        }
        lake.fence().hold(taken, options.lease());
        let lock = start(lake, info, options);
        // Dropping the lock on failure closes the fence and releases the lock again.
        lock.lake.prepare_staging()?;
        return Ok(lock);
    }
}

/// What watching a suspect lock showed.
enum Watched {
    /// Rewritten meanwhile: its owner is alive, whatever its clock says.
    Changed,
    /// Removed meanwhile.
    Gone,
    /// The same bytes for the whole watch: nobody is heartbeating.
    Unchanged,
}

fn watch(lake: &Lake, seen: &[u8], how_long: Duration) -> Result<Watched> {
    let held = parse(seen);
    tracing::info!(
        "the lock's heartbeat is more than the stale timeout away from this clock; watching it for {} s: {}",
        how_long.as_secs_f64(),
        held.describe()
    );
    let until = Instant::now() + how_long;
    loop {
        match lake.get(lake.lock_path())? {
            None => return Ok(Watched::Gone),
            Some(b) if b != seen => return Ok(Watched::Changed),
            Some(_) if Instant::now() >= until => return Ok(Watched::Unchanged),
            Some(_) => {}
        }
        std::thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500)),
        );
    }
}

/// A live run this one must not load beside: for a shard, a whole-lake run or a shard of
/// another split (`--shard 0/1` beside `--shard 0/2`: their units overlap, e.g. an Indexed Job
/// whose completions changed while an old pod is retried); for a whole-lake run, any shard.
/// Locks whose owner is dead are ignored (their next run takes them over).
fn excluding(lake: &Lake, options: &LockOptions) -> Result<Option<String>> {
    let live = |bytes: &[u8]| {
        let held = parse(bytes);
        (!matches!(held.judge(options.stale_after), Verdict::Dead)).then(|| held.describe())
    };
    if let Some(scope) = lake.scope() {
        if let Some(who) = lake.get(LOCK_PATH)?.and_then(|b| live(&b)) {
            return Ok(Some(format!("a whole-lake {who}")));
        }
        let split = |label: &str| label.rsplit_once("-of-").map(|(_, n)| n.to_string());
        for (path, _) in lake.list(&format!("{LOCKS_DIR}/"))? {
            let name = path.rsplit('/').next().unwrap_or(&path);
            // Only locks: a lock being written is a `.tmp` file beside them, for a moment.
            let Some(label) = name.strip_suffix(".json") else {
                continue;
            };
            if split(label) == split(scope) {
                continue;
            }
            if let Some(who) = lake.get(&path)?.and_then(|b| live(&b)) {
                return Ok(Some(format!(
                    "a sharded {who} ({label}, another split than {scope}: their units overlap)"
                )));
            }
        }
        return Ok(None);
    }
    for (path, _) in lake.list(&format!("{LOCKS_DIR}/"))? {
        if let Some(who) = lake.get(&path)?.and_then(|b| live(&b)) {
            let shard = path
                .rsplit('/')
                .next()
                .unwrap_or(&path)
                .trim_end_matches(".json");
            return Ok(Some(format!("a sharded {who} ({shard})")));
        }
    }
    Ok(None)
}

/// A lock's content. An unreadable one (half written by a store without atomic PUT) reads as a
/// lock with no heartbeat: suspect, taken over only if it stays the same while watched.
fn parse(bytes: &[u8]) -> LockInfo {
    serde_json::from_slice(bytes).unwrap_or(LockInfo {
        owner: "unreadable".into(),
        host: "unknown".into(),
        pid: 0,
        command: String::new(),
        started_at: 0,
        heartbeat_at: 0,
        pid_namespace: None,
    })
}

fn read(lake: &Lake) -> Result<Option<LockInfo>> {
    Ok(lake.get(lake.lock_path())?.map(|b| parse(&b)))
}

/// One heartbeat: rewrites the lock if it is still ours and the lease has not lapsed; marks the
/// fence lost otherwise. `false` when the lock is lost for good.
fn beat(lake: &Lake, info: &mut LockInfo) -> bool {
    let fence = lake.fence();
    let checked = Instant::now();
    if fence.lapsed() {
        fence.lose("no heartbeat could be written within the lease".into());
        return false;
    }
    match read(lake) {
        Ok(Some(held)) if held.owner == info.owner => {}
        Ok(Some(held)) => {
            let why = format!("taken over by {}", held.describe());
            tracing::error!("lost the lake's lock: {why}");
            fence.lose(why);
            return false;
        }
        Ok(None) => {
            // Re-creating it could overwrite a run that is taking it over right now.
            tracing::error!("lost the lake's lock: {} was removed", lake.lock_path());
            fence.lose(format!("{} was removed by someone else", lake.lock_path()));
            return false;
        }
        Err(e) => {
            tracing::warn!("lock heartbeat could not read the lock: {e}");
            return true;
        }
    }
    info.heartbeat_at = now();
    let written = serde_json::to_vec_pretty(&info)
        .map_err(|e| Error::Config(e.to_string()))
        .and_then(|b| lake.put(lake.lock_path(), &b));
    match written {
        Ok(()) => fence.renew(checked),
        Err(e) => {
            tracing::warn!("lock heartbeat failed: {e}");
            true
        }
    }
}

/// Starts the heartbeat thread of a freshly taken lock.
fn start(lake: Arc<Lake>, info: LockInfo, options: &LockOptions) -> LakeLock {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let period = options.heartbeat();
    let heartbeat = {
        let (lake, mut info) = (lake.clone(), info.clone());
        std::thread::Builder::new()
            .name("billpipe-lock".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                    if !beat(lake.as_ref(), &mut info) {
                        break;
                    }
                }
            })
            .ok()
    };
    if heartbeat.is_none() {
        // Without a heartbeat the lease lapses and the run stops at its first write after it.
        tracing::error!("could not start the lock's heartbeat thread");
    }
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

    /// `Ok` while this run still holds the lock (see [`crate::store::lake::Fence::check`]).
    pub fn check(&self) -> Result<()> {
        self.lake.fence().check("the lake")
    }
}

impl Drop for LakeLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        self.lake.release_staging();
        self.lake.fence().close();
        if let Ok(Some(held)) = read(self.lake.as_ref()) {
            if held.owner == self.info.owner {
                let _ = self.lake.delete(self.lake.lock_path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(heartbeat_at: u64, pid: u32, ns: Option<String>) -> LockInfo {
        LockInfo {
            owner: "o".into(),
            host: "h".into(),
            pid,
            command: "run".into(),
            started_at: heartbeat_at,
            heartbeat_at,
            pid_namespace: ns,
        }
    }

    #[test]
    fn heartbeats_far_from_this_clock_either_way_are_suspect() {
        let t = Duration::from_secs(120);
        let me = std::process::id();
        assert_eq!(lock(now(), me, None).judge(t), Verdict::Live);
        assert_eq!(lock(now() + 100, me, None).judge(t), Verdict::Live);
        assert_eq!(lock(now() - 600, me, None).judge(t), Verdict::Suspect);
        assert_eq!(lock(now() + 86_400, me, None).judge(t), Verdict::Suspect);
    }

    #[test]
    fn a_pid_counts_only_in_the_same_namespace() {
        let t = Duration::from_secs(120);
        let dead = 999_999_999;
        // No namespace recorded (another OS, an older billpipe) or another one: the pid says
        // nothing, the fresh heartbeat keeps the lock live.
        assert_eq!(lock(now(), dead, None).judge(t), Verdict::Live);
        assert_eq!(
            lock(now(), dead, Some("other-boot/pid:[1]".into())).judge(t),
            Verdict::Live
        );
        if let Some(ns) = pid_namespace() {
            assert_eq!(lock(now(), dead, Some(ns.clone())).judge(t), Verdict::Dead);
            assert_eq!(
                lock(now(), std::process::id(), Some(ns)).judge(t),
                Verdict::Live
            );
        }
    }

    #[test]
    fn the_lease_ends_before_others_may_call_the_lock_stale() {
        for secs in [0, 1, 3, 10, 120, 3600] {
            let o = LockOptions {
                wait: false,
                stale_after: Duration::from_secs(secs),
            };
            assert!(o.heartbeat() * 4 <= o.lease());
            if secs >= 2 {
                assert!(o.lease() < o.stale_after, "{secs}");
            }
        }
    }
}
