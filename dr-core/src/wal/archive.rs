//! Reading and writing archived WAL in a repository (the [layout](super::layout)).
//!
//! [`WalArchive`] is one cluster's archive. [`WalArchive::push`] stores a file exactly once:
//! compressed and encrypted with a fresh data key under a new name, then committed by
//! creating its record with create-if-absent. An identical re-push is recognised from the
//! record alone (the SHA-256 of the original bytes) and succeeds without uploading; a
//! different file under the same name is refused, and a timeline history is never replaced.
//! [`WalArchive::read`] checks everything on the way back: the stored object's size and
//! SHA-256, every authentication tag, the decompressed length and the original SHA-256.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use ring::digest;

use crate::codec::Codec;
use crate::crypto::{Decryptor, Encryptor};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::manifest::ObjectEntry;
use crate::names::random_hex;
use crate::repo::Repository;
use crate::stage::Transform;
use crate::storage::{PutOptions, StorageExt};
use crate::wal::history::TimelineHistory;
use crate::wal::index::{ArchiveIndex, FileInfo};
use crate::wal::layout::{
    cluster_path, cluster_prefix, data_path, parse_object_path, record_path, WalCluster,
    WalContents, WalObject, WalRecord, WAL_FORMAT, WAL_PREFIX,
};
use crate::wal::lsn::SegmentSize;
use crate::wal::name::{SegmentId, WalFile};
use crate::wal::stream::StreamedCopy;

/// Records read or written at once.
const CONCURRENCY: usize = 16;

/// How [`WalArchive::push`] stores a file.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Compression; `None` takes the repository default.
    pub codec: Option<Codec>,
    /// Storage class of the stored bytes. WAL is read by every restore, so the repository's
    /// default class for backups (perhaps an archive tier) is not applied.
    pub storage_class: Option<String>,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file was stored and committed.
    Stored {
        /// Bytes stored (compressed and encrypted).
        stored_bytes: u64,
    },
    /// The same file was already archived; nothing was uploaded.
    AlreadyArchived,
}

/// One archived file as a listing shows it, without reading its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    /// The file.
    pub file: WalFile,
    /// Path of its record.
    pub record_path: String,
    /// When the record was written (the file was archived).
    pub committed_at: DateTime<Utc>,
}

/// Stored bytes that no record refers to: a push that was killed or lost a race.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// Its path.
    pub path: String,
    /// Its size.
    pub size: u64,
    /// When it was written.
    pub last_modified: DateTime<Utc>,
}

/// Everything under one cluster's prefix.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Committed files, in order.
    pub files: Vec<ListedFile>,
    /// Data objects per file (push id → path), committed or not.
    pub data: BTreeMap<WalFile, Vec<(String, u64, DateTime<Utc>)>>,
    /// Committed streamed partial copies per segment, in order of how far they reach.
    pub streamed: BTreeMap<SegmentId, Vec<StreamedCopy>>,
    /// Every object of streamed partial copies (records and stored bytes) per segment.
    pub streamed_objects: BTreeMap<SegmentId, Vec<String>>,
}

/// One cluster's WAL archive in a repository.
#[derive(Debug, Clone)]
pub struct WalArchive {
    repo: Repository,
    cluster: WalCluster,
}

impl WalArchive {
    /// The archive of the cluster `system_identifier`, which must exist (a first push
    /// creates it). [`ErrorKind::NotFound`] otherwise.
    pub async fn open(repo: &Repository, system_identifier: u64) -> Result<WalArchive> {
        let path = cluster_path(system_identifier);
        let bytes = match repo.storage().get_bytes(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no WAL archive of cluster {system_identifier} in {} (nothing was pushed \
                         with `drctl wal-push` yet)",
                        repo.storage().describe()
                    ),
                ))
            }
            Err(e) => return Err(e.with_context("object", path)),
        };
        let cluster: WalCluster = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("{path} is malformed")).with_source(e))?;
        if cluster.format > WAL_FORMAT || cluster.system_identifier != system_identifier {
            return Err(Error::corrupt(format!(
                "{path} describes another cluster ({}) or a newer format ({})",
                cluster.system_identifier, cluster.format
            )));
        }
        Ok(WalArchive {
            repo: repo.clone(),
            cluster,
        })
    }

    /// The archive of `cluster`, created if this is its first file. An existing archive must
    /// agree on the segment size ([`ErrorKind::InvalidInput`] otherwise: the same system
    /// identifier with another segment size is not the same cluster).
    pub async fn register(repo: &Repository, cluster: WalCluster) -> Result<WalArchive> {
        let path = cluster_path(cluster.system_identifier);
        let json = serde_json::to_vec_pretty(&cluster).expect("cluster serializes");
        match repo
            .storage()
            .put_if_absent(&path, Bytes::from(json), PutOptions::default())
            .await
        {
            Ok(()) => {
                return Ok(WalArchive {
                    repo: repo.clone(),
                    cluster,
                })
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.with_context("object", path)),
        }
        let existing = WalArchive::open(repo, cluster.system_identifier).await?;
        if existing.cluster.segment_bytes != cluster.segment_bytes {
            return Err(Error::invalid(format!(
                "the archive of cluster {} holds {} segments, this server writes {} segments",
                cluster.system_identifier, existing.cluster.segment_bytes, cluster.segment_bytes
            )));
        }
        Ok(existing)
    }

    /// Every cluster archived in `repo`.
    pub async fn clusters(repo: &Repository) -> Result<Vec<WalCluster>> {
        let mut out = Vec::new();
        for o in repo.storage().list(WAL_PREFIX).await? {
            let Some(rest) = o.path.strip_prefix(WAL_PREFIX) else {
                continue;
            };
            let Some((sysid, name)) = rest.split_once('/') else {
                continue;
            };
            if name != "cluster.json" {
                continue;
            }
            let Ok(sysid) = sysid.parse::<u64>() else {
                continue;
            };
            out.push(WalArchive::open(repo, sysid).await?.cluster);
        }
        Ok(out)
    }

    /// The cluster this archive belongs to.
    pub fn cluster(&self) -> &WalCluster {
        &self.cluster
    }

    /// The repository underneath.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The cluster's segment size.
    pub fn segment_size(&self) -> SegmentSize {
        self.cluster.segment_bytes
    }

    /// Parse a file name of this cluster.
    pub fn parse_name(&self, name: &str) -> Result<WalFile> {
        WalFile::parse(name, self.segment_size())
    }

    fn record_path_of(&self, file: WalFile) -> String {
        record_path(
            self.cluster.system_identifier,
            file.timeline(),
            &file.name(self.segment_size()),
        )
    }

    /// The record of `file`, if it is archived.
    pub async fn record(&self, file: WalFile) -> Result<Option<WalRecord>> {
        let path = self.record_path_of(file);
        match self.repo.storage().get_bytes(&path).await {
            Ok(b) => WalRecord::from_json(&b, &path).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.with_context("object", path)),
        }
    }

    /// Store `data`, the whole of `file`, unless it is already archived. `contents` is what
    /// a reading of its records found (segments), kept in the record.
    ///
    /// Returns only once the record is committed: the file is then archived, durably as the
    /// store guarantees. Fails with [`ErrorKind::AlreadyExists`] if a different file is
    /// archived under the same name (never replaced; a timeline history least of all).
    pub async fn push(
        &self,
        file: WalFile,
        data: Bytes,
        contents: Option<WalContents>,
        encryptor: &dyn Encryptor,
        opts: &PushOptions,
    ) -> Result<PushOutcome> {
        let name = file.name(self.segment_size());
        let raw_sha256 = sha256_hex(&data);
        if let Some(existing) = self.record(file).await? {
            return same_or_conflict(&existing, &name, &raw_sha256, data.len() as u64);
        }

        let history = match file {
            WalFile::History(_) => Some(
                std::str::from_utf8(&data)
                    .map_err(|_| {
                        Error::invalid(format!("{name} is not a timeline history: not text"))
                    })?
                    .to_string(),
            ),
            _ => None,
        };
        let sysid = self.cluster.system_identifier;
        let object_path = data_path(sysid, file.timeline(), &name, &random_hex(8)?);
        let mut record = self
            .upload(
                &name,
                file.timeline(),
                object_path,
                data,
                contents,
                encryptor,
                opts,
            )
            .await?;
        record.history = history;
        let object_path = record.object.path.clone();
        let stored_bytes = record.object.size;
        let path = self.record_path_of(file);
        let committed = self
            .repo
            .storage()
            .put_if_absent(&path, Bytes::from(record.to_json()), PutOptions::default())
            .await;
        match committed {
            Ok(()) => Ok(PushOutcome::Stored { stored_bytes }),
            Err(e) => {
                // Ours is not referenced by any record: remove it (prune would, later).
                let _ = self.repo.storage().delete(&object_path).await;
                if e.kind() != ErrorKind::AlreadyExists {
                    return Err(e.with_context("WAL file", &name));
                }
                // Another push committed first: fine if it is the same file.
                let theirs = self.record(file).await?.ok_or_else(|| {
                    Error::new(
                        ErrorKind::Storage,
                        format!("the record of {name} exists and then does not"),
                    )
                    .temporary()
                })?;
                same_or_conflict(&theirs, &name, &raw_sha256, record.raw_bytes)
            }
        }
    }

    /// Compress, encrypt and store `data` (the file `name`) at `object_path`; the record
    /// that would commit it, not yet written.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn upload(
        &self,
        name: &str,
        timeline: crate::wal::name::TimelineId,
        object_path: String,
        data: Bytes,
        contents: Option<WalContents>,
        encryptor: &dyn Encryptor,
        opts: &PushOptions,
    ) -> Result<WalRecord> {
        let raw_sha256 = sha256_hex(&data);
        let codec = opts
            .codec
            .unwrap_or(self.repo.config().defaults.compression);
        let (encryption, sealer) = encryptor.encrypt_stream()?;
        let compressor = codec.encoder()?;
        let raw_bytes = data.len() as u64;
        let stored = tokio::task::spawn_blocking(move || seal(&data, compressor, sealer))
            .await
            .map_err(|e| Error::new(ErrorKind::Other, "compressing WAL failed").with_source(e))??;
        let stored_sha256 = sha256_hex(&stored);
        let stored_bytes = stored.len() as u64;
        let put = PutOptions {
            storage_class: opts.storage_class.clone(),
            expected_size: Some(stored_bytes),
        };
        self.repo
            .storage()
            .put_bytes(&object_path, stored, put.clone())
            .await
            .context("WAL file", name)?;
        Ok(WalRecord {
            format: WAL_FORMAT,
            name: name.to_string(),
            system_identifier: self.cluster.system_identifier,
            timeline,
            pushed_at: Utc::now(),
            raw_bytes,
            raw_sha256,
            codec,
            encryption,
            object: ObjectEntry {
                path: object_path,
                size: stored_bytes,
                sha256: stored_sha256,
                storage_class: put.storage_class,
                piece: None,
            },
            contents,
            history: None,
        })
    }

    /// Read an archived file back, checking every byte (see the module docs).
    pub async fn read(&self, record: &WalRecord, decryptor: &dyn Decryptor) -> Result<Bytes> {
        let name = record.name.clone();
        let o = &record.object;
        let stored = match self.repo.storage().get_bytes(&o.path).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::corrupt(format!(
                    "the stored bytes of archived WAL {name} ({}) are missing",
                    o.path
                )))
            }
            Err(e) => return Err(e.with_context("WAL file", &name)),
        };
        if stored.len() as u64 != o.size || sha256_hex(&stored) != o.sha256 {
            return Err(Error::corrupt(format!(
                "archived WAL {name} fails its size or SHA-256 check: the stored bytes were modified"
            )));
        }
        let opener = if record.encryption.scheme == "none" {
            None
        } else {
            Some(
                decryptor
                    .decrypt_stream(&record.encryption)
                    .context("WAL file", &name)?,
            )
        };
        let decoder = record.codec.decoder()?;
        let expected = (record.raw_bytes, record.raw_sha256.clone());
        tokio::task::spawn_blocking(move || {
            let mut plain = Vec::with_capacity(stored.len());
            match opener {
                Some(mut t) => {
                    t.update(&stored, &mut plain)?;
                    t.finish(&mut plain)?;
                }
                None => plain.extend_from_slice(&stored),
            }
            let mut decoder = decoder;
            let mut raw = Vec::with_capacity(expected.0 as usize);
            decoder.update(&plain, &mut raw)?;
            decoder.finish(&mut raw)?;
            if raw.len() as u64 != expected.0 || sha256_hex(&raw) != expected.1 {
                return Err(Error::corrupt(
                    "the decrypted WAL differs from what was archived (length or SHA-256)",
                ));
            }
            Ok(Bytes::from(raw))
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Other, "decrypting WAL failed").with_source(e))?
        .map_err(|e| e.with_context("WAL file", name))
    }

    /// Everything under the cluster's prefix: committed files and data objects.
    pub async fn list(&self) -> Result<Listing> {
        let sysid = self.cluster.system_identifier;
        let size = self.segment_size();
        let mut listing = Listing::default();
        for o in self.repo.storage().list(&cluster_prefix(sysid)).await? {
            match parse_object_path(sysid, size, &o.path) {
                Some(WalObject::Record { file }) => listing.files.push(ListedFile {
                    file,
                    record_path: o.path,
                    committed_at: o.last_modified,
                }),
                Some(WalObject::Data { file, .. }) => {
                    listing
                        .data
                        .entry(file)
                        .or_default()
                        .push((o.path, o.size, o.last_modified))
                }
                Some(WalObject::StreamedRecord { segment, end }) => {
                    listing
                        .streamed_objects
                        .entry(segment)
                        .or_default()
                        .push(o.path.clone());
                    listing
                        .streamed
                        .entry(segment)
                        .or_default()
                        .push(StreamedCopy {
                            segment,
                            end,
                            record_path: o.path,
                            committed_at: o.last_modified,
                        });
                }
                Some(WalObject::StreamedData { segment, .. }) => listing
                    .streamed_objects
                    .entry(segment)
                    .or_default()
                    .push(o.path),
                Some(WalObject::Cluster) | None => {}
            }
        }
        listing.files.sort_by_key(|f| f.file);
        for copies in listing.streamed.values_mut() {
            copies.sort_by_key(|c| c.end);
        }
        Ok(listing)
    }

    /// Every record, read concurrently, in file order.
    pub async fn records(&self) -> Result<Vec<WalRecord>> {
        let listing = self.list().await?;
        futures::stream::iter(listing.files)
            .map(|f| async move {
                let bytes = self.repo.storage().get_bytes(&f.record_path).await?;
                WalRecord::from_json(&bytes, &f.record_path)
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    }

    /// The archive as an [`ArchiveIndex`]. Timeline histories are always read (their
    /// contents are the index's timelines). With `contents`, every record is read too, so
    /// segments are placed in time by their commits and restore points are known; without,
    /// a segment's time is when it was archived.
    pub async fn index(&self, contents: bool) -> Result<ArchiveIndex> {
        let mut index = ArchiveIndex::new(self.segment_size());
        let listing = self.list().await?;
        let records: BTreeMap<WalFile, WalRecord> = if contents {
            futures::stream::iter(listing.files.iter().cloned())
                .map(|f| async move {
                    let bytes = self.repo.storage().get_bytes(&f.record_path).await?;
                    Ok::<_, Error>((f.file, WalRecord::from_json(&bytes, &f.record_path)?))
                })
                .buffered(CONCURRENCY)
                .try_collect()
                .await?
        } else {
            BTreeMap::new()
        };
        for f in &listing.files {
            let info = match records.get(&f.file) {
                Some(r) => FileInfo {
                    archived_at: r.pushed_at,
                    contents: r.contents.clone(),
                },
                None => FileInfo::at(f.committed_at),
            };
            match f.file {
                WalFile::History(tl) => {
                    let record = match records.get(&f.file) {
                        Some(r) => r.clone(),
                        None => self.record(f.file).await?.ok_or_else(|| {
                            Error::new(ErrorKind::NotFound, format!("{tl:08X}.history vanished"))
                                .temporary()
                        })?,
                    };
                    let text = record.history.ok_or_else(|| {
                        Error::corrupt(format!(
                            "the record of {tl:08X}.history lacks the history's text"
                        ))
                    })?;
                    index.insert_history(TimelineHistory::parse(tl, &text)?, info);
                }
                other => index.insert(other, info),
            }
        }
        // A streamed copy stands for a segment only where nothing else was archived.
        for (segment, copies) in &listing.streamed {
            let newest = copies.last().expect("listed copies are never empty");
            if index.segment(*segment).is_some() || index.partial(*segment).is_some() {
                continue;
            }
            let info = if contents {
                let bytes = self.repo.storage().get_bytes(&newest.record_path).await?;
                let r = WalRecord::from_json(&bytes, &newest.record_path)?;
                FileInfo {
                    archived_at: r.pushed_at,
                    contents: r.contents,
                }
            } else {
                FileInfo::at(newest.committed_at)
            };
            index.insert(WalFile::Partial(*segment), info);
        }
        Ok(index)
    }

    /// Rewrite the record of an archived file with new wrapped keys (key rotation). Refuses
    /// any change to what the record points at.
    pub async fn update_record(&self, record: &WalRecord) -> Result<()> {
        let file = self.parse_name(&record.name)?;
        let current = self.record(file).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("archived WAL {} is gone", record.name),
            )
        })?;
        if current.object != record.object || current.raw_sha256 != record.raw_sha256 {
            return Err(Error::invalid(format!(
                "refusing to rewrite the record of archived WAL {} with different contents",
                record.name
            )));
        }
        self.repo
            .storage()
            .put_bytes(
                &self.record_path_of(file),
                Bytes::from(record.to_json()),
                PutOptions::default(),
            )
            .await
            .context("WAL file", &record.name)
    }

    /// Delete an archived file: its record first (from then on it is not archived), then all
    /// its stored bytes. A segment or partial segment takes its streamed copies with it
    /// (records first).
    pub async fn delete(&self, file: WalFile, listing: &Listing) -> Result<()> {
        let storage = self.repo.storage();
        storage.delete(&self.record_path_of(file)).await?;
        for (path, _, _) in listing.data.get(&file).into_iter().flatten() {
            storage.delete(path).await?;
        }
        if let WalFile::Segment(s) | WalFile::Partial(s) = file {
            let mut streamed: Vec<&String> = listing
                .streamed_objects
                .get(&s)
                .into_iter()
                .flatten()
                .collect();
            streamed.sort_by_key(|p| !p.ends_with(".json"));
            for path in streamed {
                storage.delete(path).await?;
            }
        }
        Ok(())
    }

    /// Data objects no record refers to, older than `grace` before `now`.
    pub async fn orphans(
        &self,
        now: DateTime<Utc>,
        grace: std::time::Duration,
    ) -> Result<Vec<Orphan>> {
        let listing = self.list().await?;
        let referenced: std::collections::BTreeSet<String> = self
            .records()
            .await?
            .into_iter()
            .map(|r| r.object.path)
            .collect();
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        Ok(listing
            .data
            .values()
            .flatten()
            .filter(|(path, _, t)| !referenced.contains(path) && *t + grace <= now)
            .map(|(path, size, t)| Orphan {
                path: path.clone(),
                size: *size,
                last_modified: *t,
            })
            .collect())
    }

    /// Shared handle, for tasks that push or read in parallel.
    pub fn shared(self) -> Arc<WalArchive> {
        Arc::new(self)
    }
}

fn same_or_conflict(
    existing: &WalRecord,
    name: &str,
    sha256: &str,
    len: u64,
) -> Result<PushOutcome> {
    if existing.raw_sha256 == sha256 && existing.raw_bytes == len {
        return Ok(PushOutcome::AlreadyArchived);
    }
    let what = if name.ends_with(".history") {
        "a timeline history is never replaced"
    } else {
        "the archive keeps the first"
    };
    Err(Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "{name} is already archived with different contents (archived {} bytes at {}, \
             SHA-256 {}…; this one {len} bytes, SHA-256 {}…): {what}. Two servers may be \
             archiving into one place, or a restored copy kept archive_mode on",
            existing.raw_bytes,
            existing.pushed_at.format("%Y-%m-%d %H:%M:%S UTC"),
            &existing.raw_sha256[..12],
            &sha256[..12],
        ),
    ))
}

/// Compress, then encrypt, a whole (small) file.
fn seal(
    data: &[u8],
    mut compressor: Box<dyn Transform>,
    mut sealer: Box<dyn Transform>,
) -> Result<Bytes> {
    let mut compressed = Vec::with_capacity(data.len() / 2);
    compressor.update(data, &mut compressed)?;
    compressor.finish(&mut compressed)?;
    let mut sealed = Vec::with_capacity(compressed.len() + compressed.len() / 1000 + 128);
    sealer.update(&compressed, &mut sealed)?;
    sealer.finish(&mut sealed)?;
    Ok(Bytes::from(sealed))
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data).as_ref())
}
