//! Content-defined chunking: FastCDC 2020 with the repository's keyed gear table.
//!
//! The sizes are restic's (512 KiB / 1 MiB / 8 MiB): few enough chunks that the index of a
//! 2 GB tree is small, small enough that a changed region costs about a megabyte. They are
//! fixed for a repository: changing them would re-chunk every file and deduplicate nothing.

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};

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
        use fastcdc::v2020 as f;
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

/// The chunks of `source`, in order; an I/O error ends the iteration with that error.
pub fn chunks<R: Read>(
    source: R,
    key: &DedupKey,
    sizes: ChunkSizes,
) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    StreamCDC::with_level_and_seed(
        source,
        sizes.min,
        sizes.avg,
        sizes.max,
        Normalization::Level1,
        key.gear_seed(),
    )
    .map(|chunk| {
        chunk.map(|c| c.data).map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
    })
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

    #[test]
    fn chunks_cover_the_input_within_the_sizes() {
        let key = DedupKey::generate().unwrap();
        let data = pseudo_random(20 << 20, 7);
        let parts: Vec<Vec<u8>> = chunks(&data[..], &key, CHUNK_SIZES)
            .map(Result::unwrap)
            .collect();
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
        let ids = |d: &[u8], k: &DedupKey| -> Vec<_> {
            chunks(d, k, CHUNK_SIZES)
                .map(|c| k.chunk_id(&c.unwrap()))
                .collect()
        };
        let (before, after) = (ids(&data, &key), ids(&edited, &key));
        let shared = after.iter().filter(|id| before.contains(id)).count();
        assert!(shared + 3 >= before.len(), "{shared} of {}", before.len());
        let other = DedupKey::generate().unwrap();
        let lengths = |k: &DedupKey| -> Vec<usize> {
            chunks(&data[..], k, CHUNK_SIZES)
                .map(|c| c.unwrap().len())
                .collect()
        };
        assert_ne!(lengths(&key), lengths(&other));
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
