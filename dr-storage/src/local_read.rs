//! Reading an object of a local-folder repository in large chunks.
//!
//! object_store hands a local file out as a stream of 8 KiB chunks, each read dispatched to
//! Tokio's blocking pool on its own: 75,000 thread hand-overs per 600 MB object, and as many
//! wake-ups of every stage downstream. One blocking thread reading 1 MiB at a time does the
//! same work with 1/128 of the hand-overs.

use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use dr_core::{ByteStream, Error, ErrorKind, Result};
use futures::StreamExt;

/// Bytes per read, and so per chunk of the stream.
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks read ahead of the consumer.
const DEPTH: usize = 2;

/// The bytes `range` of the open file `file` (object `path`, for messages) as a stream.
pub(crate) fn local_file_stream(
    mut file: std::fs::File,
    range: Range<u64>,
    path: String,
) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(DEPTH);
    tokio::task::spawn_blocking(move || {
        let failed =
            |e: std::io::Error| Error::io("reading object", e).with_context("object", &path);
        if let Err(e) = file.seek(SeekFrom::Start(range.start)) {
            let _ = tx.blocking_send(Err(failed(e)));
            return;
        }
        let mut left = range.end.saturating_sub(range.start);
        while left > 0 {
            let want = usize::try_from(left).map_or(CHUNK_BYTES, |l| l.min(CHUNK_BYTES));
            let mut buf = BytesMut::zeroed(want);
            let mut got = 0;
            while got < want {
                match file.read(&mut buf[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(failed(e)));
                        return;
                    }
                }
            }
            if got == 0 {
                let _ = tx.blocking_send(Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("object '{path}' ended {left} bytes early"),
                )));
                return;
            }
            buf.truncate(got);
            left -= got as u64;
            if tx.blocking_send(Ok(buf.freeze())).is_err() {
                return; // the reader went away
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_range_in_large_chunks_and_reports_a_short_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("object");
        let data: Vec<u8> = (0..(3 * CHUNK_BYTES + 5))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();

        let open = || std::fs::File::open(&path).unwrap();
        let chunks: Vec<Bytes> = local_file_stream(open(), 7..data.len() as u64, "o".into())
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert_eq!(chunks[0].len(), CHUNK_BYTES);
        assert_eq!(chunks.concat(), &data[7..]);

        let past_end = data.len() as u64 + 10;
        let all: Vec<Result<Bytes>> = local_file_stream(open(), 0..past_end, "o".into())
            .collect()
            .await;
        let err = all.last().unwrap().as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
    }
}
