//! Compression codecs as stream transforms.
//!
//! Deviation from DESIGN.md (a `Codec` trait): codecs are a closed enum. The manifest names the
//! codec a backup was written with and every reader must be able to decode every codec it may
//! meet, so a plug-in point would only let writers produce backups that readers cannot open.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::stage::Transform;

mod zstd_frames;
use zstd_frames::{ZstdFrameDecoder, ZstdFrameEncoder};

/// A compression codec and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Stored as is.
    None,
    /// gzip (RFC 1952) through flate2's zlib-rs backend; level 0–9.
    Gzip {
        /// Compression level, 0–9.
        level: u32,
    },
    /// Zstandard; level 1–22 (negative levels are the fast modes).
    Zstd {
        /// Compression level.
        level: i32,
    },
}

impl Default for Codec {
    /// zstd level 1: on two cores the dump, the server and compression compete for CPU,
    /// and level 3 costs about twice the CPU for a few percent of ratio (BENCHMARKS.md).
    fn default() -> Self {
        Codec::Zstd { level: 1 }
    }
}

impl Codec {
    /// A transform that compresses.
    pub fn encoder(&self) -> Result<Box<dyn Transform>> {
        Ok(match *self {
            Codec::None => Box::new(Identity),
            Codec::Gzip { level } => Box::new(GzipEncoder(Some(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level),
            )))),
            Codec::Zstd { level } => Box::new(ZstdFrameEncoder::new(level)?),
        })
    }

    /// A transform that decompresses what [`Codec::encoder`] produced, and fails on
    /// truncated or malformed input.
    pub fn decoder(&self) -> Result<Box<dyn Transform>> {
        Ok(match *self {
            Codec::None => Box::new(Identity),
            Codec::Gzip { .. } => {
                Box::new(GzipDecoder(Some(flate2::write::GzDecoder::new(Vec::new()))))
            }
            Codec::Zstd { .. } => Box::new(ZstdFrameDecoder::new()?),
        })
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Codec::None => f.write_str("none"),
            Codec::Gzip { level } => write!(f, "gzip:{level}"),
            Codec::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

impl FromStr for Codec {
    type Err = Error;

    /// `none`, `gzip`, `gzip:N` (0–9), `zstd`, `zstd:N` (-7–22).
    fn from_str(s: &str) -> Result<Self> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s, None),
        };
        let bad_level = || {
            Error::invalid(format!(
                "compression '{s}': the level must be a whole number (gzip 0-9, zstd -7-22)"
            ))
        };
        match (name, level) {
            ("none", None) => Ok(Codec::None),
            ("gzip", None) => Ok(Codec::Gzip { level: 6 }),
            ("gzip", Some(l)) => match l.parse::<u32>() {
                Ok(level) if level <= 9 => Ok(Codec::Gzip { level }),
                _ => Err(bad_level()),
            },
            ("zstd", None) => Ok(Codec::default()),
            ("zstd", Some(l)) => match l.parse::<i32>() {
                Ok(level) if (-7..=22).contains(&level) && level != 0 => Ok(Codec::Zstd { level }),
                _ => Err(bad_level()),
            },
            _ => Err(Error::invalid(format!(
                "unknown compression '{s}': expected none, gzip, gzip:N, zstd or zstd:N"
            ))),
        }
    }
}

impl Serialize for Codec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Codec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

struct Identity;

impl Transform for Identity {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(input);
        Ok(())
    }
    fn finish(&mut self, _out: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
}

fn corrupt(codec: &'static str, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("{codec} data is malformed or truncated"),
    )
    .with_source(e)
}

/// Moves what an encoder wrote into its inner `Vec` over to the stage's output.
fn drain_into(buf: &mut Vec<u8>, out: &mut Vec<u8>) {
    if out.is_empty() {
        std::mem::swap(buf, out);
    } else {
        out.append(buf);
    }
}

struct GzipEncoder(Option<flate2::write::GzEncoder<Vec<u8>>>);

impl Transform for GzipEncoder {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let enc = self.0.as_mut().expect("used after finish");
        enc.write_all(input)
            .map_err(|e| Error::io("gzip compression", e))?;
        drain_into(enc.get_mut(), out);
        Ok(())
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let enc = self.0.take().expect("finished twice");
        let mut rest = enc.finish().map_err(|e| Error::io("gzip compression", e))?;
        drain_into(&mut rest, out);
        Ok(())
    }
}

struct GzipDecoder(Option<flate2::write::GzDecoder<Vec<u8>>>);

impl Transform for GzipDecoder {
    fn update(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let dec = self.0.as_mut().expect("used after finish");
        dec.write_all(input).map_err(|e| corrupt("gzip", e))?;
        drain_into(dec.get_mut(), out);
        Ok(())
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let mut dec = self.0.take().expect("finished twice");
        dec.try_finish().map_err(|e| corrupt("gzip", e))?;
        // GzDecoder accepts a stream cut inside the trailer without complaint; the CRC and
        // length trailer must have been read for the data to count as complete.
        let mut rest = dec.finish().map_err(|e| corrupt("gzip", e))?;
        drain_into(&mut rest, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feed `data` through `t` in pieces of `piece` bytes (also used by zstd_frames' tests).
    pub(super) fn run(t: &mut dyn Transform, data: &[u8], piece: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in data.chunks(piece.max(1)) {
            t.update(chunk, &mut out)?;
        }
        t.finish(&mut out)?;
        Ok(out)
    }

    const ALL: [Codec; 4] = [
        Codec::None,
        Codec::Gzip { level: 1 },
        Codec::Zstd { level: 1 },
        Codec::Zstd { level: 3 },
    ];

    #[test]
    fn zstd_output_of_an_exact_multiple_of_the_buffer_is_complete() {
        // A 16 MiB WAL segment of zeros decompresses in exactly 128 full buffers.
        let data = vec![0u8; 16 << 20];
        let codec = Codec::Zstd { level: 1 };
        let packed = run(codec.encoder().unwrap().as_mut(), &data, 1 << 20).unwrap();
        for piece in [packed.len(), 7] {
            let back = run(codec.decoder().unwrap().as_mut(), &packed, piece).unwrap();
            assert_eq!(back.len(), data.len());
        }
    }

    #[test]
    fn parses_and_prints_every_spelling() {
        for (text, codec) in [
            ("none", Codec::None),
            ("gzip", Codec::Gzip { level: 6 }),
            ("gzip:9", Codec::Gzip { level: 9 }),
            ("zstd", Codec::Zstd { level: 1 }),
            ("zstd:19", Codec::Zstd { level: 19 }),
        ] {
            assert_eq!(text.parse::<Codec>().unwrap(), codec);
            assert_eq!(codec.to_string().parse::<Codec>().unwrap(), codec);
        }
        for bad in ["lz4", "gzip:10", "zstd:x", "zstd:0", ""] {
            assert_eq!(
                bad.parse::<Codec>().unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
    }

    #[test]
    fn truncated_input_fails_to_decode() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in [Codec::Gzip { level: 1 }, Codec::Zstd { level: 1 }] {
            let packed = run(codec.encoder().unwrap().as_mut(), &data, 10_000).unwrap();
            for cut in [1, packed.len() / 2, packed.len() - 1] {
                let r = run(codec.decoder().unwrap().as_mut(), &packed[..cut], 777);
                assert_eq!(
                    r.unwrap_err().kind(),
                    ErrorKind::Corrupt,
                    "{codec} cut at {cut}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn codecs_round_trip(data in proptest::collection::vec(any::<u8>(), 0..50_000),
                             piece in 1usize..9000, codec_ix in 0usize..4) {
            let codec = ALL[codec_ix];
            let packed = run(codec.encoder().unwrap().as_mut(), &data, piece).unwrap();
            let unpacked = run(codec.decoder().unwrap().as_mut(), &packed, piece).unwrap();
            prop_assert_eq!(unpacked, data);
        }
    }
}
