//! Content-defined chunking: FastCDC 2020 with the repository's keyed gear table.
//!
//! The sizes are restic's (512 KiB / 1 MiB / 8 MiB): few enough chunks that the index of a
//! 2 GB tree is small, small enough that a changed region costs about a megabyte. They are
//! fixed for a repository: changing them would re-chunk every file and deduplicate nothing.
//!
//! The cut points are exactly those of `fastcdc`'s `StreamCDC` (FORMAT.md defines them that
//! way), but the driver is dr's own: `StreamCDC` allocates and zeroes a fresh 8 MiB buffer
//! per file and moves up to 8 MiB after every chunk, which made zeroing memory two thirds of
//! a backup of small files. [`Chunker`] computes the keyed gear tables once, reuses one
//! buffer across files (grown only as far as a file needs) and hands out chunks as slices.

use std::io::{self, Read};

use fastcdc::v2020::{self as f, Normalization};

use dr_core::{Error, Result};

use super::key::DedupKey;

/// Chunk sizes of a repository (FORMAT.md records the values dr writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    /// No chunk but a file's last is shorter.
    pub min: usize,
    /// The average the cut-point masks aim at.
    pub avg: usize,
    /// A chunk is cut here whatever the content.
    pub max: usize,
}

/// The sizes every dr repository uses.
pub const CHUNK_SIZES: ChunkSizes = ChunkSizes {
    min: 512 << 10,
    avg: 1 << 20,
    max: 8 << 20,
};

impl ChunkSizes {
    /// Check what FastCDC only `debug_assert`s: even sizes within its limits, in order.
    pub fn validate(self) -> Result<ChunkSizes> {
        let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&self.min)
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&self.avg)
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&self.max)
            && self.min % 2 == 0
            && self.avg % 2 == 0
            && self.max % 2 == 0
            && self.min <= self.avg
            && self.avg <= self.max;
        if ok {
            Ok(self)
        } else {
            Err(Error::invalid(format!(
                "chunk sizes {}/{}/{} are outside FastCDC's limits or not even and ordered",
                self.min, self.avg, self.max
            )))
        }
    }
}

/// The first size of a [`ChunkBuffer`]: a small file is read into it whole.
const FIRST_BUFFER_BYTES: usize = 64 << 10;

/// Cuts files into chunks with one repository's key and sizes. Cheap to share: build it
/// once per backup, not per file.
#[derive(Clone)]
pub struct Chunker {
    sizes: ChunkSizes,
    masks: (u64, u64),
    gear: Box<[u64]>,
    gear_ls: Box<[u64]>,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The gear tables derive from the dedup secret: not printed.
        f.debug_struct("Chunker")
            .field("sizes", &self.sizes)
            .finish_non_exhaustive()
    }
}

/// The reusable read buffer of one thread that chunks files. It grows to twice the maximum
/// chunk (so refilling moves at most one chunk's worth of bytes per chunk's worth read) and
/// only as far as the largest file it read needs; it never shrinks.
#[derive(Debug, Default)]
pub struct ChunkBuffer {
    bytes: Vec<u8>,
}

impl Chunker {
    /// A chunker for the repository of `key`.
    pub fn new(key: &DedupKey, sizes: ChunkSizes) -> Chunker {
        let (gear, gear_ls) = f::get_gear_with_seed(key.gear_seed());
        Chunker {
            sizes,
            masks: f::select_masks(sizes.avg, Normalization::Level1),
            gear: gear.into_owned().into_boxed_slice(),
            gear_ls: gear_ls.into_owned().into_boxed_slice(),
        }
    }

    /// Where the first chunk of `data` ends: `data` holds the rest of the file, or at least
    /// `max` bytes of it.
    fn cut(&self, data: &[u8]) -> usize {
        let ChunkSizes { min, avg, max } = self.sizes;
        let (mask_s, mask_l) = self.masks;
        f::cut_gear(
            data,
            min,
            avg,
            max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &self.gear,
            &self.gear_ls,
        )
        .1
    }

    /// Read `source` to its end and call `each` with its chunks in order. Returns the bytes
    /// read. An error reading stops with that error; an error from `each` is returned as it
    /// is.
    pub fn each_chunk<R: Read>(
        &self,
        mut source: R,
        buffer: &mut ChunkBuffer,
        mut each: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        let max = self.sizes.max;
        let window = 2 * max;
        let buf = &mut buffer.bytes;
        let (mut start, mut end, mut eof, mut total) = (0usize, 0usize, false, 0u64);
        loop {
            if !eof && end - start < max {
                // Keep what is left at the front, then fill the rest.
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while !eof {
                    if end == buf.len() {
                        if buf.len() >= window {
                            break;
                        }
                        let grown = (buf.len() * 2).clamp(FIRST_BUFFER_BYTES, window);
                        buf.resize(grown, 0);
                    }
                    match source.read(&mut buf[end..]) {
                        Ok(0) => eof = true,
                        Ok(n) => {
                            end += n;
                            total += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::io("cannot read a file", e)),
                    }
                }
            }
            if start == end {
                return Ok(total);
            }
            let len = self.cut(&buf[start..end.min(start + max)]);
            each(&buf[start..start + len])?;
            start += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The chunks of `data` read through `source`, with one buffer reused as in a backup.
    fn cut_all(chunker: &Chunker, buffer: &mut ChunkBuffer, source: impl Read) -> Vec<Vec<u8>> {
        let mut parts = Vec::new();
        let read = chunker
            .each_chunk(source, buffer, |c| {
                parts.push(c.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(read, parts.iter().map(|p| p.len() as u64).sum::<u64>());
        parts
    }

    /// FORMAT.md defines the cut points as those of fastcdc's `StreamCDC`.
    fn reference(data: &[u8], key: &DedupKey) -> Vec<Vec<u8>> {
        f::StreamCDC::with_level_and_seed(
            data,
            CHUNK_SIZES.min,
            CHUNK_SIZES.avg,
            CHUNK_SIZES.max,
            Normalization::Level1,
            key.gear_seed(),
        )
        .map(|c| c.unwrap().data)
        .collect()
    }

    /// A reader that returns at most `step` bytes per call (pipes, sockets, object streams).
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(out.len()).min(self.0.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn cut_points_equal_stream_cdc_for_every_size_and_read_pattern() {
        let key = DedupKey::generate().unwrap();
        let chunker = Chunker::new(&key, CHUNK_SIZES);
        let mut buffer = ChunkBuffer::default();
        let big = pseudo_random(40 << 20, 3);
        let (min, max) = (CHUNK_SIZES.min, CHUNK_SIZES.max);
        let mut zeros_then_noise = vec![0u8; 17 << 20];
        zeros_then_noise.extend_from_slice(&big[..5 << 20]);
        let cases: Vec<&[u8]> = vec![
            &[],
            &big[..1],
            &big[..min - 1],
            &big[..min],
            &big[..min + 1],
            &big[..max - 1],
            &big[..max],
            &big[..max + 1],
            &big[..2 * max + 3],
            &big,
            &zeros_then_noise,
        ];
        // Files of every size one after the other through the same buffer, as a worker does.
        for data in &cases {
            let expected = reference(data, &key);
            assert_eq!(
                cut_all(&chunker, &mut buffer, *data),
                expected,
                "{} bytes",
                data.len()
            );
            for step in [1 << 12, 1_000_003] {
                let parts = cut_all(&chunker, &mut buffer, Trickle(data, step));
                assert_eq!(
                    parts,
                    expected,
                    "{} bytes read {step} at a time",
                    data.len()
                );
            }
        }
        assert!(reference(&big, &key).len() > 20);
    }

    #[test]
    fn chunks_cover_the_input_within_the_sizes() {
        let key = DedupKey::generate().unwrap();
        let data = pseudo_random(20 << 20, 7);
        let parts = cut_all(
            &Chunker::new(&key, CHUNK_SIZES),
            &mut ChunkBuffer::default(),
            &data[..],
        );
        assert_eq!(parts.concat(), data);
        let (last, rest) = parts.split_last().unwrap();
        assert!(rest
            .iter()
            .all(|c| (CHUNK_SIZES.min..=CHUNK_SIZES.max).contains(&c.len())));
        assert!(last.len() <= CHUNK_SIZES.max);
        assert!(parts.len() > 5, "about 1 MiB average: {}", parts.len());
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks_and_keys_move_boundaries() {
        let key = DedupKey::generate().unwrap();
        let data = pseudo_random(16 << 20, 9);
        let mut edited = data.clone();
        edited.splice(8 << 20..8 << 20, b"inserted".iter().copied());
        let parts = |d: &[u8], k: &DedupKey| -> Vec<Vec<u8>> {
            cut_all(
                &Chunker::new(k, CHUNK_SIZES),
                &mut ChunkBuffer::default(),
                d,
            )
        };
        let ids = |d: &[u8], k: &DedupKey| -> Vec<_> {
            parts(d, k).iter().map(|c| k.chunk_id(c)).collect()
        };
        let (before, after) = (ids(&data, &key), ids(&edited, &key));
        let shared = after.iter().filter(|id| before.contains(id)).count();
        assert!(shared + 3 >= before.len(), "{shared} of {}", before.len());
        let other = DedupKey::generate().unwrap();
        let lengths =
            |k: &DedupKey| -> Vec<usize> { parts(&data, k).iter().map(Vec::len).collect() };
        assert_ne!(lengths(&key), lengths(&other));
    }

    #[test]
    fn a_read_error_ends_with_that_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let chunker = Chunker::new(&DedupKey::generate().unwrap(), CHUNK_SIZES);
        let err = chunker
            .each_chunk(Broken, &mut ChunkBuffer::default(), |_| Ok(()))
            .unwrap_err();
        assert!(format!("{err:#}").contains("cannot read a file"), "{err:#}");
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(CHUNK_SIZES.validate().is_ok());
        for bad in [
            ChunkSizes {
                min: 3,
                ..CHUNK_SIZES
            },
            ChunkSizes {
                min: 2 << 20,
                ..CHUNK_SIZES
            },
            ChunkSizes {
                avg: 1001,
                ..CHUNK_SIZES
            },
            ChunkSizes {
                max: 32 << 20,
                ..CHUNK_SIZES
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
