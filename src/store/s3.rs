//! S3-compatible storage: the URI form `s3://bucket/prefix`, the client settings object stores
//! other than AWS need, a small Tokio runtime so the rest of billpipe can stay synchronous and
//! thread-based, and [`S3Store`], the [`Store`] backend sources and lakes on S3 use.
//!
//! Settings that matter for Tencent COS (and Garage, MinIO): the endpoint (`--endpoint` or
//! `AWS_ENDPOINT_URL`), the provider's region code as signing region, virtual-hosted addressing
//! unless `--path-style` (COS refuses path-style for buckets made after 2024-01-01), and SDK
//! checksums only "when required" (COS and Garage reject the SDK's default aws-chunked
//! streaming checksums).
//!
//! Credentials are resolved once when connecting, before any request: without them the SDK's
//! chain ends in the EC2 metadata service and the first request fails with "IMDS is disabled",
//! which tells a newcomer nothing. `connect` says instead which keys or profile to give (the
//! chain's own detail is logged at `-v`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    ConfigBag, Intercept, ProvideCredentials, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, RuntimeComponents,
};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_types::byte_stream::Length;
use aws_smithy_types::date_time::Format;

use bytes::Bytes;

use super::{ObjectInfo, Store};
use crate::{Error, Result};

/// `s3://bucket/prefix` split into its parts. The prefix is a folder: it is empty or ends in `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
}

impl S3Location {
    pub fn parse(uri: &str) -> Option<S3Location> {
        let rest = uri.strip_prefix("s3://")?;
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return None;
        }
        let mut prefix = prefix.trim_start_matches('/').to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Some(S3Location {
            bucket: bucket.to_string(),
            prefix,
        })
    }

    pub fn uri(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Connection settings from the command line; everything else comes from the standard AWS
/// environment and profile chain (credentials, `AWS_REGION`, `AWS_ENDPOINT_URL`).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    /// ListObjectsV2 instead of the v1 marker listing COS documents.
    pub list_v2: bool,
    /// Lake files larger than this are uploaded in parts of this size (0 = the default,
    /// 16 MiB; S3 and COS need at least 5 MiB per part).
    pub part_bytes: u64,
}

/// A client plus the runtime its futures run on.
#[derive(Clone)]
pub struct S3Context {
    pub client: Client,
    pub runtime: Arc<tokio::runtime::Runtime>,
    pub options: S3Options,
}

impl S3Context {
    pub fn connect(options: &S3Options) -> Result<S3Context> {
        let from_env = std::env::var("AWS_ENDPOINT_URL").ok();
        for (url, from) in [
            (options.endpoint.as_deref(), "--endpoint"),
            (from_env.as_deref(), "AWS_ENDPOINT_URL"),
        ] {
            if let Some(url) = url {
                check_endpoint(url, from)?;
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("billpipe-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the S3 runtime: {e}")))?;
        let client = runtime.block_on(async {
            let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
            if let Some(endpoint) = &options.endpoint {
                loader = loader.endpoint_url(endpoint);
            }
            if let Some(region) = &options.region {
                loader = loader.region(Region::new(region.clone()));
            }
            let shared = loader.load().await;
            let credentials = match shared.credentials_provider() {
                Some(provider) => provider.provide_credentials().await.map_err(|e| {
                    aws_sdk_s3::error::DisplayErrorContext(e).to_string()
                }),
                None => Err("no credentials provider".to_string()),
            };
            if let Err(detail) = credentials {
                tracing::info!("S3 credential chain: {detail}");
                return Err(Error::Config(NO_CREDENTIALS.into()));
            }
            let config = aws_sdk_s3::config::Builder::from(&shared)
                .retry_config(retry_config())
                .timeout_config(timeout_config())
                .interceptor(RetryLogger)
                .force_path_style(options.path_style)
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
                .build();
            if config.region().is_none() {
                return Err(Error::Config(
                    "no S3 region: pass --region or set AWS_REGION (for COS, the region code such as ap-guangzhou)".into(),
                ));
            }
            Ok(Client::from_conf(config))
        })?;
        Ok(S3Context {
            client,
            runtime: Arc::new(runtime),
            options: options.clone(),
        })
    }
}

/// What to do when the credential chain finds nothing, in one line.
pub const NO_CREDENTIALS: &str = "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (for COS: your SecretId and SecretKey), or a profile (AWS_PROFILE, ~/.aws/credentials); BILLPIPE_LOG=info (or run -v) shows where billpipe looked";

/// Transient failures (5xx, SlowDown and other throttling, timeouts, connection errors) are
/// retried by the SDK's standard strategy: exponential backoff with full jitter, 6 attempts,
/// at most 8 s between attempts. Permanent ones (403, 404, NoSuchBucket) are not retried.
fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(6)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(8))
}

/// Bounds how long any one request may hang: connecting, and each attempt as a whole (an
/// attempt covers sending and receiving the response head; body streaming is watched by the
/// fetch stage, which detects bodies that end early).
fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .operation_attempt_timeout(Duration::from_secs(300))
        .build()
}

/// Logs every retry the SDK makes, with the operation, so flaky storage is visible.
#[derive(Debug)]
struct RetryLogger;

impl Intercept for RetryLogger {
    fn name(&self) -> &'static str {
        "billpipe-retry-logger"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let attempt = cfg
            .load::<RequestAttempts>()
            .map(|a| a.attempts())
            .unwrap_or(1);
        if attempt > 1 {
            let op = cfg
                .load::<Metadata>()
                .map(|m| m.name().to_string())
                .unwrap_or_default();
            tracing::warn!("S3 {op}: transient failure, retrying (attempt {attempt})");
        }
        Ok(())
    }
}

/// One line saying what went wrong with an S3 request, for people: the service's error code,
/// HTTP status and message, with a hint for the usual causes; or why the endpoint could not be
/// reached.
pub fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = match err {
        SdkError::ServiceError(_) => {
            let status = err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            let code = err.code().unwrap_or(match status {
                403 => "AccessDenied",
                404 => "NotFound",
                412 => "PreconditionFailed",
                _ => "Error",
            });
            let hint = match code {
                "NoSuchBucket" => " - does the bucket exist at this endpoint and region?",
                "PreconditionFailed" => " - the object changed since it was listed",
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" => {
                    " - check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile) and the region"
                }
                _ => "",
            };
            let message = err.message().map(|m| format!(": {m}")).unwrap_or_default();
            format!("{code} (HTTP {status}){message}{hint}")
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            format!("cannot reach the endpoint: {}", root_cause(err))
        }
        _ => aws_sdk_s3::error::DisplayErrorContext(err).to_string(),
    };
    text.replace(['\n', '\r'], " ")
}

/// The innermost error of a chain, which is where "connection refused" lives.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// An endpoint URL must not carry credentials (`https://key:secret@host`): the SDK would log
/// the URL, password included, and a URL is the wrong place for a secret anyway.
fn check_endpoint(url: &str, from: &str) -> Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(Error::Config(format!(
            "{from} carries credentials in the URL (user:password@host); give the endpoint without them and the keys as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (for COS: SecretId / SecretKey) or a profile"
        )));
    }
    Ok(())
}

/// Files above this go up in parts of this size, unless `S3Options::part_bytes` says otherwise.
const MULTIPART_BYTES: u64 = 16 << 20;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_with_credentials_are_refused() {
        assert!(check_endpoint("https://cos.ap-guangzhou.myqcloud.com", "x").is_ok());
        assert!(check_endpoint("http://127.0.0.1:3900/path@x", "x").is_ok());
        let e = check_endpoint("https://AKID:s3cr3t@cos.example.com", "--endpoint").unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert!(check_endpoint("user@host:9000", "x").is_err());
    }

    #[test]
    fn parses_uris() {
        assert_eq!(
            S3Location::parse("s3://b/bills").unwrap(),
            S3Location {
                bucket: "b".into(),
                prefix: "bills/".into()
            }
        );
        assert_eq!(S3Location::parse("s3://b").unwrap().prefix, "");
        assert_eq!(S3Location::parse("s3://b/").unwrap().prefix, "");
        assert!(S3Location::parse("s3:///x").is_none());
        assert!(S3Location::parse("/tmp/x").is_none());
    }
}
