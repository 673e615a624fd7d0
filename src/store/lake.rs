//! Where the lake lives: a local folder or an S3 prefix, behind one small trait.
//!
//! The lake's one promise is that replacing an object is atomic: a reader sees the old bytes or
//! the new ones, never a mix and never nothing. Locally that is a rename within one file system
//! (staging lives in `<dest>/_billpipe/staging/` for that reason); on S3 it is a PUT or a
//! CompleteMultipartUpload, both of which make the new object visible at once.
//!
//! Only the holder of the lake's lock writes (see `lock`), and this module enforces it rather
//! than trusting callers: every handle carries a [`Fence`] that the lock opens when it is taken
//! and closes when it is released or lost. Until then `publish`, `put`, `delete` and
//! `create_new` refuse with [`Error::Locked`] — except on the lock object itself, which the lock
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
//! Paths are checked before anything of a snapshot is published ([`Lake::check_path`]): every
//! segment at most 255 bytes (the common file-name limit, kept on S3 too so a lake can be
//! copied to disk), no empty, `.` or `..` segment, and on S3 a key of at most 1,024 bytes. A path
//! that fails is that object's problem, reported as its rejection, and nothing of it is written.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::byte_stream::Length;

use crate::state::lock::LOCK_PATH;
use crate::store::s3::{describe, S3Context, S3Location};
use crate::{Error, Result};

/// Files above this go up in parts of this size, unless `S3Options::part_bytes` says otherwise.
const MULTIPART_BYTES: u64 = 16 << 20;
const MIN_PART_BYTES: u64 = 5 << 20;
/// The longest path segment most file systems accept (ext4, xfs, apfs, ntfs: 255 bytes).
pub const MAX_SEGMENT_BYTES: usize = 255;
/// The longest S3 object key.
const MAX_S3_KEY_BYTES: usize = 1024;
/// Name prefix of S3 lakes' staging folders in the temp dir.
const S3_STAGING_PREFIX: &str = "billpipe-staging-";
/// A small file (`put`, `create_new`) is written beside its target under this suffix and renamed
/// over it; one older than this was left by a killed writer.
const SMALL_TMP_SUFFIX: &str = ".tmp";
const SMALL_TMP_STALE: Duration = Duration::from_secs(600);

pub trait Lake: Send + Sync {
    fn uri(&self) -> String;
    /// This handle's run id: the name of its staging folder and its lock's owner id.
    fn run_id(&self) -> &str;
    /// What lets this handle write: opened by the lock while it is held (see [`Fence`]).
    fn fence(&self) -> &Fence;
    /// This run's local folder for files about to be published; it exists once the lock is
    /// held (see [`Lake::prepare_staging`]).
    fn staging(&self) -> &Path;
    /// Makes this run's staging folder and removes what other runs left behind. Called by the
    /// lock once it is held; refused otherwise.
    fn prepare_staging(&self) -> Result<()>;
    /// Removes this run's staging folder (when the lock is released).
    fn release_staging(&self) {
        let _ = std::fs::remove_dir_all(self.staging());
    }
    /// `Ok` if `rel` can be written to this lake; a rejection naming the problem otherwise.
    fn check_path(&self, rel: &str) -> Result<()>;
    /// Moves a staged file to `rel` (a path relative to the lake root), replacing atomically.
    fn publish(&self, staged: &Path, rel: &str) -> Result<()>;
    /// Writes small bytes (the ledger) to `rel`, replacing atomically.
    fn put(&self, rel: &str, bytes: &[u8]) -> Result<()>;
    /// Writes `rel` only if it does not exist yet; `false` if it did. (Exclusive locally;
    /// on S3 as exclusive as the store's `If-None-Match` support, see `lock`.)
    fn create_new(&self, rel: &str, bytes: &[u8]) -> Result<bool>;
    /// Whether `create_new` is truly exclusive on this store.
    fn exclusive_create(&self) -> bool;
    /// Reads `rel`, or `None` if it does not exist.
    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>>;
    fn delete(&self, rel: &str) -> Result<()>;
    /// Relative paths and sizes of every object under `rel_prefix`.
    fn list(&self, rel_prefix: &str) -> Result<Vec<(String, u64)>>;
}

/// Opens `--dest`: `s3://bucket/prefix` or a local folder (created if missing).
/// `writable: false` (for `plan`) creates nothing. Opening never touches staging, the ledger or
/// a partition: that waits for the lock.
pub fn open(
    uri: &str,
    writable: bool,
    s3: impl FnOnce() -> Result<S3Context>,
) -> Result<Box<dyn Lake>> {
    match S3Location::parse(uri) {
        Some(location) => Ok(Box::new(S3Lake::new(location, s3()?)?)),
        None if uri.starts_with("s3://") => Err(Error::Config(format!("bad S3 URI {uri:?}"))),
        None => Ok(Box::new(LocalLake::new(PathBuf::from(uri), writable)?)),
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
        if rel == LOCK_PATH {
            Ok(())
        } else {
            self.check(rel)
        }
    }
}

/// Checks a lake-relative path: segments of 1..=255 bytes, none `.` or `..`, and on S3 a key
/// (with the lake's prefix) of at most 1,024 bytes.
fn check_rel_path(rel: &str, key_prefix_bytes: Option<usize>) -> Result<()> {
    let reject = |why: String| Err(Error::Rejected(format!("output path {rel:?}: {why}")));
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

pub struct LocalLake {
    root: PathBuf,
    run_id: String,
    /// `<root>/_billpipe/staging`: every run's staging folder is in here.
    staging_base: PathBuf,
    /// `<staging_base>/<run id>`
    staging: PathBuf,
    fence: Fence,
    counter: AtomicU64,
}

impl LocalLake {
    pub fn new(root: PathBuf, writable: bool) -> Result<LocalLake> {
        if writable {
            std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        }
        let run_id = new_run_id();
        let staging_base = root.join("_billpipe").join("staging");
        Ok(LocalLake {
            staging: staging_base.join(&run_id),
            staging_base,
            root,
            run_id,
            fence: Fence::default(),
            counter: Default::default(),
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes bytes to a uniquely named file beside `target` (same folder, so the rename is
    /// atomic; not in staging, which a run may only use once it holds the lock).
    fn small_file(&self, target: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let dir = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staged = dir.join(format!("{name}.{}.{n}{SMALL_TMP_SUFFIX}", self.run_id));
        std::fs::write(&staged, bytes).map_err(|e| Error::io(&staged, e))?;
        Ok(staged)
    }
}

impl Drop for LocalLake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable; failure only weakens durability, not atomicity.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Lake for LocalLake {
    fn uri(&self) -> String {
        self.root.display().to_string()
    }

    fn run_id(&self) -> &str {
        &self.run_id
    }

    fn fence(&self) -> &Fence {
        &self.fence
    }

    fn staging(&self) -> &Path {
        &self.staging
    }

    fn prepare_staging(&self) -> Result<()> {
        self.fence.check("the staging folder")?;
        std::fs::create_dir_all(&self.staging).map_err(|e| Error::io(&self.staging, e))?;
        // Every other entry is a killed or fenced-off run's (or an older billpipe's loose
        // files): no run that lacks the lock may be staging.
        let entries =
            std::fs::read_dir(&self.staging_base).map_err(|e| Error::io(&self.staging_base, e))?;
        for e in entries.flatten() {
            if e.file_name().to_string_lossy() != self.run_id {
                remove_any(&e.path());
            }
        }
        // Small files of writers killed between write and rename (old ones only: a run taking
        // the lock right now writes its lock file this way).
        let meta = self.root.join("_billpipe");
        if let Ok(entries) = std::fs::read_dir(&meta) {
            for e in entries.flatten() {
                let old = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > SMALL_TMP_STALE);
                if old && e.file_name().to_string_lossy().ends_with(SMALL_TMP_SUFFIX) {
                    remove_any(&e.path());
                }
            }
        }
        Ok(())
    }

    fn check_path(&self, rel: &str) -> Result<()> {
        check_rel_path(rel, None)
    }

    fn publish(&self, staged: &Path, rel: &str) -> Result<()> {
        self.fence.check_rel(rel)?;
        let target = self.path(rel);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::File::open(staged)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(staged, e))?;
        std::fs::rename(staged, &target).map_err(|e| Error::io(&target, e))?;
        if let Some(dir) = target.parent() {
            sync_dir(dir);
        }
        Ok(())
    }

    fn put(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        self.fence.check_rel(rel)?;
        let target = self.path(rel);
        let staged = self.small_file(&target, bytes)?;
        let renamed = std::fs::File::open(&staged)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&staged, &target));
        if let Err(e) = renamed {
            let _ = std::fs::remove_file(&staged);
            return Err(Error::io(&target, e));
        }
        if let Some(dir) = target.parent() {
            sync_dir(dir);
        }
        Ok(())
    }

    fn exclusive_create(&self) -> bool {
        true
    }

    fn create_new(&self, rel: &str, bytes: &[u8]) -> Result<bool> {
        self.fence.check_rel(rel)?;
        let target = self.path(rel);
        let staged = self.small_file(&target, bytes)?;
        // A hard link appears whole and fails if the name exists: an exclusive, atomic create.
        let linked = std::fs::hard_link(&staged, &target);
        let _ = std::fs::remove_file(&staged);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(&target, e)),
        }
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(rel);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn delete(&self, rel: &str) -> Result<()> {
        self.fence.check_rel(rel)?;
        let path = self.path(rel);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        // Tidy now-empty partition folders so globbing readers do not trip on them.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn list(&self, rel_prefix: &str) -> Result<Vec<(String, u64)>> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) -> Result<()> {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io(dir, e)),
            };
            for e in entries {
                let e = e.map_err(|err| Error::io(dir, err))?;
                let p = e.path();
                let meta = e.metadata().map_err(|err| Error::io(&p, err))?;
                if meta.is_dir() {
                    walk(root, &p, out)?;
                } else if let Ok(rel) = p.strip_prefix(root) {
                    out.push((rel.to_string_lossy().replace('\\', "/"), meta.len()));
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(&self.root, &self.path(rel_prefix), &mut out)?;
        out.sort();
        Ok(out)
    }
}

pub struct S3Lake {
    location: S3Location,
    ctx: S3Context,
    run_id: String,
    /// `billpipe-staging-<lake hash>-`: the names of this lake's staging folders in the temp dir.
    staging_prefix: String,
    /// `<temp>/<staging_prefix><run id>`
    staging: PathBuf,
    fence: Fence,
    part_bytes: u64,
}

impl S3Lake {
    pub fn new(location: S3Location, ctx: S3Context) -> Result<S3Lake> {
        let part_bytes = match ctx.options.part_bytes {
            0 => MULTIPART_BYTES,
            n => n.max(MIN_PART_BYTES),
        };
        let run_id = new_run_id();
        // Runs of other lakes on this machine stage beside ours: only this lake's are ours to
        // clear. 64 bits of the URI's hash tell lakes apart.
        let lake = crate::ingest::write::stable_hash(location.uri().as_bytes()) as u64;
        let staging_prefix = format!("{S3_STAGING_PREFIX}{lake:016x}-");
        Ok(S3Lake {
            staging: std::env::temp_dir().join(format!("{staging_prefix}{run_id}")),
            staging_prefix,
            run_id,
            location,
            ctx,
            fence: Fence::default(),
            part_bytes,
        })
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{}", self.location.prefix, rel)
    }

    fn err(&self, op: &'static str, key: &str, message: String) -> Error {
        Error::S3 {
            op,
            bucket: self.location.bucket.clone(),
            key: key.to_string(),
            message,
        }
    }

    async fn multipart(&self, staged: &Path, key: &str, size: u64) -> Result<()> {
        let client = &self.ctx.client;
        let bucket = &self.location.bucket;
        let created = client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, describe(&e)))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| self.err("CreateMultipartUpload", key, "no upload id".into()))?
            .to_string();
        let result: Result<Vec<CompletedPart>> = async {
            let mut parts = Vec::new();
            let mut offset = 0u64;
            let mut number = 1;
            while offset < size {
                let len = self.part_bytes.min(size - offset);
                let body = ByteStream::read_from()
                    .path(staged)
                    .offset(offset)
                    .length(Length::Exact(len))
                    .build()
                    .await
                    .map_err(|e| self.err("UploadPart", key, e.to_string()))?;
                let done = client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| self.err("UploadPart", key, describe(&e)))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(done.e_tag().map(str::to_string))
                        .build(),
                );
                offset += len;
                number += 1;
            }
            Ok(parts)
        }
        .await;
        let completed = match result {
            Ok(parts) => client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.err("CompleteMultipartUpload", key, describe(&e))),
            Err(e) => Err(e),
        };
        if let Err(e) = completed {
            let _ = client
                .abort_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            return Err(e);
        }
        Ok(())
    }
}

impl Drop for S3Lake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.staging);
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

impl Lake for S3Lake {
    fn uri(&self) -> String {
        self.location.uri()
    }

    fn run_id(&self) -> &str {
        &self.run_id
    }

    fn fence(&self) -> &Fence {
        &self.fence
    }

    fn staging(&self) -> &Path {
        &self.staging
    }

    fn prepare_staging(&self) -> Result<()> {
        self.fence.check("the staging folder")?;
        std::fs::create_dir_all(&self.staging).map_err(|e| Error::io(&self.staging, e))?;
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
            if (name.starts_with(&self.staging_prefix) && name != ours)
                || legacy_staging_is_dead(&name)
            {
                remove_any(&e.path());
            }
        }
        Ok(())
    }

    fn check_path(&self, rel: &str) -> Result<()> {
        check_rel_path(rel, Some(self.location.prefix.len()))
    }

    fn publish(&self, staged: &Path, rel: &str) -> Result<()> {
        self.fence.check_rel(rel)?;
        let key = self.key(rel);
        let size = std::fs::metadata(staged)
            .map_err(|e| Error::io(staged, e))?
            .len();
        self.ctx.runtime.block_on(async {
            if size > self.part_bytes {
                self.multipart(staged, &key, size).await
            } else {
                let body = ByteStream::from_path(staged)
                    .await
                    .map_err(|e| self.err("PutObject", &key, e.to_string()))?;
                self.ctx
                    .client
                    .put_object()
                    .bucket(&self.location.bucket)
                    .key(&key)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| self.err("PutObject", &key, describe(&e)))?;
                Ok(())
            }
        })?;
        std::fs::remove_file(staged).map_err(|e| Error::io(staged, e))
    }

    fn put(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        self.fence.check_rel(rel)?;
        let key = self.key(rel);
        self.ctx.runtime.block_on(async {
            self.ctx
                .client
                .put_object()
                .bucket(&self.location.bucket)
                .key(&key)
                .body(ByteStream::from(bytes.to_vec()))
                .send()
                .await
                .map_err(|e| self.err("PutObject", &key, describe(&e)))?;
            Ok(())
        })
    }

    fn exclusive_create(&self) -> bool {
        // Garage ignores If-None-Match and COS support is unverified: never rely on it.
        false
    }

    fn create_new(&self, rel: &str, bytes: &[u8]) -> Result<bool> {
        self.fence.check_rel(rel)?;
        let key = self.key(rel);
        self.ctx.runtime.block_on(async {
            let sent = self
                .ctx
                .client
                .put_object()
                .bucket(&self.location.bucket)
                .key(&key)
                .if_none_match("*")
                .body(ByteStream::from(bytes.to_vec()))
                .send()
                .await;
            match sent {
                Ok(_) => Ok(true),
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => Ok(false),
                Err(e) => Err(self.err("PutObject", &key, describe(&e))),
            }
        })
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(rel);
        self.ctx.runtime.block_on(async {
            let resp = self
                .ctx
                .client
                .get_object()
                .bucket(&self.location.bucket)
                .key(&key)
                .send()
                .await;
            match resp {
                Ok(r) => {
                    let data = r
                        .body
                        .collect()
                        .await
                        .map_err(|e| self.err("GetObject", &key, e.to_string()))?;
                    Ok(Some(data.into_bytes().to_vec()))
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                Err(e) => Err(self.err("GetObject", &key, describe(&e))),
            }
        })
    }

    fn delete(&self, rel: &str) -> Result<()> {
        self.fence.check_rel(rel)?;
        let key = self.key(rel);
        self.ctx.runtime.block_on(async {
            self.ctx
                .client
                .delete_object()
                .bucket(&self.location.bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| self.err("DeleteObject", &key, describe(&e)))?;
            Ok(())
        })
    }

    fn list(&self, rel_prefix: &str) -> Result<Vec<(String, u64)>> {
        let prefix = self.key(rel_prefix);
        self.ctx.runtime.block_on(async {
            let mut out = Vec::new();
            let mut token = None;
            loop {
                let resp = self
                    .ctx
                    .client
                    .list_objects_v2()
                    .bucket(&self.location.bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(|e| self.err("ListObjectsV2", &prefix, describe(&e)))?;
                for o in resp.contents() {
                    if let Some(k) = o.key() {
                        let rel = k.strip_prefix(&self.location.prefix).unwrap_or(k);
                        out.push((rel.to_string(), o.size().unwrap_or(0).max(0) as u64));
                    }
                }
                token = resp.next_continuation_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            out.sort();
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake() -> (tempfile::TempDir, LocalLake) {
        let dir = tempfile::tempdir().unwrap();
        let lake = LocalLake::new(dir.path().join("lake"), true).unwrap();
        (dir, lake)
    }

    #[test]
    fn nothing_but_the_lock_is_written_before_the_lock_is_held() {
        let (_dir, lake) = lake();
        let locked = |r: Result<()>| matches!(r, Err(Error::Locked(_)));
        assert!(locked(lake.put("_billpipe/ledger.json", b"{}")));
        assert!(locked(lake.create_new("_billpipe/x", b"{}").map(|_| ())));
        assert!(locked(lake.delete("billing_period=2025-11/a/f.parquet")));
        assert!(locked(
            lake.publish(Path::new("/nonexistent"), "p/f.parquet")
        ));
        assert!(locked(lake.prepare_staging()));
        assert!(!lake.staging_base.exists());
        // The lock protocol itself may write the lock.
        assert!(lake.create_new(LOCK_PATH, b"{}").unwrap());
        lake.fence.hold(Instant::now(), Duration::from_secs(60));
        lake.put("_billpipe/ledger.json", b"{}").unwrap();
        lake.fence.close();
        assert!(locked(lake.put("_billpipe/ledger.json", b"{}")));
    }

    #[test]
    fn the_lock_holder_clears_other_runs_staging_and_keeps_its_own() {
        let (_dir, lake) = lake();
        let dead = lake.staging_base.join("dead-run");
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::write(dead.join("part-0.parquet.tmp"), b"x").unwrap();
        std::fs::write(lake.staging_base.join("old.1.2.parquet.tmp"), b"x").unwrap();
        lake.fence.hold(Instant::now(), Duration::from_secs(60));
        lake.prepare_staging().unwrap();
        let left: Vec<_> = std::fs::read_dir(&lake.staging_base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![lake.run_id.clone()]);
        lake.release_staging();
        assert_eq!(std::fs::read_dir(&lake.staging_base).unwrap().count(), 0);
    }

    #[test]
    fn a_lapsed_or_lost_lease_refuses_writes_for_good() {
        let fence = Fence::default();
        let lease = Duration::from_secs(5);
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(10))
            .unwrap_or_else(Instant::now);
        fence.hold(long_ago, lease);
        if fence.lapsed() {
            assert!(fence.check("x").is_err());
            assert!(
                !fence.renew(Instant::now()),
                "a lapsed lease is not renewed"
            );
            assert!(fence.check("x").is_err());
        }
        fence.hold(Instant::now(), lease);
        assert!(fence.renew(Instant::now()));
        fence.check("x").unwrap();
        fence.check_rel(LOCK_PATH).unwrap();
        fence.lose("taken over by someone".into());
        let e = fence.check("the ledger").unwrap_err().to_string();
        assert!(
            e.contains("lost the lake's lock (taken over by someone)"),
            "{e}"
        );
        fence.close();
        assert!(
            fence.check("x").is_err(),
            "closing does not reopen a lost fence"
        );
        fence.check_rel(LOCK_PATH).unwrap();
    }

    #[test]
    fn paths_are_checked_before_publishing() {
        check_rel_path(
            "billing_period=2025-11/billing_account_id=1/f.parquet",
            Some(10),
        )
        .unwrap();
        let long = format!("billing_period=2025-11/{}/f.parquet", "a".repeat(256));
        assert!(matches!(
            check_rel_path(&long, None),
            Err(Error::Rejected(_))
        ));
        assert!(matches!(
            check_rel_path("a/../b", None),
            Err(Error::Rejected(_))
        ));
        assert!(matches!(
            check_rel_path("a//b", None),
            Err(Error::Rejected(_))
        ));
        let deep = vec!["a".repeat(200); 5].join("/");
        check_rel_path(&deep, None).unwrap();
        assert!(matches!(
            check_rel_path(&deep, Some(100)),
            Err(Error::Rejected(_))
        ));
    }
}
