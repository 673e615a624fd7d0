//! An in-memory [`Store`]: a sorted map behind a mutex. It exists for tests (the behaviour
//! suite runs against it beside the real backends, and unit tests of anything built on a store
//! need no folder or server), so it keeps the semantics the others promise and nothing more:
//! every write replaces atomically (under the lock), `put_if_absent` is exclusive, each write
//! gets a fresh ETag (a counter), and reading a listed object whose ETag changed fails.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use super::{ObjectInfo, Store, CHUNK_BYTES};
use crate::{Error, Result};

#[derive(Debug, Clone)]
struct Entry {
    bytes: Bytes,
    etag: String,
    last_modified: String,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    name: String,
    objects: Mutex<BTreeMap<String, Entry>>,
    writes: AtomicU64,
}

impl MemoryStore {
    /// An empty store; `name` shows in its URI (`memory://<name>/`).
    pub fn new(name: &str) -> Self {
        MemoryStore {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn objects(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        match self.objects.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn entry(&self, bytes: Bytes) -> Entry {
        let n = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        Entry {
            bytes,
            etag: format!("{n:x}"),
            last_modified: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }
    }
}

impl Store for MemoryStore {
    fn uri(&self) -> String {
        format!("memory://{}/", self.name)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| ObjectInfo {
                key: k.clone(),
                size: e.bytes.len() as u64,
                etag: e.etag.clone(),
                last_modified: Some(e.last_modified.clone()),
            })
            .collect())
    }

    fn stream(&self, listed: &ObjectInfo, on_chunk: &mut dyn FnMut(Bytes) -> bool) -> Result<u64> {
        let entry = self.objects().get(&listed.key).cloned();
        let entry = entry.ok_or_else(|| {
            Error::rejected(format!("{}{}: no such object", self.uri(), listed.key))
        })?;
        if !listed.etag.is_empty() && listed.etag != entry.etag {
            return Err(Error::rejected(format!(
                "{}: changed since it was listed (ETag {} listed, {} now)",
                listed.key, listed.etag, entry.etag
            )));
        }
        let mut total = 0u64;
        let mut rest = entry.bytes;
        while !rest.is_empty() {
            let chunk = rest.split_to(rest.len().min(CHUNK_BYTES));
            total += chunk.len() as u64;
            if !on_chunk(chunk) {
                return Ok(total);
            }
        }
        Ok(total)
    }

    fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.objects().get(key).map(|e| e.bytes.to_vec()))
    }

    fn put_file(&self, from: &Path, key: &str) -> Result<()> {
        let bytes = std::fs::read(from).map_err(|e| Error::io(from, e))?;
        self.put_bytes(key, &bytes)?;
        std::fs::remove_file(from).map_err(|e| Error::io(from, e))
    }

    fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let entry = self.entry(Bytes::copy_from_slice(bytes));
        self.objects().insert(key.to_string(), entry);
        Ok(())
    }

    fn put_if_absent(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let entry = self.entry(Bytes::copy_from_slice(bytes));
        let mut objects = self.objects();
        if objects.contains_key(key) {
            return Err(Error::AlreadyExists {
                key: key.to_string(),
            });
        }
        objects.insert(key.to_string(), entry);
        Ok(())
    }

    fn put_if_absent_is_exclusive(&self) -> bool {
        true
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.objects().remove(key);
        Ok(())
    }
}
