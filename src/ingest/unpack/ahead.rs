//! Decompression on a thread of its own: a decompressing reader is read ahead, in chunks,
//! through a bounded channel, while the caller's thread parses what came before.
//!
//! Inflating a zipped bill was a fifth of the decode thread's time (perf, 20,000-customer
//! consolidated bill), and that thread is the one every shape of bill waits on: while it parses
//! a consolidated bill, the other core is two-thirds idle, and a single account's writer leaves
//! a quarter of it. Moved here, inflating overlaps parsing (measured in the README). Memory is
//! bounded by `CHUNKS` chunks of `CHUNK_BYTES`, recycled rather than reallocated.
//!
//! Plain objects are not read ahead: the fetch thread already hands them over in chunks, and a
//! second copy would buy nothing. Errors of the reader (a corrupt member, a limit hit) reach the
//! consumer as the same `io::Error`, in order, after the bytes that came before them.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};

use crate::{Error, Result};

const CHUNK_BYTES: usize = 256 << 10;
const CHUNKS: usize = 4;

/// Calls `consume` with a reader of `input`'s bytes, which a scoped thread reads ahead. Returns
/// what `consume` returned, and whether it left bytes unread (the caller's business to refuse:
/// `unpack` does, as it does for every stream).
pub(super) fn read_ahead<T>(
    input: &mut (dyn Read + Send),
    consume: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<(T, bool)> {
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHUNKS);
    let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(CHUNKS + 1);
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("billpipe-unpack".into())
            .spawn_scoped(s, move || produce(input, full_tx, empty_rx))
            .map_err(|e| Error::io("unpack thread", e))?;
        let mut reader = Ahead {
            full: full_rx,
            empty: empty_tx,
            current: Vec::new(),
            at: 0,
            done: false,
        };
        let value = consume(&mut reader)?;
        let mut byte = [0u8; 1];
        let left = !matches!(reader.read(&mut byte), Ok(0));
        // Dropping the reader closes both channels, so a producer still reading stops at its
        // next chunk and the scope can end.
        drop(reader);
        Ok((value, left))
    })
}

/// The producing side: fills chunks (recycled ones when the consumer has handed them back)
/// until the input ends, fails, or the consumer is gone.
fn produce(
    input: &mut (dyn Read + Send),
    full: SyncSender<io::Result<Vec<u8>>>,
    empty: Receiver<Vec<u8>>,
) {
    loop {
        let mut chunk = empty.try_recv().unwrap_or_default();
        chunk.resize(CHUNK_BYTES, 0);
        let mut filled = 0;
        let result = loop {
            match input.read(&mut chunk[filled..]) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    filled += n;
                    if filled == chunk.len() {
                        break Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        chunk.truncate(filled);
        let ended = filled < CHUNK_BYTES;
        if filled > 0 && full.send(Ok(chunk)).is_err() {
            return;
        }
        match result {
            Err(e) => {
                let _ = full.send(Err(e));
                return;
            }
            Ok(()) if ended => return,
            Ok(()) => {}
        }
    }
}

/// The consuming side: a plain reader over the chunks.
struct Ahead {
    full: Receiver<io::Result<Vec<u8>>>,
    empty: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    done: bool,
}

impl Read for Ahead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.full.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.current, chunk);
                    self.at = 0;
                    let _ = self.empty.try_send(used);
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The producer ended after its last chunk.
                Err(_) => self.done = true,
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out `data` a few bytes at a time, then fails with `error` if one is given.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        error: Option<io::ErrorKind>,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                return match self.error {
                    Some(kind) => Err(io::Error::new(kind, "the member is corrupt")),
                    None => Ok(0),
                };
            }
            let n = buf.len().min(7).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn every_byte_arrives_in_order_across_chunks() {
        for n in [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, 3 * CHUNK_BYTES + 17] {
            let data = bytes(n);
            let mut input = Trickle {
                data: data.clone(),
                at: 0,
                error: None,
            };
            let (got, left) = read_ahead(&mut input, |r| {
                let mut out = Vec::new();
                r.read_to_end(&mut out).map_err(|e| Error::io("test", e))?;
                Ok(out)
            })
            .unwrap();
            assert_eq!(got, data, "{n} bytes");
            assert!(!left);
        }
    }

    #[test]
    fn an_error_arrives_after_the_bytes_before_it() {
        let data = bytes(CHUNK_BYTES + 100);
        let mut input = Trickle {
            data: data.clone(),
            at: 0,
            error: Some(io::ErrorKind::InvalidData),
        };
        let (got, _) = read_ahead(&mut input, |r| {
            let mut out = Vec::new();
            let e = r.read_to_end(&mut out).unwrap_err();
            Ok((out, e.kind(), e.to_string()))
        })
        .unwrap();
        assert_eq!(got.0, data);
        assert_eq!(got.1, io::ErrorKind::InvalidData);
        assert_eq!(got.2, "the member is corrupt");
    }

    #[test]
    fn a_consumer_that_stops_early_is_told_and_does_not_hang() {
        for n in [10, 5 * CHUNK_BYTES] {
            let mut input = Trickle {
                data: bytes(n),
                at: 0,
                error: None,
            };
            let (_, left) = read_ahead(&mut input, |r| {
                let mut first = [0u8; 3];
                r.read_exact(&mut first).map_err(|e| Error::io("test", e))?;
                Ok(())
            })
            .unwrap();
            assert!(left, "{n} bytes");
        }
    }

    #[test]
    fn a_consumer_error_is_returned_and_does_not_hang() {
        let mut input = Trickle {
            data: bytes(5 * CHUNK_BYTES),
            at: 0,
            error: None,
        };
        let got = read_ahead(&mut input, |_| -> Result<()> {
            Err(Error::rejected("not a bill"))
        });
        assert!(got.is_err());
    }
}
