//! Where bill files come from: one small trait, two implementations. [`LocalSource`] reads a
//! folder (the offline default, used by the example bucket); [`S3Source`] lists and reads any
//! S3-compatible bucket. A source only lists and streams bytes; what the bytes mean is decided
//! later (`classify`, `decode`).

use std::io::Read;
use std::path::{Path, PathBuf};

use aws_smithy_types::date_time::Format;
use serde::{Deserialize, Serialize};

use crate::fetch::ChunkSender;
use crate::s3::{describe, S3Context, S3Location};
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
            Ok(Box::new(LocalSource { root }))
        }
    }
}

pub struct LocalSource {
    root: PathBuf,
}

impl LocalSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalSource { root: root.into() }
    }

    fn walk(&self, dir: &Path, out: &mut Vec<ObjectInfo>) -> Result<()> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| Error::io(&path, e))?;
            if meta.is_dir() {
                self.walk(&path, out)?;
                continue;
            }
            let rel = path.strip_prefix(&self.root).unwrap_or(&path);
            let key = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let modified = meta.modified().ok();
            let nanos = modified
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            out.push(ObjectInfo {
                key,
                size: meta.len(),
                etag: format!("{:x}-{:x}", meta.len(), nanos),
                last_modified: modified.map(|m| {
                    chrono::DateTime::<chrono::Utc>::from(m)
                        .format("%Y-%m-%dT%H:%M:%SZ")
                        .to_string()
                }),
            });
        }
        Ok(())
    }
}

impl Source for LocalSource {
    fn uri(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        self.walk(&self.root, &mut out)?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn stream(&self, object: &ObjectInfo, out: &ChunkSender) -> Result<u64> {
        let path = self.root.join(&object.key);
        let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut total = 0u64;
        loop {
            let mut buf = vec![0u8; crate::fetch::CHUNK_BYTES];
            let n = file.read(&mut buf).map_err(|e| Error::io(&path, e))?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            total += n as u64;
            if !out.send(bytes::Bytes::from(buf)) {
                break; // the reader stopped early (file rejected); nothing more to do
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
