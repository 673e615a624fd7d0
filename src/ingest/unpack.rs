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

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Read, Seek, SeekFrom};
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
            decompressed(kind, &mut input, key, limits, each)?;
            Ok(Vec::new())
        }
        kind => {
            decompressed(kind, &mut input, key, limits, each)?;
            Ok(vec![format!("{}-compressed", kind.label())])
        }
    }
}

/// Hands the bytes of one plain, gzip or zstd stream, decompressed, to `each`, then checks that
/// the stream was read to its end.
fn decompressed(
    kind: Compression,
    input: &mut dyn Read,
    name: &str,
    limits: &Limits,
    each: &mut dyn FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    match kind {
        Compression::Plain => each(name, input)?,
        Compression::Gzip => {
            let (counted, consumed) = Counted::new(&mut *input);
            let decoder = GzipStream::new(counted, consumed.clone());
            let mut reader = Guarded::new(decoder, name, limits).consumed(consumed);
            each(name, &mut reader)?;
        }
        Compression::Zstd => {
            let (counted, consumed) = Counted::new(&mut *input);
            let decoder = zstd::stream::read::Decoder::new(counted)
                .map_err(|e| Error::rejected(format!("{name}: not a readable zstd stream: {e}")))?;
            let mut reader = Guarded::new(decoder, name, limits).consumed(consumed);
            each(name, &mut reader)?;
        }
        Compression::Zip => {
            return Err(Error::rejected(format!(
                "{name} is itself a zip archive; archives inside archives are not unpacked"
            )))
        }
    }
    ensure_drained(input, name)
}

/// After a consumer is done with a stream: nothing may be left unread (see the module docs).
fn ensure_drained(input: &mut dyn Read, name: &str) -> Result<()> {
    let mut byte = [0u8; 1];
    match input.read(&mut byte) {
        Ok(0) => Ok(()),
        Ok(_) => Err(Error::rejected(format!(
            "{name}: reading stopped before the end of the data; nothing of it is loaded"
        ))),
        Err(e) => Err(Error::rejected(format!("{name}: {e}"))),
    }
}

/// One central-directory entry as recorded, duplicates included.
struct RawEntry {
    name: Vec<u8>,
    crc32: u32,
    /// The 32-bit size field (`u32::MAX` when the real size is in a zip64 extra field).
    size: u32,
}

/// Every entry of the central directory starting at `start`, in order. The zip reader's index is
/// keyed by name and keeps only the last of several entries with one name, so the entries it
/// hides are found here, from the directory itself: a run of fixed 46-byte headers (signature
/// `50 4b 01 02`), each followed by its name, extra field and comment.
fn central_entries(file: &mut std::fs::File, start: u64) -> io::Result<Vec<RawEntry>> {
    file.seek(SeekFrom::Start(start))?;
    let mut reader = io::BufReader::new(file);
    let mut out = Vec::new();
    loop {
        let mut fixed = [0u8; 46];
        if reader.read_exact(&mut fixed).is_err() || fixed[..4] != [0x50, 0x4b, 0x01, 0x02] {
            return Ok(out);
        }
        let u16_at = |i: usize| u64::from(u16::from_le_bytes([fixed[i], fixed[i + 1]]));
        let u32_at =
            |i: usize| u32::from_le_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        let mut name = Vec::new();
        (&mut reader).take(u16_at(28)).read_to_end(&mut name)?;
        io::copy(
            &mut (&mut reader).take(u16_at(30) + u16_at(32)),
            &mut io::sink(),
        )?;
        out.push(RawEntry {
            name,
            crc32: u32_at(16),
            size: u32_at(24),
        });
    }
}

/// A member's path components, split on either separator.
fn components(raw_name: &str) -> impl Iterator<Item = &str> {
    raw_name.split(['/', '\\']).filter(|c| !c.is_empty())
}

/// Whether a member is loaded, by its file name: `.csv` or `.csv.gz`, outside `__MACOSX/`.
fn is_csv_name(raw_name: &str) -> bool {
    let base = components(raw_name)
        .last()
        .unwrap_or("")
        .to_ascii_lowercase();
    (base.ends_with(".csv") || base.ends_with(".csv.gz"))
        && !components(raw_name).any(|c| c == "__MACOSX")
}

/// Rejects the zip if two central-directory entries that would be loaded share a name (see the
/// module docs for why), naming them and saying whether the copies are the same.
fn refuse_duplicates(spill: &mut std::fs::File, directory_start: u64) -> Result<()> {
    let entries = central_entries(spill, directory_start)
        .map_err(|e| Error::rejected(format!("not a readable zip (central directory: {e})")))?;
    let mut by_name: BTreeMap<&[u8], Vec<(usize, &RawEntry)>> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        by_name.entry(&entry.name).or_default().push((i + 1, entry));
    }
    for (name, copies) in by_name {
        let shown = String::from_utf8_lossy(name);
        if copies.len() < 2 || !is_csv_name(&shown) {
            continue;
        }
        let numbers: Vec<String> = copies.iter().map(|(i, _)| format!("#{i}")).collect();
        let first = copies[0].1;
        let same = copies
            .iter()
            .all(|(_, e)| e.crc32 == first.crc32 && e.size == first.size);
        let how = if same {
            "identical copies (same size and CRC-32): loading both would count this money twice"
                .to_string()
        } else {
            let sizes: Vec<String> = copies
                .iter()
                .map(|(_, e)| match e.size {
                    u32::MAX => "zip64".to_string(),
                    s => format!("{s} bytes"),
                })
                .collect();
            format!(
                "the copies differ ({}): the zip cannot say whether the later one replaces or adds to the earlier",
                sizes.join(" vs ")
            )
        };
        return Err(Error::rejected(format!(
            "zip holds {} members named {shown:?} (entries {}); {how}; refusing the whole zip rather than loading one of them silently",
            copies.len(),
            numbers.join(", ")
        )));
    }
    Ok(())
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
        .map_err(|e| Error::fetch(key, e.to_string()))?;
    if copied > limits.max_zip_bytes {
        return Err(Error::rejected(format!(
            "zip of more than {} bytes; raise the limit if this is a real bill",
            limits.max_zip_bytes
        )));
    }
    let mut directory = spill.try_clone().map_err(|e| Error::io(spill_dir, e))?;
    let mut archive = zip::ZipArchive::new(spill)
        .map_err(|e| Error::rejected(format!("not a readable zip (truncated or corrupt?): {e}")))?;
    if archive.has_duplicate_names() {
        refuse_duplicates(&mut directory, archive.central_directory_start())?;
    }
    drop(directory);

    // First the names: which members load, and under what name.
    let mut notes = Vec::new();
    let mut macosx = 0;
    let mut wanted = Vec::new(); // (index, raw name, file name)
    for i in 0..archive.len() {
        let member = archive
            .by_index_data(i)
            .map_err(|e| Error::rejected(format!("zip member #{}: unreadable: {e}", i + 1)))?;
        let raw_name = member
            .name()
            .map(|n| n.to_string())
            .map_err(|e| Error::rejected(format!("zip member #{}: unreadable name: {e}", i + 1)))?;
        if member.enclosed_name().is_none() || components(&raw_name).any(|c| c == "..") {
            return Err(Error::rejected(format!(
                "zip member {raw_name:?} has a path that climbs out of the archive; refusing the whole zip"
            )));
        }
        let (is_dir, size) = (member.is_dir(), member.size());
        drop(member);
        if is_dir {
            continue;
        }
        if components(&raw_name).any(|c| c == "__MACOSX") {
            macosx += 1;
            continue;
        }
        if !is_csv_name(&raw_name) {
            // Money must not hide behind a name: a member whose bytes are a bill is read
            // whatever it is called; one that cannot be read (a zip inside the zip, an .xlsx)
            // rejects the object rather than leave its rows out in silence.
            let head = if size == 0 {
                Vec::new()
            } else {
                let mut m = archive.by_index(i).map_err(|e| {
                    Error::rejected(format!("zip member {raw_name:?}: unreadable: {e}"))
                })?;
                let mut head = Vec::new();
                (&mut m)
                    .take(4096)
                    .read_to_end(&mut head)
                    .map_err(|e| Error::rejected(format!("zip member {raw_name:?}: {e}")))?;
                head
            };
            match member_content(&head) {
                MemberContent::Bill => {
                    notes.push(format!(
                        "zip member {raw_name:?} is read as a CSV bill: its content is one, whatever its name"
                    ));
                }
                MemberContent::Archive => {
                    return Err(Error::rejected(format!(
                        "zip member {raw_name:?} is itself a zip archive (a nested zip, or an .xlsx): billpipe does not read inside it, and a bill there would be left out; unpack it, or deliver its CSV"
                    )))
                }
                MemberContent::Other => {
                    notes.push(format!(
                        "skipped zip member {raw_name:?} (not a CSV by name or content)"
                    ));
                    continue;
                }
            }
        }
        // Directory components are not ours to trust or use as paths: they only tell members
        // with the same file name apart.
        let base = components(&raw_name).last().unwrap_or("").to_string();
        wanted.push((i, raw_name, base));
    }
    if macosx > 0 {
        notes.push(format!(
            "skipped {macosx} zip member(s) under __MACOSX/ (macOS Finder metadata, not bills)"
        ));
    }
    let mut bases: HashMap<&str, usize> = HashMap::new();
    for (_, _, base) in &wanted {
        *bases.entry(base.as_str()).or_default() += 1;
    }
    let names: Vec<String> = wanted
        .iter()
        .map(|(_, raw_name, base)| match bases.get(base.as_str()) {
            Some(n) if *n > 1 => format!(
                "{key}#{}",
                components(raw_name).collect::<Vec<_>>().join("/")
            ),
            _ => format!("{key}#{base}"),
        })
        .collect();

    let mut csv_members = 0;
    for ((i, raw_name, _), name) in wanted.iter().zip(&names) {
        let mut member = archive
            .by_index(*i)
            .map_err(|e| Error::rejected(format!("zip member {raw_name:?}: unreadable: {e}")))?;
        let (size, packed) = (member.size(), member.compressed_size().max(1));
        if size > limits.max_bytes || size / packed > limits.max_ratio {
            return Err(Error::rejected(format!(
                "zip member {raw_name:?} would expand {} bytes to {size} ({}x; limits {} bytes, {}x): refusing a possible zip bomb",
                packed,
                size / packed,
                limits.max_bytes,
                limits.max_ratio
            )));
        }
        // The declared size is a claim; the bytes produced are held to it.
        let member_limits = Limits {
            max_bytes: size,
            ..limits.clone()
        };
        let mut checked = Guarded::new(&mut member, name, &member_limits).declared(packed);
        // The member's own first bytes decide, as an object's do.
        let prefix = peek(&mut checked).map_err(|e| Error::rejected(e.to_string()))?;
        let kind = sniff(&prefix);
        let mut content = io::Cursor::new(prefix).chain(&mut checked);
        decompressed(kind, &mut content, name, limits, each)?;
        if kind != Compression::Plain {
            notes.push(format!(
                "zip member {raw_name:?} is {}-compressed",
                kind.label()
            ));
        }
        csv_members += 1;
    }
    if csv_members == 0 {
        return Err(Error::rejected("zip holds no CSV member"));
    }
    notes.push(format!("zip with {csv_members} CSV member(s)"));
    Ok(notes)
}

/// A gzip stream of one or more members, optionally followed by zero padding (see the module
/// docs). Each member's CRC-32 and length are checked by flate2 as it ends.
struct GzipStream<R: Read> {
    state: GzipState<R>,
    /// Compressed bytes taken from the input so far (read ahead included), for offsets.
    consumed: ByteCount,
}

enum GzipState<R: Read> {
    Member(Box<flate2::bufread::GzDecoder<io::BufReader<R>>>),
    /// After the last member: only zero bytes may follow; the count so far.
    Padding(io::BufReader<R>, u64),
    Done,
    /// An error was returned; every later read returns it again rather than a quiet end.
    Failed(io::ErrorKind, String),
}

impl<R: Read> GzipStream<R> {
    fn new(input: R, consumed: ByteCount) -> Self {
        GzipStream {
            state: GzipState::Member(Box::new(flate2::bufread::GzDecoder::new(
                io::BufReader::new(input),
            ))),
            consumed,
        }
    }

    /// Offset in the compressed stream of the first byte `rest` has not handed out yet.
    fn offset(&self, rest: &io::BufReader<R>) -> u64 {
        self.consumed
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(rest.buffer().len() as u64)
    }

    /// One step: the next state, and the read's result if this step has one.
    fn advance(
        &self,
        state: GzipState<R>,
        buf: &mut [u8],
    ) -> io::Result<(GzipState<R>, Option<usize>)> {
        let bad = |message: String| io::Error::new(io::ErrorKind::InvalidData, message);
        match state {
            GzipState::Member(mut member) => {
                let n = member.read(buf)?;
                if n > 0 {
                    return Ok((GzipState::Member(member), Some(n)));
                }
                // The member ended whole; what follows decides what comes next.
                let mut rest = member.into_inner();
                match rest.fill_buf()?.first().copied() {
                    None => Ok((GzipState::Done, Some(0))),
                    Some(0x1f) => Ok((
                        GzipState::Member(Box::new(flate2::bufread::GzDecoder::new(rest))),
                        None,
                    )),
                    Some(0) => Ok((GzipState::Padding(rest, 0), None)),
                    Some(byte) => Err(bad(format!(
                        "the gzip data ends at byte {} and is followed by byte 0x{byte:02x}, which is neither another gzip member nor zero padding",
                        self.offset(&rest)
                    ))),
                }
            }
            GzipState::Padding(mut rest, zeros) => {
                let chunk = rest.fill_buf()?;
                if chunk.is_empty() {
                    return Ok((GzipState::Done, Some(0)));
                }
                let len = chunk.len();
                if let Some((at, byte)) = chunk.iter().enumerate().find(|(_, b)| **b != 0) {
                    let byte = *byte;
                    return Err(bad(format!(
                        "the gzip data is followed by {} zero byte(s) of padding, then byte 0x{byte:02x} at byte {}: only zeros may follow the gzip data",
                        zeros + at as u64,
                        self.offset(&rest) + at as u64
                    )));
                }
                rest.consume(len);
                Ok((GzipState::Padding(rest, zeros + len as u64), None))
            }
            GzipState::Done => Ok((GzipState::Done, Some(0))),
            GzipState::Failed(kind, message) => Err(io::Error::new(kind, message)),
        }
    }
}

impl<R: Read> Read for GzipStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let state = std::mem::replace(&mut self.state, GzipState::Done);
            match self.advance(state, buf) {
                Ok((next, done)) => {
                    self.state = next;
                    if let Some(n) = done {
                        return Ok(n);
                    }
                }
                Err(e) => {
                    self.state = GzipState::Failed(e.kind(), e.to_string());
                    return Err(e);
                }
            }
        }
    }
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
    fn members_are_judged_by_content_whatever_their_names() {
        assert_eq!(
            member_content(b"a,b,c,d,e\r\n1,2,3,4,5"),
            MemberContent::Bill
        );
        assert_eq!(member_content(&[0x1f, 0x8b, 8, 0]), MemberContent::Bill);
        assert_eq!(member_content(b"PK\x03\x04xlsx"), MemberContent::Archive);
        assert_eq!(member_content(b"Read me first.\n"), MemberContent::Other);
        assert_eq!(member_content(b"%PDF-1.7\n%\xE2\xE3"), MemberContent::Other);
        assert_eq!(member_content(b""), MemberContent::Other);
    }

    #[test]
    fn sniffs_by_magic_bytes() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"PK\x03\x04rest"), Compression::Zip);
        assert_eq!(sniff(b"AvailabilityZone,"), Compression::Plain);
        assert_eq!(sniff(b""), Compression::Plain);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data)
            .and_then(|_| e.finish())
            .unwrap_or_default()
    }

    /// Everything `for_each_member` hands out, or its error.
    fn unpacked(object: &[u8]) -> Result<(Vec<u8>, Vec<String>)> {
        let spill = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let mut out = Vec::new();
        let notes = for_each_member(
            object,
            "k",
            &Limits::default(),
            spill.path(),
            &mut |_, r| {
                r.read_to_end(&mut out)
                    .map_err(|e| Error::rejected(e.to_string()))?;
                Ok(())
            },
        )?;
        Ok((out, notes))
    }

    #[test]
    fn gzip_members_and_zero_padding_are_one_stream() {
        let mut object = gzip(b"a,b\r\n");
        object.extend(gzip(b"1,2\r\n"));
        assert_eq!(unpacked(&object).unwrap().0, b"a,b\r\n1,2\r\n");
        object.extend(vec![0u8; 70_000]); // more than one read-ahead buffer of zeros
        assert_eq!(unpacked(&object).unwrap().0, b"a,b\r\n1,2\r\n");
    }

    #[test]
    fn anything_but_zeros_after_gzip_is_an_error_with_its_offset() {
        let body = gzip(b"a,b\r\n1,2\r\n");
        let end = body.len();
        let mut garbage = body.clone();
        garbage.extend(b"PK junk");
        let e = unpacked(&garbage).unwrap_err().to_string();
        assert!(
            e.contains(&format!("ends at byte {end} and is followed by byte 0x50")),
            "{e}"
        );
        let mut late = body.clone();
        late.extend([0, 0, 0, 7]);
        let e = unpacked(&late).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "3 zero byte(s) of padding, then byte 0x07 at byte {}",
                end + 3
            )),
            "{e}"
        );
        let truncated = &body[..end - 3];
        assert!(unpacked(truncated).is_err());
    }

    #[test]
    fn a_zip_member_is_sniffed_like_an_object() {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        let mut add = |name: &str, data: &[u8]| {
            use std::io::Write;
            w.start_file(name, opts).unwrap();
            w.write_all(data).unwrap();
        };
        add("a.csv", &gzip(b"x\r\n1\r\n"));
        add("__MACOSX/._a.csv", &[0, 5, 22, 7, 0, 2, 0, 0]);
        add("b.csv.gz", b"x\r\n2\r\n");
        let zipped = w.finish().unwrap().into_inner();
        let (out, notes) = unpacked(&zipped).unwrap();
        assert_eq!(out, b"x\r\n1\r\nx\r\n2\r\n");
        assert!(notes.contains(&"zip member \"a.csv\" is gzip-compressed".to_string()));
        assert!(notes
            .iter()
            .any(|n| n.contains("1 zip member(s) under __MACOSX/")));
    }

    #[test]
    fn central_entries_keep_duplicate_names() {
        let mut w = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        for (name, data) in [("a.csv", &b"1"[..]), ("Z.csv", b"22")] {
            use std::io::Write;
            w.start_file(name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        let mut zipped = w.finish().unwrap().into_inner();
        for i in 0..zipped.len() - 5 {
            if &zipped[i..i + 5] == b"Z.csv" {
                zipped[i] = b'a';
            }
        }
        let e = unpacked(&zipped).unwrap_err().to_string();
        assert!(
            e.contains("zip holds 2 members named \"a.csv\" (entries #1, #2); the copies differ (1 bytes vs 2 bytes)"),
            "{e}"
        );
    }
}
