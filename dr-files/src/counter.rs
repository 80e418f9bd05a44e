//! [`TarCounter`]: the files and bytes of a tar stream, counted without unpacking it.

use dr_core::{DumpStats, Error, PayloadCheck, Result};

use crate::{files_stats, recorded_files};

/// Re-counts the regular files and bytes of a tar stream fed in pieces, without unpacking:
/// what `verify` compares with the manifest for a directory backup. Checks every header's
/// checksum and that the archive ends with its end-of-archive blocks.
#[derive(Debug, Default)]
pub struct TarCounter {
    header: Vec<u8>,
    /// Bytes of entry data (and padding) still to skip.
    skip: u64,
    zero_blocks: u8,
    ended: bool,
    offset: u64,
    files: u64,
    bytes: u64,
}

const BLOCK: usize = 512;

impl TarCounter {
    /// A counter at the start of an archive.
    pub fn new() -> TarCounter {
        TarCounter::default()
    }

    /// Feed the next bytes of the archive.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64) as usize;
                self.skip -= n as u64;
                self.offset += n as u64;
                data = &data[n..];
                continue;
            }
            if self.ended {
                if data.iter().any(|&b| b != 0) {
                    return Err(Error::corrupt(format!(
                        "data after the end of the tar archive (byte {})",
                        self.offset
                    )));
                }
                self.offset += data.len() as u64;
                return Ok(());
            }
            let take = (BLOCK - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() == BLOCK {
                let header = std::mem::take(&mut self.header);
                self.entry(&header)?;
                self.offset += BLOCK as u64;
            }
        }
        Ok(())
    }

    fn entry(&mut self, h: &[u8]) -> Result<()> {
        if h.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            self.ended = self.zero_blocks == 2;
            return Ok(());
        }
        self.zero_blocks = 0;
        let bad = |what: &str| Error::corrupt(format!("tar header at byte {} {what}", self.offset));
        let stored = octal(&h[148..156]).ok_or_else(|| bad("has an unreadable checksum"))?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    u64::from(b' ')
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if sum != stored {
            return Err(bad("fails its checksum"));
        }
        let size = if h[124] & 0x80 != 0 {
            // GNU base-256 for sizes of 8 GiB and more.
            h[125..136]
                .iter()
                .fold(0u64, |n, &b| (n << 8) | u64::from(b))
        } else {
            octal(&h[124..136]).ok_or_else(|| bad("has an unreadable size"))?
        };
        if matches!(h[156], b'0' | 0 | b'7') {
            self.files += 1;
            self.bytes += size;
        }
        self.skip = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        Ok(())
    }

    /// The files and bytes counted, in the shape [`crate::DirDumper`] records them.
    pub fn finish(self) -> Result<DumpStats> {
        if !self.ended {
            return Err(Error::corrupt(format!(
                "the tar archive is truncated: it ends at byte {} without its end-of-archive blocks",
                self.offset
            )));
        }
        Ok(files_stats(self.files, self.bytes))
    }
}

/// What `verify` runs over a stored directory backup: the files and bytes of the archive,
/// compared with the manifest's.
impl PayloadCheck for TarCounter {
    fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        TarCounter::feed(self, chunk)
    }

    fn check(self: Box<Self>, expected: &DumpStats) -> Result<DumpStats> {
        let (files, bytes) = (self.files, self.bytes);
        let found = self.finish()?;
        if found == *expected {
            return Ok(found);
        }
        let manifest_says = match recorded_files(expected) {
            Some((f, b)) if expected.tables.len() == 1 => format!("{f} files ({b} bytes)"),
            _ => format!(
                "{} entries that are not a directory backup's",
                expected.tables.len()
            ),
        };
        Err(Error::corrupt(format!(
            "the archive holds {files} files ({bytes} bytes), the manifest says {manifest_says}"
        )))
    }
}

/// An octal tar number field: digits, ended by NUL or space.
fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use std::io;

    use dr_core::ErrorKind;

    use super::*;

    /// A tar archive made by the tar crate: a file of `n` bytes, a directory, a link.
    fn archive(n: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(n as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(
            &mut h,
            "a/very/long/".repeat(12) + "file.bin",
            &vec![7u8; n][..],
        )
        .unwrap();
        let mut d = tar::Header::new_gnu();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_size(0);
        d.set_cksum();
        b.append_data(&mut d, "dir/", io::empty()).unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        b.append_link(&mut l, "link", "dir").unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn counts_files_and_bytes_in_any_piece_sizes() {
        let tar = archive(1000);
        for piece in [1, 7, 512, 513, 4096, tar.len()] {
            let mut c = TarCounter::new();
            for chunk in tar.chunks(piece) {
                c.feed(chunk).unwrap();
            }
            let stats = c.finish().unwrap();
            assert_eq!(
                (stats.tables[0].rows, stats.tables[0].bytes),
                (1, 1000),
                "{piece}"
            );
        }
    }

    #[test]
    fn truncation_and_damage_are_corrupt() {
        let tar = archive(1000);
        let mut c = TarCounter::new();
        c.feed(&tar[..tar.len() - 600]).unwrap();
        assert_eq!(c.finish().unwrap_err().kind(), ErrorKind::Corrupt);

        let mut damaged = tar.clone();
        damaged[100] ^= 1;
        let mut c = TarCounter::new();
        let e = c.feed(&damaged).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");

        let mut extra = tar.clone();
        extra.extend_from_slice(b"junk");
        let e = TarCounter::new().feed(&extra).unwrap_err();
        assert!(e.to_string().contains("after the end"), "{e}");
    }

    #[test]
    fn the_payload_check_compares_files_and_bytes_with_the_manifest() {
        let tar = archive(1000);
        let recount = |expected: &DumpStats| {
            let mut check: Box<dyn PayloadCheck> = Box::new(TarCounter::new());
            check.feed(&tar).unwrap();
            check.check(expected)
        };
        assert_eq!(
            recount(&files_stats(1, 1000)).unwrap(),
            files_stats(1, 1000)
        );

        let e = recount(&files_stats(2, 1000)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(
            e.to_string().contains(
                "the archive holds 1 files (1000 bytes), the manifest says 2 files (1000 bytes)"
            ),
            "{e}"
        );

        let e = recount(&DumpStats::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("the manifest says 0 entries that are not a directory backup's"),
            "{e}"
        );
    }
}
