//! [`S3Store`]: a bucket and a key prefix as a [`Store`] — listing, conditional reads, PUTs
//! and multipart uploads, deletes — over the connection of an [`S3Context`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::byte_stream::Length;
use aws_smithy_types::date_time::Format;
use bytes::Bytes;

use super::{describe, S3Context, S3Location};
use crate::store::{ObjectInfo, Store};
use crate::{Error, Result};

/// Files above this go up in parts of this size, unless `S3Options::part_bytes` says otherwise.
const MULTIPART_BYTES: u64 = 16 << 20;

/// Uploads under way at once in [`Store::put_files`].
const PARALLEL_PUTS: usize = 8;
/// The smallest part S3 and COS accept (but for the last).
pub const MIN_PART_BYTES: u64 = 5 << 20;

/// A bucket and a key prefix as a [`Store`]: keys are relative to the prefix.
///
/// Listing uses the v1 marker listing COS documents unless `S3Options::list_v2`. Reading a
/// listed object asks for the listed version (`If-Match` on its ETag), so an object replaced
/// between planning and reading fails rather than being loaded as what was planned. Files above
/// the part size go up as a multipart upload, which (like a PUT) makes the new object visible at
/// once when it completes, and is aborted if any part fails.
pub struct S3Store {
    location: S3Location,
    ctx: S3Context,
    part_bytes: u64,
    /// Keys per listing page (`None`: the server's default, 1,000); small in tests.
    page_size: Option<i32>,
}

impl S3Store {
    pub fn new(location: S3Location, ctx: S3Context) -> Self {
        let part_bytes = match ctx.options.part_bytes {
            0 => MULTIPART_BYTES,
            n => n.max(MIN_PART_BYTES),
        };
        S3Store {
            location,
            ctx,
            part_bytes,
            page_size: None,
        }
    }

    /// Lists at most `keys` keys per request (to exercise pagination).
    pub fn with_page_size(mut self, keys: i32) -> Self {
        self.page_size = Some(keys);
        self
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }

    fn key(&self, key: &str) -> String {
        format!("{}{}", self.location.prefix, key)
    }

    fn err(&self, op: &'static str, key: &str, message: String) -> Error {
        Error::S3 {
            op,
            bucket: self.location.bucket.clone(),
            key: key.to_string(),
            message,
        }
    }

    fn info(
        &self,
        key: Option<&str>,
        size: Option<i64>,
        etag: Option<&str>,
        modified: Option<&aws_smithy_types::DateTime>,
    ) -> Option<ObjectInfo> {
        let key = key?;
        Some(ObjectInfo {
            key: key
                .strip_prefix(&self.location.prefix)
                .unwrap_or(key)
                .to_string(),
            size: size.unwrap_or(0).max(0) as u64,
            etag: etag.unwrap_or("").trim_matches('"').to_string(),
            last_modified: modified.and_then(|m| m.fmt(Format::DateTime).ok()),
        })
    }

    async fn put_object(&self, key: &str, body: ByteStream, if_absent: bool) -> Result<()> {
        let sent = self
            .ctx
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(key)
            .set_if_none_match(if_absent.then(|| "*".to_string()))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if if_absent && e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                Err(Error::AlreadyExists {
                    key: key.to_string(),
                })
            }
            Err(e) => Err(self.err("PutObject", key, describe(&e))),
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

impl Store for S3Store {
    fn uri(&self) -> String {
        self.location.uri()
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let client = &self.ctx.client;
        let loc = &self.location;
        let full = self.key(prefix);
        let prefix = (!full.is_empty()).then(|| full.clone());
        self.ctx.runtime.block_on(async {
            let mut out = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                if self.ctx.options.list_v2 {
                    let resp = client
                        .list_objects_v2()
                        .bucket(&loc.bucket)
                        .set_prefix(prefix.clone())
                        .set_max_keys(self.page_size)
                        .set_continuation_token(marker.clone())
                        .send()
                        .await
                        .map_err(|e| self.err("ListObjectsV2", &full, describe(&e)))?;
                    for o in resp.contents() {
                        out.extend(self.info(o.key(), o.size(), o.e_tag(), o.last_modified()));
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
                        .set_max_keys(self.page_size)
                        .set_marker(marker.clone())
                        .send()
                        .await
                        .map_err(|e| self.err("ListObjects", &full, describe(&e)))?;
                    let page = resp.contents();
                    for o in page {
                        out.extend(self.info(o.key(), o.size(), o.e_tag(), o.last_modified()));
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
                        return Err(self.err(
                            "ListObjects",
                            &full,
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

    fn stream(&self, listed: &ObjectInfo, on_chunk: &mut dyn FnMut(Bytes) -> bool) -> Result<u64> {
        let key = self.key(&listed.key);
        let runtime = &self.ctx.runtime;
        let mut req = self
            .ctx
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(&key);
        if !listed.etag.is_empty() {
            // Read the version that was listed and planned, not one replaced since.
            req = req.if_match(format!("\"{}\"", listed.etag));
        }
        let resp = runtime
            .block_on(req.send())
            .map_err(|e| self.err("GetObject", &key, describe(&e)))?;
        let expected = resp.content_length().unwrap_or(-1);
        let mut body = resp.body;
        let mut total = 0u64;
        // One chunk at a time on the runtime; `on_chunk` runs outside it, so it may block (a
        // bounded channel to the decoder) without stalling the runtime.
        loop {
            match runtime.block_on(body.try_next()) {
                Ok(Some(chunk)) => {
                    total += chunk.len() as u64;
                    if !on_chunk(chunk) {
                        return Ok(total);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Error::fetch(
                        format!("s3://{}/{key}", self.location.bucket),
                        format!("the download broke off after {total} bytes: {e}"),
                    ))
                }
            }
        }
        if expected >= 0 && total != expected as u64 {
            // Never load a short body as if it were the whole object.
            return Err(Error::fetch(
                format!("s3://{}/{key}", self.location.bucket),
                format!("the body ended after {total} of {expected} bytes"),
            ));
        }
        Ok(total)
    }

    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = self.key(key);
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

    fn put_file(&self, from: &Path, key: &str) -> Result<()> {
        let key = self.key(key);
        let size = std::fs::metadata(from)
            .map_err(|e| Error::io(from, e))?
            .len();
        self.ctx.runtime.block_on(async {
            if size > self.part_bytes {
                self.multipart(from, &key, size).await
            } else {
                let body = ByteStream::from_path(from)
                    .await
                    .map_err(|e| self.err("PutObject", &key, e.to_string()))?;
                self.put_object(&key, body, false).await
            }
        })?;
        std::fs::remove_file(from).map_err(|e| Error::io(from, e))
    }

    /// Up to [`PARALLEL_PUTS`] uploads at once: a reseller's bill publishes thousands of small
    /// partition files, and one PUT after the other spends the whole time waiting on the
    /// network. On the first error no new upload starts; those under way finish and are
    /// reported.
    fn put_files(
        &self,
        files: &[(PathBuf, String)],
        published: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<()> {
        if files.len() < 2 {
            return crate::store::put_each(self, files, published);
        }
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (done, results) = mpsc::channel::<(usize, Result<()>)>();
        std::thread::scope(|s| {
            for _ in 0..PARALLEL_PUTS.min(files.len()) {
                let (next, stop, done) = (&next, &stop, done.clone());
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((from, key)) = files.get(i) else {
                            return;
                        };
                        if done.send((i, self.put_file(from, key))).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(done);
            let mut first_error = None;
            for (i, result) in results {
                // Every file in place is reported, also after an error, so the caller's
                // clean-up knows of it.
                if let Err(e) = result.and_then(|()| published(i)) {
                    stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    }

    fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let key = self.key(key);
        let body = ByteStream::from(bytes.to_vec());
        self.ctx
            .runtime
            .block_on(self.put_object(&key, body, false))
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let full = self.key(key);
        let body = ByteStream::from(bytes.to_vec());
        match self
            .ctx
            .runtime
            .block_on(self.put_object(&full, body, true))
        {
            Err(Error::AlreadyExists { .. }) => Err(Error::AlreadyExists {
                key: key.to_string(),
            }),
            other => other,
        }
    }

    fn put_if_absent_is_exclusive(&self) -> bool {
        // Garage ignores If-None-Match and COS support is unverified: never rely on it.
        false
    }

    fn delete(&self, key: &str) -> Result<()> {
        let key = self.key(key);
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
}
