//! Streamed partial segments: the segment a WAL receiver (`drctl wal-receive`) is still
//! writing, stored again every few seconds as it grows, so that losing the primary loses
//! seconds of WAL instead of up to a segment.
//!
//! Each copy is stored under its own name, `<segment>.partial.<EEEEEEEE>` with `E` the
//! number of bytes of the segment that hold WAL (see [`layout`](super::layout)), and is
//! committed by its record like any archived file. Nothing is overwritten: a newer copy
//! supersedes an older one by reaching further, so the scheme works on delete-proof
//! storage. A copy holds only the segment's first `E` bytes (the rest is not WAL yet);
//! [`WalArchive::read_streamed`] pads it back with zeros to the segment size, which is what
//! PostgreSQL's recovery expects of a file named like a segment: it reads records until the
//! zeros and ends recovery there.
//!
//! A streamed copy is the archive's data for a segment only when there is nothing better:
//! never when the complete segment (or a partial segment pushed at promotion) is archived,
//! and never in the middle of a timeline (when later WAL is archived, a missing segment is
//! a gap, whatever copies of it exist).

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::crypto::{Decryptor, Encryptor};
use crate::error::{Error, ErrorKind, Result};
use crate::names::random_hex;
use crate::storage::{PutOptions, StorageExt};
use crate::wal::archive::{Listing, PushOptions, PushOutcome, WalArchive};
use crate::wal::layout::{streamed_data_path, streamed_record_path, WalContents, WalRecord};
use crate::wal::name::SegmentId;

/// One committed streamed copy of a segment, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamedCopy {
    /// The segment it is a copy of.
    pub segment: SegmentId,
    /// How many bytes of the segment it holds (all of them WAL).
    pub end: u32,
    /// Path of its record.
    pub record_path: String,
    /// When its record was written.
    pub committed_at: DateTime<Utc>,
}

impl WalArchive {
    /// Store the first bytes of `segment` that hold WAL (`data`, shorter than a segment) as
    /// a streamed copy; `contents` is what a reading of its records found. Storing the same
    /// reach twice is harmless: the first copy stays ([`PushOutcome::AlreadyArchived`]).
    pub async fn push_streamed(
        &self,
        segment: SegmentId,
        data: Bytes,
        contents: Option<WalContents>,
        encryptor: &dyn Encryptor,
        opts: &PushOptions,
    ) -> Result<PushOutcome> {
        let size = self.segment_size();
        let name = format!("{}.partial", segment.name(size));
        if data.is_empty() || data.len() as u64 >= size.bytes() {
            return Err(Error::invalid(format!(
                "a streamed copy of {} holds between 1 byte and less than a segment, not {} bytes",
                segment.name(size),
                data.len()
            )));
        }
        let end = data.len() as u32;
        let sysid = self.cluster().system_identifier;
        let record_path = streamed_record_path(sysid, segment, size, end);
        let storage = self.repository().storage();
        // A receiver started again stores its first copy again: nothing to upload (and, on
        // delete-proof storage, nothing left behind that it could not delete).
        if storage.exists(&record_path).await? {
            return Ok(PushOutcome::AlreadyArchived);
        }
        let object_path = streamed_data_path(sysid, segment, size, end, &random_hex(8)?);
        let record = self
            .upload(
                &name,
                segment.timeline,
                object_path,
                data,
                contents,
                encryptor,
                opts,
            )
            .await?;
        match storage
            .put_if_absent(
                &record_path,
                Bytes::from(record.to_json()),
                PutOptions::default(),
            )
            .await
        {
            Ok(()) => Ok(PushOutcome::Stored {
                stored_bytes: record.object.size,
            }),
            Err(e) => {
                let _ = storage.delete(&record.object.path).await;
                if e.kind() == ErrorKind::AlreadyExists {
                    Ok(PushOutcome::AlreadyArchived)
                } else {
                    Err(e.with_context("WAL file", &name))
                }
            }
        }
    }

    /// The record of the newest streamed copy of `segment` in `listing`, if any.
    pub async fn newest_streamed(
        &self,
        segment: SegmentId,
        listing: &Listing,
    ) -> Result<Option<WalRecord>> {
        let Some(newest) = listing.streamed.get(&segment).and_then(|c| c.last()) else {
            return Ok(None);
        };
        let path = &newest.record_path;
        match self.repository().storage().get_bytes(path).await {
            Ok(b) => WalRecord::from_json(&b, path).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::new(
                ErrorKind::Storage,
                format!("the streamed copy {path} was listed and then vanished"),
            )
            .temporary()),
            Err(e) => Err(e.with_context("object", path.clone())),
        }
    }

    /// Read a streamed copy back (every byte checked, like [`WalArchive::read`]) and pad it
    /// with zeros to the segment size: the file PostgreSQL reads under the segment's name.
    pub async fn read_streamed(
        &self,
        record: &WalRecord,
        decryptor: &dyn Decryptor,
    ) -> Result<Bytes> {
        let bytes = self.read(record, decryptor).await?;
        let size = self.segment_size().bytes() as usize;
        if bytes.len() >= size {
            return Err(Error::corrupt(format!(
                "the streamed copy {} is as long as a whole segment",
                record.object.path
            )));
        }
        let mut padded = Vec::with_capacity(size);
        padded.extend_from_slice(&bytes);
        padded.resize(size, 0);
        Ok(Bytes::from(padded))
    }

    /// Delete streamed copies that nothing reads any more: every copy of a segment that is
    /// archived complete, and every copy but the newest of the others. Returns how many
    /// copies were deleted. On storage that refuses deletes this fails harmlessly: the
    /// copies stay and are never read.
    pub async fn drop_superseded_streamed(&self, listing: &Listing) -> Result<usize> {
        let storage = self.repository().storage();
        let complete: std::collections::BTreeSet<SegmentId> = listing
            .files
            .iter()
            .filter_map(|f| match f.file {
                crate::wal::WalFile::Segment(s) => Some(s),
                _ => None,
            })
            .collect();
        let mut dropped = 0;
        for (segment, copies) in &listing.streamed {
            let keep = if complete.contains(segment) {
                None
            } else {
                copies.last().map(|c| c.end)
            };
            for c in copies.iter().filter(|c| Some(c.end) != keep) {
                // The record first: from then on the copy is not there.
                storage.delete(&c.record_path).await?;
                let stem = format!("{}.", c.record_path.trim_end_matches(".json"));
                for p in listing.streamed_objects.get(segment).into_iter().flatten() {
                    if p.starts_with(&stem) && p != &c.record_path {
                        storage.delete(p).await?;
                    }
                }
                dropped += 1;
            }
        }
        Ok(dropped)
    }
}
