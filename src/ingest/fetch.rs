//! The fetch stage: bytes of one object flow from the source, on a thread of their own, through
//! a bounded channel to whoever decodes them. The channel bounds memory (at most
//! `CHANNEL_CHUNKS` chunks in flight) and lets download and parsing overlap.
//!
//! [`FetchReader`] is the receiving end as a plain `std::io::Read`, so decoders are ordinary
//! synchronous readers. A fetch error reaches the reader as an I/O error, so a truncated or
//! failed download can never look like a complete file.
//!
//! The other direction: when the reader is dropped before the end (the decoder rejected the
//! file: a GBK byte, an over-long line, a corrupt member), sending a chunk fails, the callback
//! the source streams to returns false, and the source stops and returns `Ok` with the bytes it
//! sent. The decoder's error is the
//! cause; a source that reported its own error here ("file changed while it was read", because
//! fewer bytes were read than listed) would hide it, since the run reports a fetch error before
//! a decoder's. Only a reader that stops early does this, and `unpack` makes sure a reader is
//! only dropped early after an error: every stream is read to its end or rejected.

use std::io::{self, Read};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

use crate::store::source::{ObjectInfo, Source};
use crate::{Error, Result};

pub use crate::store::CHUNK_BYTES;
const CHANNEL_CHUNKS: usize = 8;

type Chunk = std::result::Result<Bytes, String>;

/// Receiving end: the object's bytes as a reader.
pub struct FetchReader {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
    done: bool,
}

impl Read for FetchReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.current.has_remaining() {
            if self.done {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(message)) => {
                    self.done = true;
                    return Err(io::Error::other(message));
                }
                None => self.done = true,
            }
        }
        let n = buf.len().min(self.current.remaining());
        self.current.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
}

/// What a finished download reports.
#[derive(Debug, Clone, Copy)]
pub struct Fetched {
    pub bytes: u64,
    pub seconds: f64,
}

/// Starts streaming `object` on a new thread.
pub fn spawn(
    source: Arc<Source>,
    object: ObjectInfo,
) -> Result<(FetchReader, JoinHandle<Result<Fetched>>)> {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let handle = std::thread::Builder::new()
        .name("billpipe-fetch".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            // Called on this plain thread (never inside the S3 runtime), so it may block.
            let result = source.stream(&object, &mut |chunk| tx.blocking_send(Ok(chunk)).is_ok());
            if let Err(e) = &result {
                // Make the failure visible to the reader, not just a short file.
                let _ = tx.blocking_send(Err(e.to_string()));
            }
            result.map(|bytes| Fetched {
                bytes,
                seconds: started.elapsed().as_secs_f64(),
            })
        })
        .map_err(|e| Error::io("fetch thread", e))?;
    Ok((
        FetchReader {
            rx,
            current: Bytes::new(),
            done: false,
        },
        handle,
    ))
}
