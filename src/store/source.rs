//! Where bill files come from: a [`Store`] and a key prefix, only listed and read. A local
//! folder (the offline default, used by the example bucket) is a `LocalStore` rooted at it; an
//! `s3://bucket/prefix` is an `S3Store` rooted at the bucket, listed under the prefix, so keys
//! (which the ledger records) are the objects' full keys, as they always were. What the bytes
//! mean is decided later (`classify`, `decode`).
//!
//! A source streams to a callback (the fetch stage's channel, see `fetch`) and knows nothing of
//! who reads: when the callback returns false the reader went away because of an error of its
//! own, which is the one to report, so the source stops and returns what it sent and never calls
//! the object short or changed for it.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::local::LocalStore;
use super::s3::{S3Context, S3Location, S3Store};
pub use super::ObjectInfo;
use super::Store;
use crate::{Error, Result};

/// The store bill files are read from, and the prefix they are listed under.
#[derive(Clone)]
pub struct Source {
    store: Arc<dyn Store>,
    prefix: String,
}

/// Opens `--source`: `s3://bucket/prefix` or a local folder.
pub fn open(uri: &str, s3: impl FnOnce() -> Result<S3Context>) -> Result<Source> {
    Source::open(uri, s3)
}

impl Source {
    /// Objects of `store` whose keys start with `prefix`.
    pub fn new(store: Arc<dyn Store>, prefix: impl Into<String>) -> Source {
        Source {
            store,
            prefix: prefix.into(),
        }
    }

    /// Opens `--source`: `s3://bucket/prefix` or a local folder (which must exist).
    pub fn open(uri: &str, s3: impl FnOnce() -> Result<S3Context>) -> Result<Source> {
        match S3Location::parse(uri) {
            Some(location) => Ok(Source::s3(location, s3()?)),
            None if uri.starts_with("s3://") => Err(Error::Config(format!("bad S3 URI {uri:?}"))),
            None => {
                let root = PathBuf::from(uri);
                if !root.is_dir() {
                    return Err(Error::Config(format!("source {uri} is not a folder")));
                }
                Ok(Source::local(root))
            }
        }
    }

    /// Every file under a local folder.
    pub fn local(root: impl Into<PathBuf>) -> Source {
        Source::new(Arc::new(LocalStore::new(root, "source")), "")
    }

    /// Every object under an S3 prefix, keyed by its full key.
    pub fn s3(location: S3Location, ctx: S3Context) -> Source {
        let prefix = location.prefix.clone();
        let bucket = S3Location {
            bucket: location.bucket,
            prefix: String::new(),
        };
        Source::new(Arc::new(S3Store::new(bucket, ctx)), prefix)
    }

    /// The source as a user would write it (`s3://…` or a path).
    pub fn uri(&self) -> String {
        format!("{}{}", self.store.uri(), self.prefix)
    }

    /// Every object under the source, in key order.
    pub fn list(&self) -> Result<Vec<ObjectInfo>> {
        self.store.list(&self.prefix)
    }

    /// Streams a listed object to `on_chunk` and returns the byte count (see
    /// [`Store::stream`]).
    pub fn stream(
        &self,
        object: &ObjectInfo,
        on_chunk: &mut dyn FnMut(Bytes) -> bool,
    ) -> Result<u64> {
        self.store.stream(object, on_chunk)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
