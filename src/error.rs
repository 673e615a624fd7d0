//! The library's error type. Errors name what failed (a file, an object key, a config entry)
//! so the CLI can print them without adding context it does not have.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pipeline or schema file is missing or invalid.
    #[error("configuration: {0}")]
    Config(String),

    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// An S3 request failed.
    #[error("S3 {op} s3://{bucket}/{key}: {message}")]
    S3 {
        op: &'static str,
        bucket: String,
        key: String,
        message: String,
    },

    /// A bill file cannot be loaded at all (unreadable, missing mandatory columns, ...).
    /// The rest of the run goes on.
    #[error("{0}")]
    Rejected(String),

    /// Writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// Building Arrow arrays failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),

    /// Downloading an object broke off (connection reset, truncated body): worth another try.
    #[error("{0}")]
    Fetch(String),

    /// `put_if_absent` found an object at `key` already (see `store::Store`).
    #[error("{key}: already exists")]
    AlreadyExists { key: String },

    /// Another run holds the lake's lock.
    #[error("{0}")]
    Locked(String),

    /// The ledger in the destination is unreadable.
    #[error("ledger {path}: {message}")]
    Ledger { path: String, message: String },

    /// A file in the lake is not what billpipe writes (unreadable Parquet, a column of another
    /// type, a partition value that does not unescape), or there is no lake at all.
    #[error("lake {path}: {message}")]
    Lake { path: String, message: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
