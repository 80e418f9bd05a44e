//! A directory archive (a backup taken as pieces, `pg_dump -Fd -Z0`) written out as one
//! custom-format archive (`pg_dump -Fc -Z0`), so that `drctl cat ID | pg_restore -d DB`
//! works for every logical backup, whichever form it was stored in.
//!
//! The two formats share their header and table of contents byte for byte, except for:
//!
//! * the format byte of the header: 3 in a `toc.dat` (pg_dump gives it the tar format's
//!   code), 1 in a custom archive;
//! * the last field of every TOC entry: the data file's name (a string) in a `toc.dat`, the
//!   data's offset in a custom archive, here a flag byte "not set" (1, the entry has data)
//!   or "no data" (3) and `offSize` zero bytes, as pg_dump writes to a pipe.
//!
//! The data follows the TOC as blocks, in TOC order (a pg_restore reading a pipe cannot
//! seek back): a table's block is `BLK_DATA`, its dump id, then its data file's bytes as
//! length-prefixed chunks up to a zero length; a large-object group's block is `BLK_BLOBS`,
//! its dump id, then per line `OID FILE` of its list its OID and that file's chunks, and an
//! OID of 0 at the end (see [`crate::archive`] for the encoding).
//!
//! Every piece is checked as it is read (its SHA-256 and authentication tags): a damaged
//! piece stops the stream with an error before its end, and pg_restore, finding the archive
//! cut short, fails rather than restore part of a table as if it were whole.

use bytes::Bytes;
use dr_core::pieces::PieceSource;
use dr_core::{Error, ErrorKind, Result};
use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::archive::{ArchiveInspector, DataHolds};
use crate::directory::TOC_PIECE;

/// Byte of the header that holds the format code: after `PGDMP`, vmaj, vmin, vrev, intSize
/// and offSize.
const FORMAT_BYTE: usize = 10;
/// The format code of a custom archive, and the one pg_dump writes into a `toc.dat`.
const FORMAT_CUSTOM: u8 = 1;
const FORMAT_DIRECTORY_TOC: u8 = 3;
/// Data offset flags (`pg_backup_archiver.h`).
const OFFSET_NOT_SET: u8 = 1;
const OFFSET_NO_DATA: u8 = 3;
/// Block types.
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

/// Write the directory archive held in `pieces` to `out` as one custom-format archive.
/// Returns the bytes written.
pub async fn write_custom_archive(
    pieces: &dyn PieceSource,
    out: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<u64> {
    let toc = dr_core::stage::collect(pieces.open(TOC_PIECE).await?).await?;
    let mut inspector = ArchiveInspector::directory_toc();
    inspector.feed(&toc)?;
    let header = inspector
        .header()
        .cloned()
        .ok_or_else(|| Error::corrupt("toc.dat ends inside its header"))?;
    let directory = inspector.finish_directory()?;
    if toc.get(FORMAT_BYTE) != Some(&FORMAT_DIRECTORY_TOC) {
        return Err(Error::corrupt(
            "toc.dat does not carry a directory archive's format code",
        ));
    }
    let int = IntWriter {
        size: usize::from(header.int_size),
    };

    // The header and TOC: toc.dat's bytes, with the format code and each entry's last field
    // replaced.
    let mut head = Vec::with_capacity(toc.len());
    head.extend_from_slice(&toc[..FORMAT_BYTE]);
    head.push(FORMAT_CUSTOM);
    let mut copied = FORMAT_BYTE + 1;
    for entry in &directory.layout {
        let (start, end) = (
            usize::try_from(entry.file_field.start).expect("within toc.dat"),
            usize::try_from(entry.file_field.end).expect("within toc.dat"),
        );
        head.extend_from_slice(&toc[copied..start]);
        head.push(if entry.file.is_some() {
            OFFSET_NOT_SET
        } else {
            OFFSET_NO_DATA
        });
        head.extend(std::iter::repeat_n(0u8, usize::from(header.off_size)));
        copied = end;
    }
    head.extend_from_slice(&toc[copied..]);
    let mut sink = Sink { out, written: 0 };
    sink.write(&head).await?;

    for entry in &directory.layout {
        let Some(file) = &entry.file else { continue };
        match file.holds {
            DataHolds::Table(_) | DataHolds::Other => {
                sink.write(&[BLK_DATA]).await?;
                sink.write(&int.encode(entry.dump_id)).await?;
                sink.chunks_of(pieces, &file.name, &int).await?;
            }
            DataHolds::LargeObjects => {
                sink.write(&[BLK_BLOBS]).await?;
                sink.write(&int.encode(entry.dump_id)).await?;
                let list = dr_core::stage::collect(pieces.open(&file.name).await?).await?;
                for (oid, blob_file) in large_objects(&list, &file.name)? {
                    sink.write(&int.encode(oid)).await?;
                    sink.chunks_of(pieces, &blob_file, &int).await?;
                }
                sink.write(&int.encode(0)).await?;
            }
        }
    }
    sink.out
        .flush()
        .await
        .map_err(|e| write_error(e, sink.written))?;
    Ok(sink.written)
}

/// The lines `OID FILE` of a large-object list (`blobs.toc`).
fn large_objects(list: &[u8], list_name: &str) -> Result<Vec<(i64, String)>> {
    let text = std::str::from_utf8(list)
        .map_err(|_| Error::corrupt(format!("the large-object list {list_name} is not text")))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let bad = || Error::corrupt(format!("{list_name}: malformed line {line:?}"));
            let (oid, file) = line.split_once(' ').ok_or_else(bad)?;
            let oid = oid.parse::<i64>().map_err(|_| bad())?;
            dr_core::pieces::check_piece_name(file)?;
            Ok((oid, file.to_owned()))
        })
        .collect()
}

/// Encodes an archive's ints: a sign byte and `size` magnitude bytes, least significant
/// first.
struct IntWriter {
    size: usize,
}

impl IntWriter {
    fn encode(&self, value: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.size);
        out.push(u8::from(value < 0));
        let mut magnitude = value.unsigned_abs();
        for _ in 0..self.size {
            out.push((magnitude & 0xff) as u8);
            magnitude >>= 8;
        }
        out
    }
}

/// The output, counting what was written.
struct Sink<'a> {
    out: &'a mut (dyn AsyncWrite + Unpin + Send),
    written: u64,
}

impl Sink<'_> {
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .await
            .map_err(|e| write_error(e, self.written))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Piece `name`'s bytes as length-prefixed chunks, then the zero length that ends them.
    async fn chunks_of(
        &mut self,
        pieces: &dyn PieceSource,
        name: &str,
        int: &IntWriter,
    ) -> Result<()> {
        let mut stream = pieces.open(name).await?;
        while let Some(chunk) = stream.next().await {
            let chunk: Bytes = chunk?;
            // Chunks are at most a few MiB; an int holds 2^31 - 1.
            for part in chunk.chunks(1 << 30) {
                if part.is_empty() {
                    continue;
                }
                self.write(&int.encode(part.len() as i64)).await?;
                self.write(part).await?;
            }
        }
        self.write(&int.encode(0)).await
    }
}

fn write_error(e: std::io::Error, written: u64) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return Error::new(
            ErrorKind::Cancelled,
            format!("the reader stopped after {written} bytes, before the archive ended"),
        );
    }
    Error::io("writing the archive", e)
}
