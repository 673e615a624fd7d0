//! Where bytes live. One small trait, [`Store`], says what billpipe needs of any storage: list
//! a prefix, stream or get an object, put a file or bytes (atomically replacing), create an
//! object only if it is absent, delete. Three backends implement it: [`local::LocalStore`] (a
//! folder), [`s3::S3Store`] (any S3-compatible bucket) and [`memory::MemoryStore`] (a map, for
//! tests). On top of it, [`source::Source`] is "the store bill files are read from" and
//! [`lake::Lake`] is "the store the lake is written to", with the lake's lock fence and staging.
//!
//! The shape follows the `object_store` crate (a store is a backend plus a root; keys are
//! `/`-separated strings relative to that root; conditional writes are typed, `put_if_absent`
//! fails with [`Error::AlreadyExists`] as object_store's `PutMode::Create` does; one behaviour
//! suite, `tests/store.rs`, runs against every backend). COS and other S3 stores stay on
//! `aws-sdk-s3` rather than object_store's S3 backend because users expect the AWS SDK's
//! credential chain and profiles, and COS needs quirks object_store does not offer: the v1
//! marker listing COS documents, checksums only "when required", virtual-hosted addressing.
//! Because the trait has object_store's shape, adopting it later is a backend swap, not a
//! rewrite of the callers.
//!
//! Every method is synchronous: the S3 backend runs its requests on its own small Tokio runtime
//! (see `s3`), so the rest of billpipe stays thread-based.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub mod lake;
pub mod local;
pub mod memory;
pub mod s3;
pub mod set_aside;
pub mod source;

/// The size of the chunks a store streams in (local files; S3 bodies come as the server sends
/// them).
pub const CHUNK_BYTES: usize = 1 << 20;

/// One listed object. `etag` is an opaque change marker (COS ETags are not MD5s; for local files
/// it is made from size and modification time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: Option<String>,
}

/// A place objects live: a backend plus a root (a folder, or a bucket and a key prefix). Keys
/// are `/`-separated and relative to the root.
pub trait Store: Send + Sync {
    /// The store's root as a user would write it (`s3://bucket/prefix/` or a path).
    fn uri(&self) -> String;

    /// Every object whose key starts with `prefix` (`""` for all), sorted by key. Paginated
    /// internally where the backend pages.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;

    /// Streams the object `listed` describes to `on_chunk`, chunk by chunk, and returns the
    /// byte count. Fails if the object changed since it was listed (its ETag, where `listed`
    /// has one, on S3 and in memory; its size locally) or ended early. When `on_chunk` returns
    /// false the reader has gone away (it stopped because of an error of its own, which is the
    /// one to report): streaming stops and returns `Ok` with the bytes sent so far, and never
    /// calls the object short or changed for it.
    fn stream(&self, listed: &ObjectInfo, on_chunk: &mut dyn FnMut(Bytes) -> bool) -> Result<u64>;

    /// The whole object, or `None` if there is none at `key`.
    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Moves the local file `from` to `key`, replacing atomically (readers see the old object or
    /// the new one, never a mix and never nothing). The local file is gone afterwards: renamed,
    /// or uploaded (in parts, above the part size) and removed.
    fn put_file(&self, from: &Path, key: &str) -> Result<()>;

    /// Moves many local files to their keys, each as [`Store::put_file`] does, and calls
    /// `published(i)` once file `i` is in place (in the order they land, not necessarily the
    /// list's). Stops at the first error, or when `published` fails, after the moves under way;
    /// files not moved stay where they were. A backend may move several at once (uploads) or
    /// make them durable together (locally: one file-system sync instead of two per file); by
    /// default they go one after the other.
    fn put_files(
        &self,
        files: &[(PathBuf, String)],
        published: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<()> {
        put_each(self, files, published)
    }

    /// Writes `bytes` to `key`, replacing atomically.
    fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()>;

    /// Writes `bytes` to `key` only if nothing is there yet; [`Error::AlreadyExists`] if
    /// something was. Exclusive (two racing writers: exactly one wins) only where
    /// [`Store::put_if_absent_is_exclusive`] says so.
    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<()>;

    /// Whether `put_if_absent` is truly exclusive here. S3 stores that ignore `If-None-Match`
    /// (Garage) or may (COS, unverified) overwrite instead, so callers must check what they
    /// wrote (see `lock`).
    fn put_if_absent_is_exclusive(&self) -> bool;

    /// Removes `key`; removing what is not there is no error.
    fn delete(&self, key: &str) -> Result<()>;
}

/// The message of a stream whose object is not the one listed any more.
/// [`Store::put_files`] one file after the other.
pub(crate) fn put_each<S: Store + ?Sized>(
    store: &S,
    files: &[(PathBuf, String)],
    published: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<()> {
    for (i, (from, key)) in files.iter().enumerate() {
        store.put_file(from, key)?;
        published(i)?;
    }
    Ok(())
}

pub(crate) fn changed(key: &str, listed: u64, read: u64) -> Error {
    Error::rejected(format!(
        "{key}: file changed while it was read ({listed} bytes listed, {read} read)"
    ))
}
