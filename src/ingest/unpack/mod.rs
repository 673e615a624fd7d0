//! Decompression, part of the fetch stage: whatever an object's name or Content-Encoding says,
//! its first bytes decide what it is: gzip (`1f 8b`), zstd (`28 b5 2f fd`), zip (`50 4b 03 04`),
//! or plain. The same sniffing applies to every CSV member of a zip: a `part-1.csv` member that
//! is really gzip (or zstd) is decompressed, and a `.csv.gz` member that is really plain is read
//! as it is — a name is a hint, the bytes are the fact. A zip inside a zip is refused by name.
//!
//! gzip and zstd stream straight through. gzip may hold several members one after another
//! (`cat a.gz b.gz`), which are one stream. Zero bytes after the last member are accepted and
//! dropped: tape- and block-oriented tools and some object stores pad a stream to a block size,
//! and GNU gzip also ignores trailing zeros; they cannot be mistaken for data because a gzip
//! member starts with `1f 8b`. Anything else after the last member (a non-zero byte, even after
//! some zeros) is an error naming its offset: it is not zero padding, and it may be a bill.
//!
//! A zip keeps its directory at the end, so it is first spilled to a temporary file (never held
//! in memory), then its members are read in order: every `.csv` member (a large month comes
//! split into several), `.csv.gz` members inside the zip too. A member with another name is
//! judged by its first bytes, since money must not hide behind a name: gzip or zstd, or text
//! whose first line is a header of five or more comma-separated names, is read as a CSV bill
//! (with a note); a zip inside the zip (or an `.xlsx`, which is one) rejects the object, as a
//! bill there could not be read; anything else (a PDF, a README) is skipped with a note, and so
//! is the macOS Finder's `__MACOSX/` folder (resource forks named `._x.csv`, not bills). Member names are never used as paths; a name that tries to climb out of the archive
//! (`../`, absolute) rejects the object. A member is named `key#file.csv` after its file name,
//! or `key#folder/file.csv` when two members in different folders share a file name, so lineage
//! and quarantine lines always point at one member.
//!
//! Two CSV members with the *same* name reject the zip, naming the member and saying whether the
//! two copies are identical. Loading both would count the money twice when the second is an
//! accidental re-add of the same file (`zip -g`, a retried export appending to the archive),
//! which is the usual way a zip gets duplicate names; loading one — what the zip reader's index
//! and any unzip tool keep — silently drops the other when they differ, and a zip cannot say
//! whether a differing second copy replaces the first (a restatement) or adds to it (a second
//! part). Every guess can be wrong by a whole member's money; refusing cannot, and the lake keeps
//! the previous snapshot until a clean archive is delivered. Duplicate names among skipped
//! members (two `readme.txt`) change nothing and are ignored.
//!
//! Zip-bomb guards: a member's declared expansion ratio and size are checked before reading, and
//! the bytes actually produced are counted against the same limits while reading, so a member
//! that lies about its size is stopped too. Errors name the member.
//!
//! Every stream is read to its end: after the consumer returns, the bytes left must be none, or
//! the object is rejected. A consumer that stops early without an error would otherwise load a
//! part of a file as if it were the whole, and the source, seeing its reader gone, could not tell
//! that from a consumer that stopped on an error (see `fetch`).
//!
//! Files: this module sniffs and dispatches (`for_each_member`); `archive` reads the members of
//! a zip, `stream` holds the readers that decompress gzip and guard every stream's size, and
//! `ahead` runs a decompressing stream on a thread of its own, a few chunks ahead of its reader.

mod ahead;
mod archive;
mod stream;
#[cfg(test)]
mod tests;

use std::io::{self, Read};
use std::path::Path;

use crate::{Error, Result};
use archive::zip_members;
use stream::{Counted, Guarded, GzipStream};

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

impl Compression {
    fn label(self) -> &'static str {
        match self {
            Compression::Plain => "plain",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Zip => "zip",
        }
    }
}

pub fn sniff(prefix: &[u8]) -> Compression {
    match prefix {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [0x50, 0x4b, 0x03, 0x04, ..] | [0x50, 0x4b, 0x05, 0x06, ..] => Compression::Zip,
        _ => Compression::Plain,
    }
}

/// What a zip member not named `.csv` holds, judged from its first bytes.
#[derive(Debug, PartialEq, Eq)]
enum MemberContent {
    /// Compressed (gzip, zstd), or text whose first line looks like a CSV header: read it.
    Bill,
    /// A zip (a nested zip, an .xlsx): unreadable here.
    Archive,
    /// Anything else (a PDF, a README): not a bill.
    Other,
}

fn member_content(head: &[u8]) -> MemberContent {
    match sniff(head) {
        Compression::Gzip | Compression::Zstd => return MemberContent::Bill,
        Compression::Zip => return MemberContent::Archive,
        Compression::Plain => {}
    }
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let first = text.split(|b| *b == b'\n').next().unwrap_or(b"");
    // A header line of a bill: valid UTF-8 (a cut at 4 KiB may split a character: allow a
    // short tail), no control bytes, and at least five comma-separated names.
    let valid = match std::str::from_utf8(first) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    };
    let columns = first.iter().filter(|b| **b == b',').count() + 1;
    let controls = first
        .iter()
        .any(|b| b.is_ascii_control() && *b != b'\r' && *b != b'\t');
    if valid && !controls && columns >= 5 {
        MemberContent::Bill
    } else {
        MemberContent::Other
    }
}

/// Reads up to 4 bytes (fewer only at the end of the stream) to sniff.
fn peek(input: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut prefix = Vec::with_capacity(4);
    input.take(4).read_to_end(&mut prefix)?;
    Ok(prefix)
}

/// Calls `each(name, reader)` for every CSV member of the object, decompressed, in order.
/// `name` is the object key, or `key#member` for a zip member. Returns notes on how the object
/// was packed and on skipped members.
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
    let prefix = peek(&mut input).map_err(|e| Error::fetch(key, e.to_string()))?;
    let kind = sniff(&prefix);
    let mut input = io::Cursor::new(prefix).chain(input);
    match kind {
        Compression::Zip => zip_members(input, key, limits, spill_dir, each),
        Compression::Plain => {
            // The fetch thread already reads a plain object ahead: no thread of our own.
            each(key, &mut input)?;
            ensure_drained(&mut input, key)?;
            Ok(Vec::new())
        }
        kind => {
            decompressed(kind, &mut input, key, limits, each)?;
            Ok(vec![format!("{}-compressed", kind.label())])
        }
    }
}

/// Hands the bytes of one plain, gzip or zstd stream, decompressed, to `each`, then checks that
/// the stream was read to its end. The stream is read ahead on a thread of its own (`ahead`).
fn decompressed(
    kind: Compression,
    input: &mut (dyn Read + Send),
    name: &str,
    limits: &Limits,
    each: &mut dyn FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut reader: Box<dyn Read + Send + '_> = match kind {
        Compression::Plain => Box::new(&mut *input),
        Compression::Gzip => {
            let (counted, consumed) = Counted::new(&mut *input);
            let decoder = GzipStream::new(counted, consumed.clone());
            Box::new(Guarded::new(decoder, name, limits).consumed(consumed))
        }
        Compression::Zstd => {
            let (counted, consumed) = Counted::new(&mut *input);
            let decoder = zstd::stream::read::Decoder::new(counted)
                .map_err(|e| Error::rejected(format!("{name}: not a readable zstd stream: {e}")))?;
            Box::new(Guarded::new(decoder, name, limits).consumed(consumed))
        }
        Compression::Zip => {
            return Err(Error::rejected(format!(
                "{name} is itself a zip archive; archives inside archives are not unpacked"
            )))
        }
    };
    let (_, left) = ahead::read_ahead(&mut *reader, |r| each(name, r))?;
    drop(reader);
    if left {
        return Err(not_drained(name));
    }
    ensure_drained(input, name)
}

fn not_drained(name: &str) -> Error {
    Error::rejected(format!(
        "{name}: reading stopped before the end of the data; nothing of it is loaded"
    ))
}

/// After a consumer is done with a stream: nothing may be left unread (see the module docs).
fn ensure_drained(input: &mut dyn Read, name: &str) -> Result<()> {
    let mut byte = [0u8; 1];
    match input.read(&mut byte) {
        Ok(0) => Ok(()),
        Ok(_) => Err(not_drained(name)),
        Err(e) => Err(Error::rejected(format!("{name}: {e}"))),
    }
}
