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
//! chain's own detail is logged at `-v`).//!
//! Files: this module holds the location, the settings and the connection (`S3Context`), and
//! how SDK errors are told; `bucket` is the [`S3Store`] backend.

mod bucket;

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
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;

use crate::{Error, Result};
pub use bucket::{S3Store, MIN_PART_BYTES};

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
