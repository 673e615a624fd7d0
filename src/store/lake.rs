//! Where the lake lives: a [`Store`] (a local folder or an S3 prefix) plus what writing a lake
//! needs beyond storage: the lock's fence, the run's staging folder, and path limits.
//!
//! The lake's one promise is that replacing an object is atomic: a reader sees the old bytes or
//! the new ones, never a mix and never nothing. Locally that is a rename within one file system
//! (staging lives in `<dest>/_billpipe/staging/` for that reason); on S3 it is a PUT or a
//! CompleteMultipartUpload, both of which make the new object visible at once.
//!
//! Only the holder of the lake's lock writes (see `lock`), and this module enforces it rather
//! than trusting callers: every handle carries a [`Fence`] that the lock opens when it is taken
//! and closes when it is released or lost. Until then `publish`, `put`, `delete` and
//! `put_if_absent` refuse with [`Error::Locked`] — except on the lock object itself, which the lock
//! protocol governs. A run that finds the lake locked has therefore touched nothing: not
//! staging, not the ledger, not a partition.
//!
//! Staging is per run: each handle has a run id (also its lock's owner id) and stages under
//! `<dest>/_billpipe/staging/<run id>/` (local lakes) or `<temp>/billpipe-staging-<lake>-<run
//! id>/` (S3 lakes; `<lake>` is a hash of the lake's URI). The folder is made once the lock is
//! held, and the same step removes every other run's folder of this lake: a run that does not
//! hold the lock cannot be staging (it has not taken the lock yet, or it was killed, or it lost
//! the lock and is fenced off), so what it left is garbage — including parquet files and zip
//! spills of runs killed mid-way, which can be gigabytes. The folder is removed when the lock
//! is released.
//!
//! A local lake also sets aside the files its commits replace (hard links in
//! `_billpipe/replaced/<run id>/`, freed by the next run that takes a lock; see `set_aside`), so
//! renaming over them does not wait for the device to free their blocks.
//!
//! Paths are checked before anything of a snapshot is published ([`Lake::check_path`]): every
//! segment at most 255 bytes (the common file-name limit, kept on S3 too so a lake can be
//! copied to disk), no empty, `.` or `..` segment, and on S3 a key of at most 1,024 bytes. A path
//! that fails is that object's problem, reported as its rejection, and nothing of it is written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::local::{LocalStore, TMP_SUFFIX};
use super::s3::{S3Context, S3Location, S3Store};
use super::set_aside::SetAside;
use super::Store;
use crate::{Error, Result};

/// The longest path segment most file systems accept (ext4, xfs, apfs, ntfs: 255 bytes).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// The longest S3 object key.
/// The lake's lock object (see `state::lock`): the one path written without holding the lock,
/// by the lock protocol itself.
pub const LOCK_PATH: &str = "_billpipe/lock.json";
/// Where sharded runs' locks are (`shard-I-of-N.json`, see `state::shard`).
pub const LOCKS_DIR: &str = "_billpipe/locks";

/// Whether `rel` is a lock object, which the lock protocol writes before the fence opens.
fn is_lock_path(rel: &str) -> bool {
    rel == LOCK_PATH
        || rel
            .strip_prefix(LOCKS_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|name| !name.contains('/') && name.ends_with(".json"))
}
const MAX_S3_KEY_BYTES: usize = 1024;
/// Name prefix of S3 lakes' staging folders in the temp dir.
const S3_STAGING_PREFIX: &str = "billpipe-staging-";
/// A small file (`put`, `put_if_absent`) is written beside its target under a `.tmp` name and
/// renamed over it; one older than this was left by a killed writer.
const SMALL_TMP_STALE: Duration = Duration::from_secs(600);

/// A lake: the store it is written to, and this run's fence and staging.
pub struct Lake {
    store: Arc<dyn Store>,
    run_id: String,
    fence: Fence,
    /// This run's staging folder.
    staging: PathBuf,
    /// Where the other runs' staging folders are, to clear them.
    others: Staging,
    /// On S3: the bytes of the lake's key prefix, which count towards the key limit.
    key_prefix_bytes: Option<usize>,
    /// The lock this handle takes: the lake's, or a shard's (see [`Lake::for_shard`]).
    lock_path: String,
    /// `shard-I-of-N` for a sharded run's handle.
    scope: Option<String>,
    /// Local lakes: files about to be replaced are linked aside, and freed by the next run
    /// (see `set_aside`).
    set_aside: Option<SetAside>,
}

/// Where a lake's runs stage.
enum Staging {
    /// A local lake: `<root>/_billpipe/staging/<run id>`, beside the lake so publishing is a
    /// rename; small `.tmp` files of killed writers are in `<root>/_billpipe`.
    InLake { base: PathBuf, meta: PathBuf },
    /// Any other lake: `<temp>/<prefix><run id>`.
    Temp { prefix: String },
}

/// Opens `--dest`: `s3://bucket/prefix` or a local folder (created if missing).
/// `writable: false` (for `plan`) creates nothing. Opening never touches staging, the ledger or
/// a partition: that waits for the lock.
pub fn open(uri: &str, writable: bool, s3: impl FnOnce() -> Result<S3Context>) -> Result<Lake> {
    match S3Location::parse(uri) {
        Some(location) => Ok(Lake::s3(location, s3()?)),
        None if uri.starts_with("s3://") => Err(Error::Config(format!("bad S3 URI {uri:?}"))),
        None => Lake::local(PathBuf::from(uri), writable),
    }
}

impl Lake {
    /// A lake in a local folder, created if `writable`.
    pub fn local(root: PathBuf, writable: bool) -> Result<Lake> {
        if writable {
            std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        }
        let run_id = new_run_id();
        let base = root.join("_billpipe").join("staging");
        Ok(Lake {
            staging: base.join(&run_id),
            others: Staging::InLake {
                base,
                meta: root.join("_billpipe"),
            },
            set_aside: Some(SetAside::new(&root, &run_id)),
            store: Arc::new(LocalStore::new(root, &run_id)),
            run_id,
            fence: Fence::default(),
            key_prefix_bytes: None,
            lock_path: LOCK_PATH.into(),
            scope: None,
        })
    }

    /// A lake under an S3 prefix.
    pub fn s3(location: S3Location, ctx: S3Context) -> Lake {
        let key_prefix_bytes = Some(location.prefix.len());
        let mut lake = Lake::new(Arc::new(S3Store::new(location, ctx)));
        lake.key_prefix_bytes = key_prefix_bytes;
        lake
    }

    /// A lake in any store, staging in the temp dir (as S3 lakes do).
    pub fn new(store: Arc<dyn Store>) -> Lake {
        let run_id = new_run_id();
        // Runs of other lakes on this machine stage beside ours: only this lake's are ours to
        // clear. 64 bits of the URI's hash tell lakes apart.
        let lake = crate::partition::stable_hash(store.uri().as_bytes()) as u64;
        let prefix = format!("{S3_STAGING_PREFIX}{lake:016x}-");
        Lake {
            staging: std::env::temp_dir().join(format!("{prefix}{run_id}")),
            others: Staging::Temp { prefix },
            store,
            run_id,
            fence: Fence::default(),
            key_prefix_bytes: None,
            lock_path: LOCK_PATH.into(),
            scope: None,
            set_aside: None,
        }
    }

    /// The handle of one shard of a sharded run (`scope` is `shard-I-of-N`): it takes the
    /// shard's own lock (`_billpipe/locks/<scope>.json`) and stages in a folder of the shard's
    /// own, so shards neither wait for each other nor clear each other's staging. (Unsharded
    /// runs leave shards' staging alone; a shard clears only its own earlier runs'.)
    pub fn for_shard(mut self, scope: &str) -> Lake {
        self.lock_path = format!("{LOCKS_DIR}/{scope}.json");
        self.scope = Some(scope.to_string());
        match &mut self.others {
            Staging::InLake { base, .. } => {
                *base = base.join(scope);
                self.staging = base.join(&self.run_id);
            }
            Staging::Temp { prefix } => {
                prefix.push_str(&format!("{scope}-"));
                self.staging = std::env::temp_dir().join(format!("{prefix}{}", self.run_id));
            }
        }
        self
    }

    /// The lock object this handle takes.
    pub fn lock_path(&self) -> &str {
        &self.lock_path
    }

    /// `shard-I-of-N` for a shard's handle, `None` for the whole lake's.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn uri(&self) -> String {
        self.store.uri()
    }

    /// This handle's run id: the name of its staging folder and its lock's owner id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// What lets this handle write: opened by the lock while it is held (see [`Fence`]).
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// This run's local folder for files about to be published; it exists once the lock is
    /// held (see [`Lake::prepare_staging`]).
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Makes this run's staging folder and removes what other runs left behind. Called by the
    /// lock once it is held; refused otherwise.
    pub fn prepare_staging(&self) -> Result<()> {
        self.fence.check("the staging folder")?;
        std::fs::create_dir_all(&self.staging).map_err(|e| Error::io(&self.staging, e))?;
        match &self.others {
            Staging::InLake { base, meta } => {
                // Every other entry is a killed or fenced-off run's (or an older billpipe's
                // loose files): no run that lacks the lock may be staging.
                let entries = std::fs::read_dir(base).map_err(|e| Error::io(base, e))?;
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    // Shards' staging folders are theirs to clear (run ids never start so).
                    if name != self.run_id && !name.starts_with("shard-") {
                        remove_any(&e.path());
                    }
                }
                // Small files of writers killed between write and rename (old ones only: a run
                // taking the lock right now writes its lock file this way, and a shard may be
                // writing a journal entry): the lock, the ledger, its journal, shard locks,
                // commits' intents.
                let folders =
                    ["", "ledger", "ledger/journal", "locks", "publishing"].map(|f| meta.join(f));
                for listing in folders.iter().filter_map(|f| std::fs::read_dir(f).ok()) {
                    for e in listing.flatten() {
                        let old = e
                            .metadata()
                            .ok()
                            .and_then(|m| m.modified().ok())
                            .and_then(|t| t.elapsed().ok())
                            .is_some_and(|age| age > SMALL_TMP_STALE);
                        if old && e.file_name().to_string_lossy().ends_with(TMP_SUFFIX) {
                            remove_any(&e.path());
                        }
                    }
                }
                if let Some(set_aside) = &self.set_aside {
                    set_aside.start_freeing();
                }
            }
            Staging::Temp { prefix } => {
                let ours = self
                    .staging
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let temp = std::env::temp_dir();
                let entries = std::fs::read_dir(&temp).map_err(|e| Error::io(&temp, e))?;
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    // This lake's other runs do not hold its lock: killed, or fenced off.
                    let other_run = name
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|run| !run.starts_with("shard-"));
                    if (other_run && name != ours) || legacy_staging_is_dead(&name) {
                        remove_any(&e.path());
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes this run's staging folder (when the lock is released), once earlier runs'
    /// replaced files are freed.
    pub fn release_staging(&self) {
        if let Some(set_aside) = &self.set_aside {
            set_aside.wait();
        }
        let _ = std::fs::remove_dir_all(&self.staging);
    }

    /// `Ok` if `rel` can be written to this lake; a rejection naming the problem otherwise.
    pub fn check_path(&self, rel: &str) -> Result<()> {
        check_rel_path(rel, self.key_prefix_bytes)
    }

    /// Moves a staged file to `rel` (a path relative to the lake root), replacing atomically.
    pub fn publish(&self, staged: &Path, rel: &str) -> Result<()> {
        self.fence.check_rel(rel)?;
        self.store.put_file(staged, rel)
    }

    /// Publishes many staged files (see [`Store::put_files`]): `published(i)` once file `i` is
    /// in place. The fence is checked before the first and after each, so a run that loses the
    /// lock stops publishing.
    pub fn publish_all(
        &self,
        files: &[(PathBuf, String)],
        published: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<()> {
        for (_, rel) in files {
            self.fence.check_rel(rel)?;
        }
        self.store.put_files(files, &mut |i| {
            published(i)?;
            self.fence.check_rel(&files[i].1)
        })
    }

    /// Before files at `rels` are replaced by publishing: a local lake links them aside, so
    /// the renames over them do not wait for the device to free them; the next run frees them
    /// (see `set_aside`). Other lakes replace in the store, and need nothing.
    pub fn set_aside<'a>(&self, rels: impl Iterator<Item = &'a str>) {
        if let Some(set_aside) = &self.set_aside {
            set_aside.before_replacing(rels);
        }
    }

    /// Writes small bytes (the ledger) to `rel`, replacing atomically.
    pub fn put(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        self.fence.check_rel(rel)?;
        self.store.put_bytes(rel, bytes)
    }

    /// Writes `rel` only if it does not exist yet; [`Error::AlreadyExists`] if it did.
    /// (Exclusive locally; on S3 as exclusive as the store's `If-None-Match` support, see
    /// [`Lake::put_if_absent_is_exclusive`] and `lock`.)
    pub fn put_if_absent(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        self.fence.check_rel(rel)?;
        self.store.put_if_absent(rel, bytes)
    }

    /// Whether `put_if_absent` is truly exclusive on this store.
    pub fn put_if_absent_is_exclusive(&self) -> bool {
        self.store.put_if_absent_is_exclusive()
    }

    /// Reads `rel`, or `None` if it does not exist.
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        self.store.get_bytes(rel)
    }

    pub fn delete(&self, rel: &str) -> Result<()> {
        self.fence.check_rel(rel)?;
        self.store.delete(rel)
    }

    /// Relative paths and sizes of every object under `rel_prefix`.
    pub fn list(&self, rel_prefix: &str) -> Result<Vec<(String, u64)>> {
        Ok(self
            .store
            .list(rel_prefix)?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect())
    }
}

/// So `lake.as_ref()` reads the same whether a caller holds a `Lake` or an `Arc<Lake>`.
impl AsRef<Lake> for Lake {
    fn as_ref(&self) -> &Lake {
        self
    }
}

impl Drop for Lake {
    fn drop(&mut self) {
        if let Some(set_aside) = &self.set_aside {
            set_aside.wait();
        }
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// A fresh run id: seconds since the epoch, pid and sub-second nanoseconds, in hex (safe as a
/// file name, unique per process and per start).
pub fn new_run_id() -> String {
    static STARTED: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:x}-{:x}-{:x}{:x}",
        t.as_secs(),
        std::process::id(),
        t.subsec_nanos(),
        STARTED.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a handle may write: the lock's lease, seen from the writing side.
///
/// The lock opens the fence when it is taken ([`Fence::hold`]) and renews it with every
/// heartbeat it writes. The lease is shorter than the time after which other runs may call the
/// lock stale, so a run whose heartbeats stopped (a stalled store, a paused machine) stops
/// writing before anyone may take the lake over — a lease that lapsed is never renewed. A
/// heartbeat that finds another owner's lock (or none) marks the fence lost. A write already
/// under way (one large upload) is not interrupted; the next one is refused.
#[derive(Debug)]
pub struct Fence {
    state: Mutex<FenceState>,
}

#[derive(Debug, Clone)]
enum FenceState {
    /// The lock is not held (yet, or any more).
    Closed,
    /// Held: writes are allowed until `renewed + lease`.
    Held { renewed: Instant, lease: Duration },
    /// Another run took the lock over, or the lease lapsed.
    Lost(String),
}

impl Default for Fence {
    fn default() -> Self {
        Fence {
            state: Mutex::new(FenceState::Closed),
        }
    }
}

impl Fence {
    fn with<T>(&self, f: impl FnOnce(&mut FenceState) -> T) -> T {
        match self.state.lock() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The lock was taken at `renewed` (checked just before it was written).
    pub fn hold(&self, renewed: Instant, lease: Duration) {
        self.with(|s| *s = FenceState::Held { renewed, lease });
    }

    /// A heartbeat checked at `at` was written. `false` if the lease had lapsed or was lost
    /// before: then it stays so.
    pub fn renew(&self, at: Instant) -> bool {
        self.with(|s| match s {
            FenceState::Held { renewed, lease } if renewed.elapsed() <= *lease => {
                *renewed = at.max(*renewed);
                true
            }
            _ => false,
        })
    }

    /// Whether the lease has lapsed (no heartbeat written for longer than the lease).
    pub fn lapsed(&self) -> bool {
        self.with(
            |s| matches!(s, FenceState::Held { renewed, lease } if renewed.elapsed() > *lease),
        )
    }

    /// The lock was lost: no write of this handle is allowed any more.
    pub fn lose(&self, why: String) {
        self.with(|s| {
            if !matches!(s, FenceState::Lost(_)) {
                *s = FenceState::Lost(why)
            }
        });
    }

    /// The lock was released.
    pub fn close(&self) {
        self.with(|s| {
            if matches!(s, FenceState::Held { .. }) {
                *s = FenceState::Closed
            }
        });
    }

    /// `Ok` while the lock is held and its lease valid.
    pub fn check(&self, what: &str) -> Result<()> {
        let state = self.with(|s| s.clone());
        match state {
            FenceState::Held { renewed, lease } if renewed.elapsed() <= lease => Ok(()),
            FenceState::Held { renewed, .. } => Err(Error::Locked(format!(
                "refusing to write {what}: this run's lock could not be refreshed for {} s, so \
                 another run may have taken the lake over; stopping",
                renewed.elapsed().as_secs()
            ))),
            FenceState::Lost(why) => Err(Error::Locked(format!(
                "refusing to write {what}: this run lost the lake's lock ({why})"
            ))),
            FenceState::Closed => Err(Error::Locked(format!(
                "refusing to write {what}: this run does not hold the lake's lock"
            ))),
        }
    }

    /// The fence guards every path but the lock object, which the lock protocol itself governs.
    fn check_rel(&self, rel: &str) -> Result<()> {
        if is_lock_path(rel) {
            Ok(())
        } else {
            self.check(rel)
        }
    }
}

/// Checks a lake-relative path: segments of 1..=255 bytes, none `.` or `..`, and on S3 a key
/// (with the lake's prefix) of at most 1,024 bytes.
fn check_rel_path(rel: &str, key_prefix_bytes: Option<usize>) -> Result<()> {
    let reject = |why: String| Err(Error::rejected(format!("output path {rel:?}: {why}")));
    for seg in rel.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return reject(format!("segment {seg:?} is not a name"));
        }
        if seg.len() > MAX_SEGMENT_BYTES {
            return reject(format!(
                "a segment is {} bytes, over the {MAX_SEGMENT_BYTES}-byte file-name limit",
                seg.len()
            ));
        }
    }
    if let Some(prefix) = key_prefix_bytes {
        if prefix + rel.len() > MAX_S3_KEY_BYTES {
            return reject(format!(
                "the S3 key would be {} bytes, over the {MAX_S3_KEY_BYTES}-byte limit",
                prefix + rel.len()
            ));
        }
    }
    Ok(())
}

/// Removes a file or a folder tree; a name already gone is no error.
fn remove_any(path: &Path) {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return,
    };
    match removed {
        Ok(()) => tracing::info!(
            "removed {}, left by a run that no longer holds the lock",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("could not remove {}: {e}", path.display()),
    }
}

/// Whether a staging folder of billpipe 0.1 (`billpipe-staging-<pid>`, one per process) was
/// left by a process that is gone. Only where `/proc` shows this namespace's processes; anywhere
/// else it is left alone.
fn legacy_staging_is_dead(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix(S3_STAGING_PREFIX)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    else {
        return false;
    };
    Path::new("/proc/self").exists() && !Path::new("/proc").join(pid).exists()
}

#[cfg(test)]
#[path = "lake_tests.rs"]
mod tests;
