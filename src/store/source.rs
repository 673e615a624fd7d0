//! Where bill files come from: one small trait, two implementations. [`LocalSource`] reads a
//! folder (the offline default, used by the example bucket); [`S3Source`] lists and reads any
//! S3-compatible bucket. A source only lists and streams bytes; what the bytes mean is decided
//! later (`classify`, `decode`).
//!
//! A local folder is listed as a bucket would be: every file under it, at any depth, keyed by
//! its path relative to the folder with `/` between components. Symbolic links are followed,
//! to files and to folders (a bill linked in from elsewhere is a bill; its size and modification
//! time, which make the ETag, are the target's), except a link back to a folder that is being
//! walked, which would list the same files forever. A link whose target is missing is still
//! listed, so that a bill behind it is rejected with that cause rather than vanish.
//!
//! Keys are text; file names on Linux are bytes. A path that is not UTF-8 (a folder named in
//! GBK on a Chinese Windows, copied over) gets a key in which each non-ASCII byte of such a
//! name is written `\xNN` (`\xD5\xCB\xB5\xA5/FOCUS-…csv`; bill names are ASCII, so they still
//! classify), and the source remembers which file that key stands for, so the file is read, not
//! looked for under a name that does not exist. Two paths that would get the same key fail the
//! listing, naming both.
//!
//! Sources stream into a [`ChunkSender`]. When the reader goes away (`send` returns false), the
//! decoder at the other end stopped because of an error of its own, which is the one to report:
//! the source stops and returns what it sent, and never calls the object short or changed for
//! it (see `fetch`).

use std::io::Read;
use std::path::{Path, PathBuf};

use aws_smithy_types::date_time::Format;
use serde::{Deserialize, Serialize};

use crate::ingest::fetch::ChunkSender;
use crate::store::s3::{describe, S3Context, S3Location};
use crate::{Error, Result};

/// One listed object. `etag` is an opaque change marker (COS ETags are not MD5s; for local files
/// it is made from size and modification time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: Option<String>,
}

pub trait Source: Send + Sync {
    /// The source as a user would write it (`s3://…` or a path).
    fn uri(&self) -> String;
    /// Every object under the source, in key order.
    fn list(&self) -> Result<Vec<ObjectInfo>>;
    /// Streams the object's bytes into `out`, chunk by chunk, and returns the byte count.
    /// Fails if the object changed since it was listed or ended early.
    fn stream(&self, object: &ObjectInfo, out: &ChunkSender) -> Result<u64>;
}

/// Opens `--source`: `s3://bucket/prefix` or a local folder.
pub fn open(uri: &str, s3: impl FnOnce() -> Result<S3Context>) -> Result<Box<dyn Source>> {
    match S3Location::parse(uri) {
        Some(location) => Ok(Box::new(S3Source {
            location,
            ctx: s3()?,
        })),
        None if uri.starts_with("s3://") => Err(Error::Config(format!("bad S3 URI {uri:?}"))),
        None => {
            let root = PathBuf::from(uri);
            if !root.is_dir() {
                return Err(Error::Config(format!("source {uri} is not a folder")));
            }
            Ok(Box::new(LocalSource::new(root)))
        }
    }
}

pub struct LocalSource {
    root: PathBuf,
    /// Files whose key is not their path (a component that is not UTF-8), by key.
    renamed: std::sync::Mutex<std::collections::HashMap<String, PathBuf>>,
}

impl LocalSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalSource {
            root: root.into(),
            renamed: Default::default(),
        }
    }

    /// Lists `dir` into `out`. `walking` holds the canonical paths of `dir` and the folders
    /// above it (to stop symbolic-link loops); `renamed` collects keys that are not paths.
    fn walk(
        &self,
        dir: &Path,
        walking: &mut Vec<PathBuf>,
        out: &mut Vec<ObjectInfo>,
        renamed: &mut std::collections::HashMap<String, PathBuf>,
    ) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
            // Follow symbolic links. One that cannot be followed (its target is gone, or it
            // loops) is listed as the link itself: reading it then says why, for that object.
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(_) if file_type.is_symlink() => {
                    entry.metadata().map_err(|e| Error::io(&path, e))?
                }
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
                self.walk(&path, walking, out, renamed)?;
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

    /// The file behind a listed key.
    fn path_of(&self, key: &str) -> PathBuf {
        let renamed = self.renamed.lock().ok().and_then(|r| r.get(key).cloned());
        renamed.unwrap_or_else(|| self.root.join(key))
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
                Error::Rejected(format!(
                    "{key}: a symbolic link{} that cannot be followed: {e}",
                    target()
                ))
            } else {
                Error::io(path, e)
            }
        })?;
        if !meta.is_file() {
            // A FIFO or a device would block or never end; neither is a bill file.
            return Err(Error::Rejected(format!(
                "{key}: not a regular file{} (a FIFO, socket or device?)",
                if link { target() } else { String::new() }
            )));
        }
        std::fs::File::open(path).map_err(|e| Error::io(path, e))
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

impl Source for LocalSource {
    fn uri(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut renamed = std::collections::HashMap::new();
        let mut walking = vec![std::fs::canonicalize(&self.root).unwrap_or(self.root.clone())];
        self.walk(&self.root, &mut walking, &mut out, &mut renamed)?;
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
            *r = renamed;
        }
        Ok(out)
    }

    fn stream(&self, object: &ObjectInfo, out: &ChunkSender) -> Result<u64> {
        let path = self.path_of(&object.key);
        let mut file = self.open(&object.key, &path)?;
        let mut total = 0u64;
        loop {
            let mut buf = vec![0u8; crate::ingest::fetch::CHUNK_BYTES];
            let n = file.read(&mut buf).map_err(|e| Error::io(&path, e))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            total += n as u64;
            if !out.send(bytes::Bytes::from(buf)) {
                // The reader stopped early: the decoder rejected the file, and its reason is the
                // one to report. The file is not "changed"; it was not read to the end.
                return Ok(total);
            }
        }
        if total != object.size {
            return Err(Error::Rejected(format!(
                "{}: file changed while it was read ({} bytes listed, {} read)",
                object.key, object.size, total
            )));
        }
        Ok(total)
    }
}

pub struct S3Source {
    location: S3Location,
    ctx: S3Context,
}

impl S3Source {
    pub fn new(location: S3Location, ctx: S3Context) -> Self {
        S3Source { location, ctx }
    }

    fn s3_error(&self, op: &'static str, key: &str, message: String) -> Error {
        Error::S3 {
            op,
            bucket: self.location.bucket.clone(),
            key: key.to_string(),
            message,
        }
    }
}

fn to_info(
    key: Option<&str>,
    size: Option<i64>,
    etag: Option<&str>,
    modified: Option<&aws_smithy_types::DateTime>,
) -> Option<ObjectInfo> {
    Some(ObjectInfo {
        key: key?.to_string(),
        size: size.unwrap_or(0).max(0) as u64,
        etag: etag.unwrap_or("").trim_matches('"').to_string(),
        last_modified: modified.and_then(|m| m.fmt(Format::DateTime).ok()),
    })
}

impl Source for S3Source {
    fn uri(&self) -> String {
        self.location.uri()
    }

    fn list(&self) -> Result<Vec<ObjectInfo>> {
        let client = &self.ctx.client;
        let loc = &self.location;
        let prefix = (!loc.prefix.is_empty()).then(|| loc.prefix.clone());
        self.ctx.runtime.block_on(async {
            let mut out = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                if self.ctx.options.list_v2 {
                    let resp = client
                        .list_objects_v2()
                        .bucket(&loc.bucket)
                        .set_prefix(prefix.clone())
                        .set_continuation_token(marker.clone())
                        .send()
                        .await
                        .map_err(|e| self.s3_error("ListObjectsV2", &loc.prefix, describe(&e)))?;
                    for o in resp.contents() {
                        out.extend(to_info(o.key(), o.size(), o.e_tag(), o.last_modified()));
                    }
                    marker = resp.next_continuation_token().map(str::to_string);
                    if !resp.is_truncated().unwrap_or(false) || marker.is_none() {
                        break;
                    }
                } else {
                    let resp = client
                        .list_objects()
                        .bucket(&loc.bucket)
                        .set_prefix(prefix.clone())
                        .set_marker(marker.clone())
                        .send()
                        .await
                        .map_err(|e| self.s3_error("ListObjects", &loc.prefix, describe(&e)))?;
                    let page = resp.contents();
                    for o in page {
                        out.extend(to_info(o.key(), o.size(), o.e_tag(), o.last_modified()));
                    }
                    if !resp.is_truncated().unwrap_or(false) {
                        break;
                    }
                    // COS returns NextMarker whenever the listing is truncated; AWS S3 v1 only
                    // with a delimiter, where the last key is the documented marker.
                    let next = resp
                        .next_marker()
                        .map(str::to_string)
                        .or_else(|| page.last().and_then(|o| o.key()).map(str::to_string));
                    if next.is_none() || next == marker {
                        return Err(self.s3_error(
                            "ListObjects",
                            &loc.prefix,
                            "listing is truncated but gives no marker to continue from".into(),
                        ));
                    }
                    marker = next;
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }

    fn stream(&self, object: &ObjectInfo, out: &ChunkSender) -> Result<u64> {
        let client = &self.ctx.client;
        self.ctx.runtime.block_on(async {
            let mut req = client
                .get_object()
                .bucket(&self.location.bucket)
                .key(&object.key);
            if !object.etag.is_empty() {
                // Read the version that was listed and planned, not one replaced since.
                req = req.if_match(format!("\"{}\"", object.etag));
            }
            let resp = req
                .send()
                .await
                .map_err(|e| self.s3_error("GetObject", &object.key, describe(&e)))?;
            let expected = resp.content_length().unwrap_or(-1);
            let mut body = resp.body;
            let mut total = 0u64;
            loop {
                match body.try_next().await {
                    Ok(Some(chunk)) => {
                        total += chunk.len() as u64;
                        if !out.send_async(chunk).await {
                            return Ok(total);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        return Err(Error::Fetch(format!(
                            "s3://{}/{}: the download broke off after {total} bytes: {e}",
                            self.location.bucket, object.key
                        )))
                    }
                }
            }
            if expected >= 0 && total != expected as u64 {
                // Never load a short body as if it were the whole object.
                return Err(Error::Fetch(format!(
                    "s3://{}/{}: the body ended after {total} of {expected} bytes",
                    self.location.bucket, object.key
                )));
            }
            Ok(total)
        })
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
