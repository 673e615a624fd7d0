//! A local folder as a [`Store`]: the offline default for sources (the example bucket) and for
//! lakes.
//!
//! A folder is listed as a bucket would be: every file under it, at any depth, keyed by its
//! path relative to the folder with `/` between components. Symbolic links are followed, to
//! files and to folders (a bill linked in from elsewhere is a bill; its size and modification
//! time, which make the ETag, are the target's), except a link back to a folder that is being
//! walked, which would list the same files forever. A link whose target is missing is still
//! listed, so that a bill behind it is rejected with that cause rather than vanish.
//!
//! Keys are text; file names on Linux are bytes. A path that is not UTF-8 (a folder named in
//! GBK on a Chinese Windows, copied over) gets a key in which each non-ASCII byte of such a
//! name is written `\xNN` (`\xD5\xCB\xB5\xA5/FOCUS-…csv`; bill names are ASCII, so they still
//! classify), and the store remembers which file that key stands for, so the file is read, not
//! looked for under a name that does not exist. Two paths that would get the same key fail the
//! listing, naming both.
//!
//! Replacing is atomic: a file is written beside its target (same folder, so same file
//! system) under a `.tmp` name, synced, and renamed over the target; the folder is synced so the
//! rename is durable. `put_if_absent` hard-links the written file to the target name, which
//! appears whole and fails if the name exists: an exclusive, atomic create. Deleting tidies the
//! folders it leaves empty, so globbing readers of a lake do not trip on them.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use super::{changed, ObjectInfo, Store, CHUNK_BYTES};
use crate::{Error, Result};

/// Suffix of the files written beside their target before the rename (see `lake`'s cleanup).
pub const TMP_SUFFIX: &str = ".tmp";

pub struct LocalStore {
    root: PathBuf,
    /// Names this store's temporary files apart from other processes'.
    tag: String,
    counter: AtomicU64,
    /// Files whose key is not their path (a component that is not UTF-8), by key.
    renamed: Mutex<HashMap<String, PathBuf>>,
}

impl LocalStore {
    /// Whether the folders of `files` are all on the lake's device (so one `syncfs` covers
    /// them and a rename moves them). Each distinct folder is looked at once.
    fn on_lake_device<'a>(&self, files: impl Iterator<Item = &'a PathBuf>) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let device = |dir: &Path| std::fs::metadata(dir).map(|m| m.dev()).ok();
            let Some(lake) = device(&self.root) else {
                return false;
            };
            let mut seen: HashSet<&Path> = HashSet::new();
            for file in files {
                let Some(dir) = file.parent() else {
                    return false;
                };
                if seen.insert(dir) && device(dir) != Some(lake) {
                    return false;
                }
            }
            true
        }
        #[cfg(not(unix))]
        {
            let _ = files;
            false
        }
    }

    /// A store rooted at `root`; `tag` goes into the names of its temporary files (a run id).
    pub fn new(root: impl Into<PathBuf>, tag: &str) -> Self {
        LocalStore {
            root: root.into(),
            tag: tag.to_string(),
            counter: AtomicU64::new(0),
            renamed: Default::default(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file behind a key (a listed key that is not a path maps to its file).
    fn path_of(&self, key: &str) -> PathBuf {
        let renamed = self.renamed.lock().ok().and_then(|r| r.get(key).cloned());
        renamed.unwrap_or_else(|| self.root.join(key))
    }

    /// Lists `dir` into `out` (only its entries whose name starts with `first`, if given).
    /// `walking` holds the canonical paths of `dir` and the folders
    /// above it (to stop symbolic-link loops); `renamed` collects keys that are not paths.
    fn walk(
        &self,
        dir: &Path,
        first: Option<&str>,
        walking: &mut Vec<PathBuf>,
        out: &mut Vec<ObjectInfo>,
        renamed: &mut HashMap<String, PathBuf>,
    ) -> Result<()> {
        // A listing is of one moment: a folder or file removed between reading its parent and
        // looking at it (a run freeing replaced files, staging tidied) is not in it, as on S3.
        let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let path = entry.path();
            // Names the prefix rules out are not walked (`_billpipe/` when a lake's partitions
            // are listed): a key under `name` starts with `name/`, and the part of the prefix
            // after its last `/` holds no `/`. Only names that are text (an escaped one is
            // compared as its key, later).
            if let (Some(first), Some(name)) = (first, entry.file_name().to_str()) {
                if !name.starts_with(first) {
                    continue;
                }
            }
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            // A plain folder is walked without a `stat` or a `canonicalize`: its canonical path
            // is its parent's plus its name. A lake's month is 20,000 customer folders, listed
            // whole before every reseller commit, and the `statx` calls of `canonicalize` (one
            // per path component) were most of that listing.
            if file_type.is_dir() {
                let real = match walking.last() {
                    Some(parent) => parent.join(entry.file_name()),
                    None => std::fs::canonicalize(&path).map_err(|e| Error::io(&path, e))?,
                };
                walking.push(real);
                self.walk(&path, None, walking, out, renamed)?;
                walking.pop();
                continue;
            }
            // Follow symbolic links. One that cannot be followed (its target is gone, or it
            // loops) is listed as the link itself: reading it then says why, for that object.
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(_) if file_type.is_symlink() => match entry.metadata() {
                    Ok(meta) => meta,
                    Err(e) if gone(&e) => continue,
                    Err(e) => return Err(Error::io(&path, e)),
                },
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            if meta.is_dir() {
                let real = std::fs::canonicalize(&path).map_err(|e| Error::io(&path, e))?;
                if walking.contains(&real) {
                    tracing::warn!(
                        "{}: a symbolic link back to {}, which is being listed already; not followed",
                        path.display(),
                        real.display()
                    );
                    continue;
                }
                walking.push(real);
                self.walk(&path, None, walking, out, renamed)?;
                walking.pop();
                continue;
            }
            let rel = path.strip_prefix(&self.root).unwrap_or(&path);
            let (key, exact) = key_of(rel);
            if !exact {
                renamed.insert(key.clone(), path.clone());
            }
            let modified = meta.modified().ok();
            let nanos = modified
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            out.push(ObjectInfo {
                key,
                size: meta.len(),
                etag: format!("{:x}-{:x}", meta.len(), nanos),
                // Microseconds: among same-rank snapshots the newest delivery wins, and files
                // written within one second must still be told apart.
                last_modified: modified.map(|m| {
                    chrono::DateTime::<chrono::Utc>::from(m)
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                }),
            });
        }
        Ok(())
    }

    /// Opens a listed file, saying what it is when it is not a readable regular file.
    fn open(&self, key: &str, path: &Path) -> Result<std::fs::File> {
        let link = std::fs::symlink_metadata(path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        let target = || {
            std::fs::read_link(path)
                .map(|t| format!(" to {}", t.display()))
                .unwrap_or_default()
        };
        let meta = std::fs::metadata(path).map_err(|e| {
            if link {
                Error::rejected(format!(
                    "{key}: a symbolic link{} that cannot be followed: {e}",
                    target()
                ))
            } else {
                Error::io(path, e)
            }
        })?;
        if !meta.is_file() {
            // A FIFO or a device would block or never end; neither is a bill file.
            return Err(Error::rejected(format!(
                "{key}: not a regular file{} (a FIFO, socket or device?)",
                if link { target() } else { String::new() }
            )));
        }
        std::fs::File::open(path).map_err(|e| Error::io(path, e))
    }

    /// Writes bytes to a uniquely named file beside `target` (same folder, so the rename is
    /// atomic).
    fn tmp_file(
        &self,
        target: &Path,
        write: impl Fn(&Path) -> std::io::Result<()>,
    ) -> Result<PathBuf> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let dir = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!("{name}.{}.{n}{TMP_SUFFIX}", self.tag));
        let mut written = write(&tmp);
        // The folder tidied away by a concurrent delete of its last file (a partition folder
        // two units share): made again, once.
        if written
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
        {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            written = write(&tmp);
        }
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&tmp, e));
        }
        Ok(tmp)
    }

    /// Syncs `tmp` and renames it over `target`.
    fn replace(&self, tmp: &Path, target: &Path) -> Result<()> {
        let renamed = std::fs::File::open(tmp)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(tmp, target));
        if let Err(e) = renamed {
            let _ = std::fs::remove_file(tmp);
            return Err(Error::io(target, e));
        }
        if let Some(dir) = target.parent() {
            sync_dir(dir);
        }
        Ok(())
    }
}

/// Whether [`sync_file_system`] syncs a whole file system with one call.
const CAN_SYNC_FS: bool = cfg!(target_os = "linux");

/// Makes every write to the file system holding `dir` durable (`syncfs(2)`).
#[cfg(target_os = "linux")]
fn sync_file_system(dir: &Path) -> Result<()> {
    let folder = std::fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    rustix::fs::syncfs(&folder).map_err(|e| Error::io(dir, e.into()))
}

#[cfg(not(target_os = "linux"))]
fn sync_file_system(dir: &Path) -> Result<()> {
    let _ = dir;
    Err(Error::Internal("syncfs is Linux-only".into()))
}

fn sync_dir(dir: &Path) {
    // Makes the rename durable; failure only weakens durability, not atomicity.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The key of a relative path: its components joined by `/`; in a component that is not UTF-8,
/// each non-ASCII byte is written `\xNN`. Returns whether the key is the path itself.
fn key_of(rel: &Path) -> (String, bool) {
    let mut exact = true;
    let parts: Vec<String> = rel
        .components()
        .map(|c| {
            let os = c.as_os_str();
            match os.to_str() {
                Some(text) => text.to_string(),
                None => {
                    exact = false;
                    escape_non_utf8(os)
                }
            }
        })
        .collect();
    (parts.join("/"), exact)
}

#[cfg(unix)]
fn escape_non_utf8(name: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    // Bytes of another encoding can happen to form UTF-8 here and there (GBK "账单" is
    // D5 CB B5 A5, and CB B5 is UTF-8 for "˵"): in a name that is not UTF-8 as a whole, no
    // non-ASCII byte is taken for a character.
    let mut out = String::new();
    for byte in name.as_bytes() {
        match byte {
            0..=0x7f => out.push(char::from(*byte)),
            _ => out.push_str(&format!("\\x{byte:02X}")),
        }
    }
    out
}

#[cfg(not(unix))]
fn escape_non_utf8(name: &std::ffi::OsStr) -> String {
    name.to_string_lossy().into_owned()
}

impl Store for LocalStore {
    fn uri(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        // Walk the deepest folder the prefix names; keep the keys that start with it.
        let folder = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let start = if folder.is_empty() {
            self.root.clone()
        } else {
            self.root.join(folder)
        };
        match std::fs::metadata(&start) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(Vec::new()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&start, e)),
        }
        let mut out = Vec::new();
        let mut renamed = HashMap::new();
        let mut walking = vec![std::fs::canonicalize(&self.root).unwrap_or(self.root.clone())];
        // The last entry must be `start`'s canonical path: `walk` derives its folders' from it.
        let real = std::fs::canonicalize(&start).map_err(|e| Error::io(&start, e))?;
        if walking.last() != Some(&real) {
            walking.push(real);
        }
        let first = prefix.rfind('/').map_or(prefix, |i| &prefix[i + 1..]);
        self.walk(&start, Some(first), &mut walking, &mut out, &mut renamed)?;
        out.retain(|o| o.key.starts_with(prefix));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        // Only an escaped name can meet another (`\xD5` escaped, or a file named so in text).
        if let Some(pair) = out.windows(2).find(|w| w[0].key == w[1].key) {
            return Err(Error::Config(format!(
                "source {}: two files would both be listed as {:?} (one of them is {:?}); rename one",
                self.root.display(),
                pair[0].key,
                renamed.get(&pair[0].key).cloned().unwrap_or_default()
            )));
        }
        if let Ok(mut r) = self.renamed.lock() {
            r.extend(renamed);
        }
        Ok(out)
    }

    fn stream(&self, listed: &ObjectInfo, on_chunk: &mut dyn FnMut(Bytes) -> bool) -> Result<u64> {
        let path = self.path_of(&listed.key);
        let mut file = self.open(&listed.key, &path)?;
        let mut total = 0u64;
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = file.read(&mut buf).map_err(|e| Error::io(&path, e))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            total += n as u64;
            if !on_chunk(Bytes::from(buf)) {
                // The reader stopped early: the decoder rejected the file, and its reason is the
                // one to report. The file is not "changed"; it was not read to the end.
                return Ok(total);
            }
        }
        if total != listed.size {
            return Err(changed(&listed.key, listed.size, total));
        }
        Ok(total)
    }

    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path_of(key);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn put_file(&self, from: &Path, key: &str) -> Result<()> {
        let target = self.root.join(key);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        std::fs::File::open(from)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(from, e))?;
        match std::fs::rename(from, &target) {
            Ok(()) => {
                if let Some(dir) = target.parent() {
                    sync_dir(dir);
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                // Another file system (a lake's staging is inside the lake, so only callers that
                // stage elsewhere get here): copy beside the target, then rename.
                let tmp = self.tmp_file(&target, |tmp| std::fs::copy(from, tmp).map(|_| ()))?;
                self.replace(&tmp, &target)?;
                std::fs::remove_file(from).map_err(|e| Error::io(from, e))
            }
            Err(e) => Err(Error::io(&target, e)),
        }
    }

    /// `put_file` syncs each file and then its folder: two syncs per file, most of publishing a
    /// reseller's bill of thousands of partitions. On Linux, when every file is staged on the
    /// lake's file system, one `syncfs` makes them all durable before the first rename and one
    /// more makes the renames durable before this returns (and so before the ledger records
    /// them): the same order, two syncs in all. Files may be staged in several folders (one per
    /// partition writer thread); their folders are checked to be on the lake's device.
    fn put_files(
        &self,
        files: &[(PathBuf, String)],
        published: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<()> {
        let staging = files.first().and_then(|(f, _)| f.parent());
        let Some(staging) = staging.filter(|_| {
            files.len() > 1 && CAN_SYNC_FS && self.on_lake_device(files.iter().map(|(f, _)| f))
        }) else {
            return super::put_each(self, files, published);
        };
        sync_file_system(staging)?;
        for (i, (from, key)) in files.iter().enumerate() {
            let target = self.root.join(key);
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            match std::fs::rename(from, &target) {
                Ok(()) => {}
                // Staged on another file system: copied and synced one by one.
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                    self.put_file(from, key)?
                }
                Err(e) => return Err(Error::io(&target, e)),
            }
            published(i)?;
        }
        sync_file_system(&self.root)
    }

    fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let target = self.root.join(key);
        let tmp = self.tmp_file(&target, |tmp| std::fs::write(tmp, bytes))?;
        self.replace(&tmp, &target)
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let target = self.root.join(key);
        let tmp = self.tmp_file(&target, |tmp| std::fs::write(tmp, bytes))?;
        // A hard link appears whole and fails if the name exists: an exclusive, atomic create.
        let linked = std::fs::hard_link(&tmp, &target);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
                key: key.to_string(),
            }),
            Err(e) => Err(Error::io(&target, e)),
        }
    }

    fn put_if_absent_is_exclusive(&self) -> bool {
        true
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        // Tidy now-empty folders so globbing readers do not trip on them — not billpipe's own
        // (`_billpipe/`), which readers skip: concurrent commits (`--jobs`, shards) write their
        // intents into one folder there, and removing it when one commit's was the last would
        // pull it from under the next one's write.
        if key.starts_with("_billpipe/") {
            return Ok(());
        }
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn keys_of_names_that_are_not_utf8_escape_their_non_ascii_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let gbk = std::ffi::OsStr::from_bytes(b"\xd5\xcb\xb5\xa5-2025");
        let rel = Path::new(gbk).join("账单.csv");
        assert_eq!(
            key_of(&rel),
            ("\\xD5\\xCB\\xB5\\xA5-2025/账单.csv".to_string(), false)
        );
        assert_eq!(
            key_of(Path::new("a/账单.csv")),
            ("a/账单.csv".to_string(), true)
        );
    }
}
