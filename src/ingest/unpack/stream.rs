//! The readers decompression is built from: `GzipStream` (several gzip members, then only zero
//! padding), `Counted` (compressed bytes consumed) and `Guarded` (the size and ratio limits on
//! the bytes produced).

use std::io::{self, BufRead, Read};

use super::Limits;

/// A gzip stream of one or more members, optionally followed by zero padding (see the module
/// docs). Each member's CRC-32 and length are checked by flate2 as it ends.
pub(super) struct GzipStream<R: Read> {
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
    pub(super) fn new(input: R, consumed: ByteCount) -> Self {
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

pub(super) type ByteCount = std::sync::Arc<std::sync::atomic::AtomicU64>;

/// Counts the compressed bytes a decompressor consumes, for the ratio check.
pub(super) struct Counted<R> {
    inner: R,
    bytes: ByteCount,
}

impl<R> Counted<R> {
    pub(super) fn new(inner: R) -> (Self, ByteCount) {
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
pub(super) struct Guarded<R> {
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
    pub(super) fn new(inner: R, name: &str, limits: &Limits) -> Self {
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

    pub(super) fn declared(mut self, packed: u64) -> Self {
        self.packed = Some(packed);
        self
    }

    pub(super) fn consumed(mut self, counter: ByteCount) -> Self {
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
