//! [`FileChecksums`]: what `drctl verify` re-reads in a copy-mode base backup — the tar
//! stream's every file, its size and SHA-256 against the manifest's `files` list.

use std::collections::BTreeMap;

use dr_core::wal::base::PROP_FILES;
use dr_core::{DumpStats, Error, PayloadCheck, Result};
use ring::digest;

/// `drctl verify` of a copy-mode backup: every file's size and SHA-256 in the payload
/// against the manifest's `files` list.
#[derive(Default)]
pub struct FileChecksums {
    /// Bytes of the current header or padding gathered so far.
    header: Vec<u8>,
    /// The member being read: its name, bytes left, SHA-256 so far (regular files).
    member: Option<(String, u64, u64, Option<digest::Context>)>,
    /// Padding left after the member.
    padding: u64,
    found: BTreeMap<String, (u64, String)>,
    ended: bool,
}

impl std::fmt::Debug for FileChecksums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileChecksums")
            .field("files", &self.found.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl FileChecksums {
    /// A fresh check.
    pub fn new() -> Self {
        FileChecksums::default()
    }

    fn take_header(&mut self) -> Result<()> {
        let block = std::mem::take(&mut self.header);
        if block.iter().all(|b| *b == 0) {
            self.ended = true;
            return Ok(());
        }
        let mut raw = [0u8; 512];
        raw.copy_from_slice(&block);
        let h = tar::Header::from_byte_slice(&raw);
        let bad = |what: &str| Error::corrupt(format!("the payload's tar archive has {what}"));
        let size = h.entry_size().map_err(|_| bad("a malformed size"))?;
        let name = h
            .path()
            .map_err(|_| bad("a malformed name"))?
            .to_string_lossy()
            .into_owned();
        let hash = h
            .entry_type()
            .is_file()
            .then(|| digest::Context::new(&digest::SHA256));
        self.padding = (512 - size % 512) % 512;
        self.member = Some((name, size, size, hash));
        self.end_member_if_done();
        Ok(())
    }

    fn end_member_if_done(&mut self) {
        if let Some((_, _, 0, _)) = &self.member {
            let (name, size, _, hash) = self.member.take().expect("checked");
            if let Some(h) = hash {
                self.found.insert(name, (size, hex::encode(h.finish())));
            }
        }
    }
}

impl PayloadCheck for FileChecksums {
    fn feed(&mut self, mut chunk: &[u8]) -> Result<()> {
        while !chunk.is_empty() {
            if self.ended {
                // Zero blocks after the end are allowed.
                if chunk.iter().any(|b| *b != 0) {
                    return Err(Error::corrupt(
                        "data after the end of the payload's tar archive",
                    ));
                }
                return Ok(());
            }
            if let Some((_, _, left, hash)) = &mut self.member {
                let n = (*left).min(chunk.len() as u64) as usize;
                if let Some(h) = hash {
                    h.update(&chunk[..n]);
                }
                *left -= n as u64;
                chunk = &chunk[n..];
                self.end_member_if_done();
                continue;
            }
            if self.padding > 0 {
                let n = self.padding.min(chunk.len() as u64) as usize;
                self.padding -= n as u64;
                chunk = &chunk[n..];
                continue;
            }
            let n = (512 - self.header.len()).min(chunk.len());
            self.header.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.header.len() == 512 {
                self.take_header()?;
            }
        }
        Ok(())
    }

    fn check(self: Box<Self>, expected: &DumpStats) -> Result<DumpStats> {
        if !self.ended || self.member.is_some() {
            return Err(Error::corrupt("the payload's tar archive is truncated"));
        }
        let listed = expected.properties.get(PROP_FILES).ok_or_else(|| {
            Error::corrupt("the manifest of this copy-mode backup lists no files")
        })?;
        let mut want: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for line in listed.lines() {
            let mut parts = line.splitn(3, ' ');
            let (Some(sha), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(Error::corrupt(format!(
                    "the manifest's file line '{line}' is malformed"
                )));
            };
            let size = size.parse().map_err(|_| {
                Error::corrupt(format!("the manifest's file line '{line}' is malformed"))
            })?;
            want.insert(name.to_string(), (size, sha.to_string()));
        }
        for (name, (size, sha)) in &want {
            match self.found.get(name) {
                None => {
                    return Err(Error::corrupt(format!(
                        "{name} is listed in the manifest but missing from the payload"
                    )))
                }
                Some((s, h)) if s != size || h != sha => {
                    return Err(Error::corrupt(format!(
                        "{name} differs from the manifest: {s} bytes, SHA-256 {}…; the manifest \
                         says {size} bytes, SHA-256 {}…",
                        &h[..12],
                        &sha[..12.min(sha.len())]
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = self.found.keys().find(|n| !want.contains_key(*n)) {
            return Err(Error::corrupt(format!(
                "the payload holds {extra}, which the manifest does not list"
            )));
        }
        Ok(DumpStats {
            tables: vec![dr_core::TableStats {
                schema: String::new(),
                name: "files".into(),
                rows: self.found.len() as u64,
                bytes: self.found.values().map(|(s, _)| s).sum(),
            }],
            properties: expected.properties.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn listed(files: &[(&str, &[u8])]) -> DumpStats {
        let mut text = String::new();
        for (name, data) in files {
            let sha = hex::encode(digest::digest(&digest::SHA256, data));
            text.push_str(&format!("{sha} {} {name}\n", data.len()));
        }
        let mut properties = BTreeMap::new();
        properties.insert(PROP_FILES.to_string(), text);
        DumpStats {
            tables: Vec::new(),
            properties,
        }
    }

    fn check(payload: &[u8], expected: &DumpStats, chunk: usize) -> Result<DumpStats> {
        let mut c = Box::new(FileChecksums::new());
        for piece in payload.chunks(chunk) {
            c.feed(piece)?;
        }
        c.check(expected)
    }

    #[test]
    fn every_file_is_checked_against_the_manifest() {
        let big = vec![7u8; 3000];
        let files: &[(&str, &[u8])] = &[
            ("PG_VERSION", b"15\n"),
            ("base/1/1259", &big),
            ("backup_label", b"START WAL LOCATION: 0/2000028\n"),
        ];
        let payload = archive(files);
        for chunk in [1, 100, 512, 1 << 20] {
            let found = check(&payload, &listed(files), chunk).unwrap();
            assert_eq!(found.tables[0].rows, 3);
            assert_eq!(found.tables[0].bytes, 3 + 3000 + 30);
        }
        // One byte of one file differs from what the manifest recorded.
        let mut other = big.clone();
        other[2999] = 8;
        let tampered = archive(&[files[0], ("base/1/1259", &other), files[2]]);
        let e = check(&tampered, &listed(files), 4096).unwrap_err();
        assert!(e.to_string().contains("base/1/1259 differs"), "{e}");
        // A file missing, a file not listed, a truncated archive.
        let e = check(&archive(&files[..2]), &listed(files), 4096).unwrap_err();
        assert!(e.to_string().contains("backup_label is listed"), "{e}");
        let e = check(&payload, &listed(&files[..2]), 4096).unwrap_err();
        assert!(e.to_string().contains("does not list"), "{e}");
        let e = check(&payload[..2048], &listed(files), 4096).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
