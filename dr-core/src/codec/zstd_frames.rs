//! zstd as a sequence of independent frames of about [`FRAME_BYTES`] each.
//!
//! Why frames and not one streaming frame: each frame is compressed by one call into the
//! output buffer (`ZSTD_compress2` with a reused context), so zstd neither copies the input
//! into its window nor runs the slower "window wrapped around" match finder
//! (`ZSTD_compressBlock_fast_extDict`), which together took a fifth of a backup's CPU. Level 1's
//! window is 512 KiB, so frames of 1–2 MiB lose little ratio (BENCHMARKS.md). Every frame
//! records its content size, which lets the decoder write a whole frame straight into its
//! output. Concatenated frames are a valid zstd stream: `zstd -d` reads them as one.
//!
//! The decoder reads any zstd stream: the frames written here, and the single streaming
//! frame (no content size) that dr wrote before, decoded incrementally with bounded memory.

use std::io::Cursor;

use zstd::stream::raw::{Decoder as StreamDecoder, InBuffer, Operation, OutBuffer};
use zstd::zstd_safe::{self, CCtx, CParameter, DCtx};

use crate::error::{Error, ErrorKind, Result};
use crate::stage::Transform;

/// Raw bytes per frame: input is cut into frames of at least this size (the last one may
/// be shorter) and less than twice this size, so a chunk of 1–2 MiB from the source is
/// compressed where it lies, without being copied.
pub(crate) const FRAME_BYTES: usize = 1 << 20;

/// Frames whose content size is above this are decoded as a stream rather than whole, so
/// that a frame written by another tool cannot make the decoder buffer it all.
const WHOLE_FRAME_MAX: u64 = 8 << 20;

/// The most bytes a zstd frame header takes (`ZSTD_FRAMEHEADERSIZE_MAX`).
const FRAME_HEADER_MAX: usize = 18;

/// Bytes the streaming decoder is given room for at a time.
const STREAM_OUT_BYTES: usize = 256 << 10;

fn zstd_error(doing: &'static str, code: usize) -> Error {
    Error::new(
        ErrorKind::Other,
        format!("{doing}: {}", zstd_safe::get_error_name(code)),
    )
}

fn corrupt(detail: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("zstd data is malformed or truncated: {detail}"),
    )
}

/// Compresses into independent frames of [`FRAME_BYTES`] to `2 × FRAME_BYTES` raw bytes.
pub(crate) struct ZstdFrameEncoder {
    cctx: CCtx<'static>,
    /// Input not yet compressed: less than one frame.
    pending: Vec<u8>,
    /// Whether a frame was written; an empty input still gets one (empty) frame.
    wrote_frame: bool,
}

impl ZstdFrameEncoder {
    pub(crate) fn new(level: i32) -> Result<Self> {
        let mut cctx = CCtx::try_create()
            .ok_or_else(|| Error::new(ErrorKind::Other, "cannot allocate a zstd context"))?;
        cctx.set_parameter(CParameter::CompressionLevel(level))
            .map_err(|c| zstd_error("setting the zstd level", c))?;
        Ok(ZstdFrameEncoder {
            cctx,
            pending: Vec::new(),
            wrote_frame: false,
        })
    }

    /// Append `src` compressed as one frame to `out`.
    fn frame(cctx: &mut CCtx<'static>, src: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.reserve(zstd_safe::compress_bound(src.len()));
        let start = out.len() as u64;
        let mut at_end = Cursor::new(out);
        at_end.set_position(start);
        cctx.compress2(&mut at_end, src)
            .map_err(|c| zstd_error("zstd compression", c))?;
        Ok(())
    }
}

impl Transform for ZstdFrameEncoder {
    fn update(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if !self.pending.is_empty() {
            let take = (FRAME_BYTES - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() < FRAME_BYTES {
                return Ok(());
            }
            Self::frame(&mut self.cctx, &self.pending, out)?;
            self.pending.clear();
            self.wrote_frame = true;
        }
        while input.len() >= FRAME_BYTES {
            let n = if input.len() < 2 * FRAME_BYTES {
                input.len()
            } else {
                FRAME_BYTES
            };
            Self::frame(&mut self.cctx, &input[..n], out)?;
            self.wrote_frame = true;
            input = &input[n..];
        }
        if !input.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(FRAME_BYTES);
            }
            self.pending.extend_from_slice(input);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if !self.pending.is_empty() || !self.wrote_frame {
            Self::frame(&mut self.cctx, &self.pending, out)?;
            self.pending = Vec::new();
            self.wrote_frame = true;
        }
        Ok(())
    }
}

/// What the decoder knows about the frame that starts at the front of its input.
enum FrameStart {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// A whole frame of `stored` bytes that decompresses to `raw` bytes.
    Whole { stored: usize, raw: usize },
    /// A frame to decode as a stream: its size is unknown or large, or it is damaged (the
    /// stream decoder then reports how).
    Stream,
}

/// Decodes any sequence of zstd frames; fails at [`Transform::finish`] if the last frame is
/// incomplete. Whole frames of known size are decompressed in one call straight into the
/// output; others go through zstd's streaming decoder, also writing straight into the output.
pub(crate) struct ZstdFrameDecoder {
    dctx: DCtx<'static>,
    stream: StreamDecoder<'static>,
    /// The start of a frame not yet complete in the input (compressed bytes).
    pending: Vec<u8>,
    /// Inside a frame that the stream decoder is decoding.
    streaming: bool,
    /// Frames decoded to their end.
    frames: u64,
}

impl ZstdFrameDecoder {
    pub(crate) fn new() -> Result<Self> {
        Ok(ZstdFrameDecoder {
            dctx: DCtx::try_create()
                .ok_or_else(|| Error::new(ErrorKind::Other, "cannot allocate a zstd context"))?,
            stream: StreamDecoder::new().map_err(|e| Error::io("starting the zstd decoder", e))?,
            pending: Vec::new(),
            streaming: false,
            frames: 0,
        })
    }

    fn classify(src: &[u8], at_end: bool) -> FrameStart {
        if src.len() < FRAME_HEADER_MAX && !at_end {
            // The header may be shorter, but a whole frame of our size never is.
            return FrameStart::NeedMore;
        }
        let raw = match zstd_safe::get_frame_content_size(src) {
            Ok(Some(raw)) if raw <= WHOLE_FRAME_MAX => raw as usize,
            _ => return FrameStart::Stream,
        };
        match zstd_safe::find_frame_compressed_size(src) {
            Ok(stored) => FrameStart::Whole { stored, raw },
            // A frame of `raw` bytes takes at most compress_bound(raw) stored bytes, plus
            // its header and checksum; more than that without an end is damage.
            Err(_) if !at_end && src.len() < zstd_safe::compress_bound(raw) + 64 => {
                FrameStart::NeedMore
            }
            Err(_) => FrameStart::Stream,
        }
    }

    /// Decompress the whole frame `src` (of `raw` bytes) onto the end of `out`.
    fn whole(dctx: &mut DCtx<'static>, src: &[u8], raw: usize, out: &mut Vec<u8>) -> Result<()> {
        out.reserve(raw);
        let start = out.len();
        let mut at_end = Cursor::new(&mut *out);
        at_end.set_position(start as u64);
        let written = dctx
            .decompress(&mut at_end, src)
            .map_err(|c| corrupt(zstd_safe::get_error_name(c)))?;
        if written != raw {
            out.truncate(start);
            return Err(corrupt(format!(
                "a frame decompressed to {written} bytes, its header says {raw}"
            )));
        }
        Ok(())
    }

    /// Feed `input` to the stream decoder until its frame ends or the input is used up;
    /// returns the bytes consumed.
    fn stream(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize> {
        let mut inb = InBuffer::around(input);
        loop {
            out.reserve(STREAM_OUT_BYTES);
            let start = out.len();
            let consumed_before = inb.pos();
            let mut outb = OutBuffer::around_pos(&mut *out, start);
            let hint = self.stream.run(&mut inb, &mut outb).map_err(corrupt)?;
            let room_left = outb.pos() < outb.capacity();
            let progress = outb.pos() > start || inb.pos() > consumed_before;
            if hint == 0 && progress {
                // The frame is decoded and flushed; the next one starts after it.
                self.streaming = false;
                self.frames += 1;
                return Ok(inb.pos());
            }
            if inb.pos() == input.len() && room_left {
                return Ok(inb.pos());
            }
        }
    }

    /// Decode from the front of `src` as far as possible; returns the bytes consumed.
    fn decode(&mut self, src: &[u8], at_end: bool, out: &mut Vec<u8>) -> Result<usize> {
        let mut used = 0;
        while used < src.len() {
            if self.streaming {
                used += self.stream(&src[used..], out)?;
                if self.streaming {
                    break;
                }
                continue;
            }
            match Self::classify(&src[used..], at_end) {
                FrameStart::NeedMore => break,
                FrameStart::Whole { stored, raw } => {
                    Self::whole(&mut self.dctx, &src[used..used + stored], raw, out)?;
                    self.frames += 1;
                    used += stored;
                }
                FrameStart::Stream => self.streaming = true,
            }
        }
        Ok(used)
    }
}

impl Transform for ZstdFrameDecoder {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if input.is_empty() {
            return Ok(());
        }
        if self.pending.is_empty() {
            let used = self.decode(input, false, out)?;
            self.pending.extend_from_slice(&input[used..]);
        } else {
            self.pending.extend_from_slice(input);
            let pending = std::mem::take(&mut self.pending);
            let used = self.decode(&pending, false, out);
            self.pending = pending;
            self.pending.drain(..used?);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let used = self.decode(&pending, true, out)?;
        if self.streaming {
            // Let the stream decoder flush what it holds; a frame it completes ends here.
            self.stream(&[], out)?;
        }
        if self.streaming || used < pending.len() || self.frames == 0 {
            return Err(Error::corrupt(
                "zstd data is truncated: the last frame is incomplete",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tests::run;

    /// Compressible but not trivial: text-like rows with a counter.
    fn sample(len: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(len + 64);
        let mut i = 0u64;
        while data.len() < len {
            data.extend_from_slice(format!("{i}\tuser{}\t{}\n", i % 977, i * 7919).as_bytes());
            i += 1;
        }
        data.truncate(len);
        data
    }

    /// The raw size of every frame of `packed`, in order.
    fn frame_sizes(mut packed: &[u8]) -> Vec<u64> {
        let mut sizes = Vec::new();
        while !packed.is_empty() {
            let stored = zstd_safe::find_frame_compressed_size(packed).unwrap();
            sizes.push(
                zstd_safe::get_frame_content_size(packed)
                    .unwrap()
                    .expect("every frame records its size"),
            );
            packed = &packed[stored..];
        }
        sizes
    }

    #[test]
    fn input_is_cut_into_frames_of_one_to_two_mib_that_stock_zstd_reads_as_one_stream() {
        let data = sample(5 * FRAME_BYTES + 12_345);
        for piece in [4096, FRAME_BYTES + 77, 3 * FRAME_BYTES] {
            let packed = run(&mut ZstdFrameEncoder::new(1).unwrap(), &data, piece).unwrap();
            let sizes = frame_sizes(&packed);
            assert!(sizes.len() >= 3, "piece {piece}: {sizes:?}");
            assert_eq!(sizes.iter().sum::<u64>(), data.len() as u64);
            for s in &sizes[..sizes.len() - 1] {
                assert!(
                    (FRAME_BYTES as u64..2 * FRAME_BYTES as u64).contains(s),
                    "{sizes:?}"
                );
            }
            assert_eq!(zstd::stream::decode_all(&packed[..]).unwrap(), data);
        }
    }

    #[test]
    fn empty_input_is_one_empty_frame() {
        let packed = run(&mut ZstdFrameEncoder::new(1).unwrap(), &[], 1).unwrap();
        assert_eq!(frame_sizes(&packed), vec![0]);
        assert!(run(&mut ZstdFrameDecoder::new().unwrap(), &packed, 1)
            .unwrap()
            .is_empty());
        let none = run(&mut ZstdFrameDecoder::new().unwrap(), &[], 1);
        assert_eq!(none.unwrap_err().kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn reads_the_single_streaming_frame_that_older_versions_wrote() {
        let data = sample(3 * FRAME_BYTES + 999);
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        std::io::Write::write_all(&mut enc, &data).unwrap();
        let old = enc.finish().unwrap();
        assert_eq!(zstd_safe::get_frame_content_size(&old).unwrap(), None);
        for piece in [1, 1000, 65_536, old.len()] {
            let back = run(&mut ZstdFrameDecoder::new().unwrap(), &old, piece).unwrap();
            assert!(back == data, "piece {piece}");
        }
    }

    #[test]
    fn reads_any_mix_of_frames_including_large_ones_decoded_as_a_stream() {
        let data = sample(2 * WHOLE_FRAME_MAX as usize + 5 * FRAME_BYTES);
        let (a, rest) = data.split_at(WHOLE_FRAME_MAX as usize + 1);
        let (b, c) = rest.split_at(2 * FRAME_BYTES);
        let mut packed = zstd::bulk::compress(a, 3).unwrap();
        assert!(zstd_safe::get_frame_content_size(&packed).unwrap() > Some(WHOLE_FRAME_MAX));
        packed.extend(zstd::stream::encode_all(b, 1).unwrap());
        packed.extend(run(&mut ZstdFrameEncoder::new(1).unwrap(), c, FRAME_BYTES).unwrap());
        for piece in [7, 100_000, FRAME_BYTES, packed.len()] {
            let back = run(&mut ZstdFrameDecoder::new().unwrap(), &packed, piece).unwrap();
            assert!(back == data, "piece {piece}");
        }
    }

    #[test]
    fn a_cut_or_damaged_frame_fails_instead_of_returning_garbage() {
        let data = sample(4 * FRAME_BYTES);
        let packed = run(&mut ZstdFrameEncoder::new(1).unwrap(), &data, FRAME_BYTES).unwrap();
        let first = zstd_safe::find_frame_compressed_size(&packed).unwrap();
        for cut in [1, 10, first - 1, first + 5, first + 100, packed.len() - 1] {
            for piece in [333, packed.len()] {
                let r = run(&mut ZstdFrameDecoder::new().unwrap(), &packed[..cut], piece);
                assert_eq!(r.unwrap_err().kind(), ErrorKind::Corrupt, "cut {cut}");
            }
        }
        let mut damaged = packed.clone();
        damaged[first + 2] ^= 0xff;
        let r = run(&mut ZstdFrameDecoder::new().unwrap(), &damaged, 65_536);
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Corrupt);
        let mut garbage = packed;
        garbage[first..first + 8].copy_from_slice(b"notzstd!");
        let r = run(&mut ZstdFrameDecoder::new().unwrap(), &garbage, 65_536);
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Corrupt);
    }
}
