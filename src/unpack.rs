//! Decompression, part of the fetch stage: whatever an object's name or Content-Encoding says,
//! its first bytes decide what it is: gzip (`1f 8b`), zstd (`28 b5 2f fd`), zip (`50 4b 03 04`),
//! or plain.
//!
//! gzip and zstd stream straight through. A zip keeps its directory at the end, so it is first
//! spilled to a temporary file (never held in memory), then its members are read in order: every
//! `.csv` member (a large month comes split into several), `.csv.gz` members inside the zip too;
//! other members are skipped with a note. Member names are never used as paths; a name that
//! tries to climb out of the archive (`../`, absolute) rejects the object.
//!
//! Zip-bomb guards: a member's declared expansion ratio and size are checked before reading, and
//! the bytes actually produced are counted against the same limits while reading, so a member
//! that lies about its size is stopped too. Errors name the member.

use std::io::{self, Read};
use std::path::Path;

use crate::{Error, Result};

/// Bounds on what decompression may produce.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest uncompressed size of one member or stream.
    pub max_bytes: u64,
    /// Largest expansion (uncompressed / compressed) of one compressed member or stream.
    pub max_ratio: u64,
    /// Largest zip object spilled to disk.
    pub max_zip_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 30,
            // Bill CSVs compress 10-20x; 200x leaves room and stops bombs (typically 1000x+).
            max_ratio: 200,
            max_zip_bytes: 64 << 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Zstd,
    Zip,
}

pub fn sniff(prefix: &[u8]) -> Compression {
    match prefix {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [0x50, 0x4b, 0x03, 0x04, ..] | [0x50, 0x4b, 0x05, 0x06, ..] => Compression::Zip,
        _ => Compression::Plain,
    }
}

/// Calls `each(name, reader)` for every CSV member of the object, decompressed, in order.
/// `name` is the object key, or `key#member` for a zip member. Returns notes on skipped
/// members.
pub fn for_each_member(
    input: impl Read + Send,
    key: &str,
    limits: &Limits,
    spill_dir: &Path,
    each: &mut dyn FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<Vec<String>> {
    // Peek at the magic bytes and hand them back in front of the stream (no extra buffer
    // layer: plain CSV, the common case, goes straight to the parser).
    let mut input = input;
    let mut prefix = Vec::with_capacity(4);
    (&mut input)
        .take(4)
        .read_to_end(&mut prefix)
        .map_err(|e| Error::Fetch(format!("{key}: {e}")))?;
    let kind = sniff(&prefix);
    let mut input = io::Cursor::new(prefix).chain(input);
    match kind {
        Compression::Plain => each(key, &mut input).map(|_| Vec::new()),
        Compression::Gzip => {
            let (counted, consumed) = Counted::new(input);
            let decoder = flate2::read::MultiGzDecoder::new(counted);
            let mut reader = Guarded::new(decoder, key, limits).consumed(consumed);
            each(key, &mut reader).map(|_| vec!["gzip-compressed".to_string()])
        }
        Compression::Zstd => {
            let (counted, consumed) = Counted::new(input);
            let decoder = zstd::stream::read::Decoder::new(counted)
                .map_err(|e| Error::Rejected(format!("{key}: not a readable zstd stream: {e}")))?;
            let mut reader = Guarded::new(decoder, key, limits).consumed(consumed);
            each(key, &mut reader).map(|_| vec!["zstd-compressed".to_string()])
        }
        Compression::Zip => zip_members(input, key, limits, spill_dir, each),
    }
}

fn zip_members(
    mut input: impl Read,
    key: &str,
    limits: &Limits,
    spill_dir: &Path,
    each: &mut dyn FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(spill_dir).map_err(|e| Error::io(spill_dir, e))?;
    let mut spill = tempfile::tempfile_in(spill_dir).map_err(|e| Error::io(spill_dir, e))?;
    let copied = io::copy(&mut (&mut input).take(limits.max_zip_bytes + 1), &mut spill)
        .map_err(|e| Error::Fetch(format!("{key}: {e}")))?;
    if copied > limits.max_zip_bytes {
        return Err(Error::Rejected(format!(
            "zip of more than {} bytes; raise the limit if this is a real bill",
            limits.max_zip_bytes
        )));
    }
    let mut archive = zip::ZipArchive::new(spill)
        .map_err(|e| Error::Rejected(format!("not a readable zip (truncated or corrupt?): {e}")))?;
    let mut notes = Vec::new();
    let mut csv_members = 0;
    for i in 0..archive.len() {
        let mut member = archive
            .by_index(i)
            .map_err(|e| Error::Rejected(format!("zip member #{}: unreadable: {e}", i + 1)))?;
        let raw_name = member
            .name()
            .map(|n| n.to_string())
            .map_err(|e| Error::Rejected(format!("zip member #{}: unreadable name: {e}", i + 1)))?;
        if member.enclosed_name().is_none() || raw_name.split(['/', '\\']).any(|c| c == "..") {
            return Err(Error::Rejected(format!(
                "zip member {raw_name:?} has a path that climbs out of the archive; refusing the whole zip"
            )));
        }
        if member.is_dir() {
            continue;
        }
        // Directory components are not ours to trust or use: only the file name counts.
        let base = raw_name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or(&raw_name)
            .to_string();
        let lower = base.to_ascii_lowercase();
        let gz = lower.ends_with(".csv.gz");
        if !lower.ends_with(".csv") && !gz {
            notes.push(format!("skipped zip member {raw_name:?} (not a CSV)"));
            continue;
        }
        let (size, packed) = (member.size(), member.compressed_size().max(1));
        if size > limits.max_bytes || size / packed > limits.max_ratio {
            return Err(Error::Rejected(format!(
                "zip member {raw_name:?} would expand {} bytes to {size} ({}x; limits {} bytes, {}x): refusing a possible zip bomb",
                packed,
                size / packed,
                limits.max_bytes,
                limits.max_ratio
            )));
        }
        let name = format!("{key}#{base}");
        // The declared size is a claim; the bytes produced are held to it.
        let member_limits = Limits {
            max_bytes: size,
            ..limits.clone()
        };
        let mut checked = Guarded::new(&mut member, &name, &member_limits).declared(packed);
        if gz {
            // The gzip inside gets its own guard, judged against the member's bytes.
            let (counted, consumed) = Counted::new(&mut checked);
            let decoder = flate2::read::MultiGzDecoder::new(counted);
            let mut inner = Guarded::new(decoder, &name, limits).consumed(consumed);
            each(&name, &mut inner)?;
        } else {
            each(&name, &mut checked)?;
        }
        csv_members += 1;
    }
    if csv_members == 0 {
        return Err(Error::Rejected("zip holds no CSV member".into()));
    }
    notes.push(format!("zip with {csv_members} CSV member(s)"));
    Ok(notes)
}

type ByteCount = std::sync::Arc<std::sync::atomic::AtomicU64>;

/// Counts the compressed bytes a decompressor consumes, for the ratio check.
struct Counted<R> {
    inner: R,
    bytes: ByteCount,
}

impl<R> Counted<R> {
    fn new(inner: R) -> (Self, ByteCount) {
        let bytes = ByteCount::default();
        (
            Counted {
                inner,
                bytes: bytes.clone(),
            },
            bytes,
        )
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// Stops a decompressor that produces more than the limits allow.
struct Guarded<R> {
    inner: R,
    name: String,
    max_bytes: u64,
    max_ratio: u64,
    produced: u64,
    /// Compressed size, if known up front (zip members); else counted as it is read.
    packed: Option<u64>,
    consumed: Option<ByteCount>,
}

impl<R: Read> Guarded<R> {
    fn new(inner: R, name: &str, limits: &Limits) -> Self {
        Guarded {
            inner,
            name: name.to_string(),
            max_bytes: limits.max_bytes,
            max_ratio: limits.max_ratio,
            produced: 0,
            packed: None,
            consumed: None,
        }
    }

    fn declared(mut self, packed: u64) -> Self {
        self.packed = Some(packed);
        self
    }

    fn consumed(mut self, counter: ByteCount) -> Self {
        self.consumed = Some(counter);
        self
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{}: corrupt or truncated compressed data: {e}", self.name),
            )
        })?;
        self.produced += n as u64;
        if self.produced > self.max_bytes {
            return Err(io::Error::other(format!(
                "{}: decompresses to more than {} bytes: refusing a possible bomb",
                self.name, self.max_bytes
            )));
        }
        let packed = self.packed.or_else(|| {
            self.consumed
                .as_ref()
                .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        });
        // Judge the ratio once enough output exists for it to mean something.
        if let Some(packed) = packed {
            if self.produced > (1 << 20) && self.produced / packed.max(1) > self.max_ratio {
                return Err(io::Error::other(format!(
                    "{}: expands more than {}x: refusing a possible bomb",
                    self.name, self.max_ratio
                )));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_magic_bytes() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"PK\x03\x04rest"), Compression::Zip);
        assert_eq!(sniff(b"AvailabilityZone,"), Compression::Plain);
        assert_eq!(sniff(b""), Compression::Plain);
    }
}
