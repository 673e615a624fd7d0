//! Where the lake lives: a local folder or an S3 prefix, behind one small trait.
//!
//! The lake's one promise is that replacing an object is atomic: a reader sees the old bytes or
//! the new ones, never a mix and never nothing. Locally that is a rename within one file system
//! (staging lives in `<dest>/_billpipe/staging/` for that reason); on S3 it is a PUT or a
//! CompleteMultipartUpload, both of which make the new object visible at once.

use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::byte_stream::Length;

use crate::s3::{describe, S3Context, S3Location};
use crate::{Error, Result};

/// Files above this go up in parts of this size, unless `S3Options::part_bytes` says otherwise.
const MULTIPART_BYTES: u64 = 16 << 20;
const MIN_PART_BYTES: u64 = 5 << 20;

pub trait Lake: Send + Sync {
    fn uri(&self) -> String;
    /// A local folder for files about to be published.
    fn staging(&self) -> &Path;
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
/// `writable: false` (for `plan`) creates and clears nothing.
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

pub struct LocalLake {
    root: PathBuf,
    staging: PathBuf,
    counter: std::sync::atomic::AtomicU64,
}

impl LocalLake {
    pub fn new(root: PathBuf, writable: bool) -> Result<LocalLake> {
        let staging = root.join("_billpipe").join("staging");
        if !writable {
            return Ok(LocalLake {
                root,
                staging,
                counter: Default::default(),
            });
        }
        std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        // Anything here was left by a run that died before publishing: it was never visible.
        if let Ok(entries) = std::fs::read_dir(&staging) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(LocalLake {
            root,
            staging,
            counter: Default::default(),
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Writes bytes to a uniquely named staging file (threads write the ledger and the lock).
    fn small_file(&self, bytes: &[u8]) -> Result<PathBuf> {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let staged = self
            .staging
            .join(format!("put.{}.{n}.tmp", std::process::id()));
        std::fs::create_dir_all(&self.staging).map_err(|e| Error::io(&self.staging, e))?;
        std::fs::write(&staged, bytes).map_err(|e| Error::io(&staged, e))?;
        Ok(staged)
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

    fn staging(&self) -> &Path {
        &self.staging
    }

    fn publish(&self, staged: &Path, rel: &str) -> Result<()> {
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
        let staged = self.small_file(bytes)?;
        self.publish(&staged, rel)
    }

    fn exclusive_create(&self) -> bool {
        true
    }

    fn create_new(&self, rel: &str, bytes: &[u8]) -> Result<bool> {
        let staged = self.small_file(bytes)?;
        let target = self.path(rel);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
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
    staging: PathBuf,
    part_bytes: u64,
}

impl S3Lake {
    pub fn new(location: S3Location, ctx: S3Context) -> Result<S3Lake> {
        let staging = std::env::temp_dir().join(format!("billpipe-staging-{}", std::process::id()));
        std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
        let part_bytes = match ctx.options.part_bytes {
            0 => MULTIPART_BYTES,
            n => n.max(MIN_PART_BYTES),
        };
        Ok(S3Lake {
            location,
            ctx,
            staging,
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

impl Lake for S3Lake {
    fn uri(&self) -> String {
        self.location.uri()
    }

    fn staging(&self) -> &Path {
        &self.staging
    }

    fn publish(&self, staged: &Path, rel: &str) -> Result<()> {
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
