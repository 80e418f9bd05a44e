//! Byte streams and the threads that transform them.
//!
//! Every pipeline in dr is a chain of [`ByteStream`]s. CPU-bound work (compression,
//! encryption, hashing, archive inspection) is written as a synchronous [`Transform`] and run
//! by [`spawn_transform`] on a blocking thread of its own, joined to its neighbours by a bounded
//! channel: the stages overlap on different cores, and memory is bounded by
//! `chunk_bytes × depth` per stage, whatever the size of the data.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::mpsc;

use crate::error::{Error, ErrorKind, Result};

/// A stream of byte chunks, the currency of every pipeline stage.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A synchronous stream transform: compression, encryption, hashing.
///
/// Contract: `update` is called with consecutive pieces of the input, in order, of any size
/// (including empty); it appends whatever output is ready to `out`. `finish` is called once,
/// after the last input, and appends the rest. A transform that authenticates its input (a
/// decryptor) must return an error from `finish` if the input ended early, and must never put
/// unauthenticated bytes into `out`. After an error the transform is dropped.
pub trait Transform: Send + 'static {
    /// Consume `input`, append ready output to `out`.
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()>;
    /// The input is complete: append the remaining output to `out`.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()>;
}

/// Sizes that bound a pipeline's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageOptions {
    /// Target size of the chunks a stage emits.
    pub chunk_bytes: usize,
    /// Chunks buffered between two stages.
    pub depth: usize,
}

impl Default for StageOptions {
    fn default() -> Self {
        StageOptions {
            chunk_bytes: 1 << 20,
            depth: 4,
        }
    }
}

impl StageOptions {
    /// The most bytes one stage can hold: its output buffer plus its channel.
    pub fn bytes_per_stage(&self) -> usize {
        self.chunk_bytes * (self.depth + 2)
    }

    /// The smaller chunk size and the shallower depth of the two.
    pub fn at_most(self, limit: StageOptions) -> StageOptions {
        StageOptions {
            chunk_bytes: self.chunk_bytes.min(limit.chunk_bytes),
            depth: self.depth.min(limit.depth),
        }
    }
}

/// Run `transform` over `input` on a blocking thread; return its output as a stream.
///
/// Output is coalesced into chunks of about `opts.chunk_bytes`. An error from the input or
/// the transform is passed downstream as the stream's last item. If the returned stream is
/// dropped, the thread stops at its next send and drops the input.
///
/// Must be called inside a Tokio runtime.
pub fn spawn_transform<T: Transform + ?Sized>(
    input: ByteStream,
    transform: Box<T>,
    opts: StageOptions,
) -> ByteStream {
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(opts.depth.max(1));
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut input = input;
        let mut transform = transform;
        let mut out = Vec::with_capacity(opts.chunk_bytes + (opts.chunk_bytes >> 3));
        let send = |out: &mut Vec<u8>| -> bool {
            let mut chunk = std::mem::replace(
                out,
                Vec::with_capacity(opts.chunk_bytes + (opts.chunk_bytes >> 3)),
            );
            // A transform may grow the buffer well past what it fills (zstd reserves a whole
            // frame's bound, doubling the buffer): hand the spare capacity back before the
            // chunk waits in a channel. glibc shrinks in place (it splits the block, or
            // remaps a mapped one); another allocator may copy the filled part once.
            chunk.shrink_to_fit();
            // A transform may also emit far more than a chunk at once (a decoder given 1 MiB
            // of frames that compressed 4:1 emits 4 MiB): pass it on in slices of about
            // `chunk_bytes` (no copy), so that the channel's `depth` chunks and a consumer
            // that copies each chunk (tokio-postgres's COPY buffer) hold 1 MiB each, not 4.
            let mut chunk = Bytes::from(chunk);
            while chunk.len() >= 2 * opts.chunk_bytes {
                let slice = chunk.split_to(opts.chunk_bytes);
                if tx.blocking_send(Ok(slice)).is_err() {
                    return false;
                }
            }
            tx.blocking_send(Ok(chunk)).is_ok()
        };
        loop {
            match handle.block_on(input.next()) {
                Some(Ok(chunk)) => {
                    if let Err(e) = transform.update(&chunk, &mut out) {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                    if out.len() >= opts.chunk_bytes && !send(&mut out) {
                        return;
                    }
                }
                Some(Err(e)) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
                None => break,
            }
        }
        if let Err(e) = transform.finish(&mut out) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        if !out.is_empty() {
            send(&mut out);
        }
    });
    Box::pin(ReceiverStream { rx })
}

/// A `Stream` over a bounded channel's receiver.
struct ReceiverStream {
    rx: mpsc::Receiver<Result<Bytes>>,
}

impl Stream for ReceiverStream {
    type Item = Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Regroup a stream of small pieces (one per row from `COPY`, say) into chunks of at least
/// `chunk_bytes`, so that later stages work on large buffers. Runs inline; no thread.
pub fn coalesce(input: ByteStream, chunk_bytes: usize) -> ByteStream {
    let state = (input, Vec::<u8>::new(), false);
    Box::pin(futures::stream::unfold(
        state,
        move |(mut input, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                match input.next().await {
                    Some(Ok(chunk)) => {
                        if buf.is_empty() && chunk.len() >= chunk_bytes {
                            return Some((Ok(chunk), (input, buf, false)));
                        }
                        buf.extend_from_slice(&chunk);
                        if buf.len() >= chunk_bytes {
                            let out = Bytes::from(std::mem::take(&mut buf));
                            return Some((Ok(out), (input, buf, false)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (input, buf, true))),
                    None => {
                        if buf.is_empty() {
                            return None;
                        }
                        let out = Bytes::from(std::mem::take(&mut buf));
                        return Some((Ok(out), (input, buf, true)));
                    }
                }
            }
        },
    ))
}

/// Drain a stream, returning the number of bytes it carried.
pub async fn drain(mut stream: ByteStream) -> Result<u64> {
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        n += chunk?.len() as u64;
    }
    Ok(n)
}

/// A stream over one in-memory buffer, cut into `chunk_bytes` pieces (tests, small objects).
pub fn once_bytes(bytes: Bytes, chunk_bytes: usize) -> ByteStream {
    let chunk_bytes = chunk_bytes.max(1);
    let pieces: Vec<Result<Bytes>> = (0..bytes.len().div_ceil(chunk_bytes))
        .map(|i| Ok(bytes.slice(i * chunk_bytes..((i + 1) * chunk_bytes).min(bytes.len()))))
        .collect();
    Box::pin(futures::stream::iter(pieces))
}

/// Collect a whole stream into memory. For tests and small objects only.
pub async fn collect(mut stream: ByteStream) -> Result<Vec<u8>> {
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk?);
    }
    Ok(all)
}

/// The error a stage reports when its consumer went away.
pub fn cancelled(stage: &'static str) -> Error {
    Error::new(ErrorKind::Cancelled, "pipeline stage stopped").with_context("stage", stage)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Upper;
    impl Transform for Upper {
        fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
            out.extend(input.iter().map(|b| b.to_ascii_uppercase()));
            Ok(())
        }
        fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
            out.extend_from_slice(b"!");
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transform_runs_in_order_and_finishes() {
        let input = once_bytes(Bytes::from_static(b"hello world"), 3);
        let opts = StageOptions {
            chunk_bytes: 4,
            depth: 1,
        };
        let out = collect(spawn_transform(input, Box::new(Upper), opts))
            .await
            .unwrap();
        assert_eq!(out, b"HELLO WORLD!");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn input_error_reaches_the_end_of_the_chain() {
        let input: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"ok")),
            Err(Error::corrupt("bad chunk")),
        ]));
        let out = collect(spawn_transform(
            input,
            Box::new(Upper),
            StageOptions::default(),
        ))
        .await;
        assert_eq!(out.unwrap_err().kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn at_most_takes_the_smaller_of_each() {
        let asked = StageOptions {
            chunk_bytes: 256 << 10,
            depth: 4,
        };
        let limit = StageOptions {
            chunk_bytes: 512 << 10,
            depth: 1,
        };
        assert_eq!(
            asked.at_most(limit),
            StageOptions {
                chunk_bytes: 256 << 10,
                depth: 1
            }
        );
    }

    /// Emits eight bytes for every byte it is given (as a decoder of well-compressed data).
    struct Expand;
    impl Transform for Expand {
        fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
            for b in input {
                out.extend_from_slice(&[*b; 8]);
            }
            Ok(())
        }
        fn finish(&mut self, _out: &mut Vec<u8>) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_output_is_passed_on_in_slices_of_about_a_chunk() {
        let input: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
        let opts = StageOptions {
            chunk_bytes: 1000,
            depth: 2,
        };
        let mut out = spawn_transform(
            once_bytes(Bytes::from(input.clone()), 2000),
            Box::new(Expand),
            opts,
        );
        let mut all = Vec::new();
        while let Some(chunk) = out.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() < 2 * opts.chunk_bytes, "{}", chunk.len());
            all.extend_from_slice(&chunk);
        }
        let expected: Vec<u8> = input.iter().flat_map(|b| [*b; 8]).collect();
        assert_eq!(all, expected);
    }

    #[tokio::test]
    async fn coalesce_groups_small_pieces() {
        let pieces: Vec<Result<Bytes>> = (0..10).map(|_| Ok(Bytes::from_static(b"ab"))).collect();
        let mut s = coalesce(Box::pin(futures::stream::iter(pieces)), 5);
        let mut sizes = Vec::new();
        while let Some(c) = s.next().await {
            sizes.push(c.unwrap().len());
        }
        assert_eq!(sizes, vec![6, 6, 6, 2]);
    }
}
