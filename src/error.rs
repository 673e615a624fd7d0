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
    Rejected(Rejection),

    /// Writing Parquet failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// Building Arrow arrays failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),

    /// Downloading an object broke off (connection reset, truncated body): worth another try.
    #[error("{object}: {reason}")]
    Fetch { object: String, reason: String },

    /// Something that cannot happen did: a worker thread panicked, a lock was poisoned.
    #[error("internal error: {0}")]
    Internal(String),

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
    /// An object's rejection for `reason` (where in the object, when known, is added with
    /// [`Rejection`]'s builders).
    pub fn rejected(reason: impl Into<String>) -> Self {
        Error::Rejected(Rejection::new(reason))
    }

    /// A download of `object` that broke off.
    pub fn fetch(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Fetch {
            object: object.into(),
            reason: reason.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why an object cannot be loaded, and where in it when that is known: the zip member, the
/// physical line and the column. Shown as `member: line N, column C: reason` (the parts known);
/// the object key is kept for the report's JSON, not repeated in the text, which the report
/// prints beside the key already.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub reason: String,
}

impl Rejection {
    pub fn new(reason: impl Into<String>) -> Self {
        Rejection {
            reason: reason.into(),
            ..Rejection::default()
        }
    }

    pub fn line(mut self, line: u64) -> Self {
        self.line = Some(line);
        self
    }

    pub fn column(mut self, column: impl Into<String>) -> Self {
        self.column = Some(column.into());
        self
    }

    /// The zip member it is about (kept if already set: the innermost one is the one).
    pub fn member(mut self, member: impl Into<String>) -> Self {
        self.member.get_or_insert_with(|| member.into());
        self
    }

    pub fn object(mut self, object: impl Into<String>) -> Self {
        self.object.get_or_insert_with(|| object.into());
        self
    }
}

impl From<Rejection> for Error {
    fn from(r: Rejection) -> Self {
        Error::Rejected(r)
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(member) = &self.member {
            write!(f, "{member}: ")?;
        }
        match (self.line, &self.column) {
            (Some(line), Some(column)) => write!(f, "line {line}, column {column}: ")?,
            (Some(line), None) => write!(f, "line {line}: ")?,
            (None, Some(column)) => write!(f, "column {column}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_read_as_before_and_keep_their_fields() {
        let r = Rejection::new("the row is of account \"2\"")
            .line(7)
            .column("BillingAccountId")
            .member("a.csv")
            .member("outer.csv")
            .object("bills.zip");
        assert_eq!(
            r.to_string(),
            "a.csv: line 7, column BillingAccountId: the row is of account \"2\""
        );
        assert_eq!(r.object.as_deref(), Some("bills.zip"));
        assert_eq!(Rejection::new("x").line(1).to_string(), "line 1: x");
        assert_eq!(Error::rejected("plain").to_string(), "plain");
        assert_eq!(
            Error::fetch("s3://b/k", "the body ended after 3 of 9 bytes").to_string(),
            "s3://b/k: the body ended after 3 of 9 bytes"
        );
    }
}
