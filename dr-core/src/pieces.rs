//! Payloads stored as named pieces: a source that writes several files at once (`pg_dump
//! -Fd -j N`, one file per table) is stored as one object per file, each compressed and
//! encrypted as a stream of its own under the backup's one data key, so that a restore can
//! read the pieces in any order and several at a time (`pg_restore -j N`).
//!
//! ```text
//! <root>/backups/<id>/<piece name>     one stream per piece (toc.dat, 3342.dat, …)
//! <root>/backups/<id>/manifest.json    written last, format 2: every object names its piece
//! ```
//!
//! The plug-in points mirror the one-stream ones: a [`PieceDumper`] hands out pieces as its
//! source completes them, [`backup_pieces`] uploads up to N of them at once; a
//! [`PieceRestorer`] opens pieces by name from a [`PieceSource`] ([`RepoPieces`] reads them
//! from a repository, checking each object's size, SHA-256 and authentication tags).
//! Memory is bounded per piece in flight (`StageOptions::bytes_per_stage() × 4` each), not
//! by the payload.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::codec::Codec;
use crate::crypto::{Decryptor, EncryptionInfo, Encryptor, PieceSealer};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::manifest::{Manifest, ObjectEntry, PIECES_MANIFEST_FORMAT};
pub use crate::names::check_piece_name;
use crate::pipeline::{hash_tap, stored_size_bound, BackupOptions, ReadOptions};
use crate::progress::{Meter, ProgressSink, Stage};
use crate::repo::{new_backup_id, Repository, BACKUPS_PREFIX};
use crate::series::Series;
use crate::source::{DumpCompletion, DumpStats, RestoreReport, SourceInfo};
use crate::stage::{spawn_transform, ByteStream, StageOptions};
use crate::storage::{PutOptions, StorageTarget};

/// One complete piece of a dump: its name and its bytes.
pub struct Piece {
    /// A plain file name (see [`check_piece_name`]), unique within the dump.
    pub name: String,
    /// The piece's bytes.
    pub stream: ByteStream,
    /// Its size, when the source knows it (a finished file does): sizes the upload's parts.
    pub size: Option<u64>,
}

impl std::fmt::Debug for Piece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piece")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A dump in progress that yields pieces as they are complete.
pub struct PiecesDump {
    /// Known when the dump starts.
    pub source: SourceInfo,
    /// The pieces, in the order the source completes them. An error item means the dump
    /// failed; the stream must be read to its end before [`DumpCompletion::finish`].
    pub pieces: BoxStream<'static, Result<Piece>>,
    /// Reports whether the dump succeeded, with its statistics (counted from the pieces).
    pub completion: Box<dyn DumpCompletion>,
}

impl std::fmt::Debug for PiecesDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiecesDump")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Produces consistent dumps as named pieces.
#[async_trait]
pub trait PieceDumper: Send + Sync {
    /// Start a dump; all pieces reflect one consistent point, reported in `source`.
    async fn start_pieces(&self) -> Result<PiecesDump>;
}

/// Where a restorer takes pieces from, by name.
#[async_trait]
pub trait PieceSource: Send + Sync {
    /// The names of every piece, in the order they were stored.
    fn names(&self) -> Vec<String>;

    /// The plaintext of piece `name`. Any damage arrives as an error item before the
    /// stream's end, so a consumer that commits only at the end never commits it.
    async fn open(&self, name: &str) -> Result<ByteStream>;

    /// How large piece `name` is stored, when known: lets a restorer start the largest
    /// pieces first, as `pg_restore -j` does with the sizes of its files.
    fn stored_size(&self, _name: &str) -> Option<u64> {
        None
    }
}

/// Restores a payload stored as pieces.
///
/// Contract as [`crate::Restorer`]'s: refuse a non-empty target unless configured to
/// replace it; if a piece fails, leave no half-restored target behind; compare what was
/// restored with `expected`.
#[async_trait]
pub trait PieceRestorer: Send + Sync {
    /// Restore the pieces of a payload in the format `source.format`.
    async fn restore_pieces(
        &self,
        source: &SourceInfo,
        expected: &DumpStats,
        pieces: &dyn PieceSource,
    ) -> Result<RestoreReport>;
}

/// Path of piece `name` of backup `id`.
pub fn piece_path(id: &str, name: &str) -> String {
    format!("{BACKUPS_PREFIX}{id}/{name}")
}

/// Take a backup of `dumper`'s source as pieces, uploading up to `uploads` pieces at once
/// (each through its own compress → encrypt → hash → store chain).
///
/// Returns the committed manifest (format [`PIECES_MANIFEST_FORMAT`]). On any error nothing
/// is committed: the pieces already stored stay without a manifest, an incomplete backup
/// that is never listed and that prune removes.
pub async fn backup_pieces(
    repo: &Repository,
    dumper: &dyn PieceDumper,
    encryptor: &dyn Encryptor,
    opts: &BackupOptions,
    uploads: usize,
) -> Result<Manifest> {
    let (codec, storage_class, started_at) = opts.resolve(repo);
    let clock = Instant::now();

    repo.check_can_sign_manifests()?;
    let (encryption, sealer) = encryptor.encrypt_pieces()?;
    let sealer: Arc<dyn PieceSealer> = Arc::from(sealer);
    codec.encoder()?;

    let dump = dumper.start_pieces().await?;
    let id = new_backup_id(started_at, &dump.source.kind)?;
    tracing::info!(backup = %id, source = %dump.source.name, uploads, "backup (pieces) started");

    let upload = PieceUpload {
        storage: repo.storage().clone(),
        id: id.clone(),
        codec,
        sealer,
        storage_class: storage_class.clone(),
        stages: opts.stages,
        read: Arc::new(Mutex::new(Meter::new(
            Stage::Read,
            None,
            opts.progress.clone(),
        ))),
        written: Arc::new(Mutex::new(Meter::new(
            Stage::Write,
            None,
            opts.progress.clone(),
        ))),
    };
    let stored: Result<Vec<(ObjectEntry, u64)>> = dump
        .pieces
        .map(|piece| {
            let upload = &upload;
            async move { upload.store(piece?).await }
        })
        .buffer_unordered(uploads.max(1))
        .try_collect()
        .await;
    let completed = dump.completion.finish().await;
    let (objects, stats) = match (stored, completed) {
        (Ok(objects), Ok(stats)) => (objects, stats),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e.with_context("backup", &id)),
        (Err(stream_err), Err(dump_err)) => {
            return Err(if stream_err.kind() == ErrorKind::Cancelled {
                dump_err
            } else {
                dump_err.with_source(stream_err)
            }
            .with_context("backup", &id))
        }
    };
    upload.read.lock().unwrap().done();
    upload.written.lock().unwrap().done();
    if objects.is_empty() {
        return Err(
            Error::new(ErrorKind::Other, "the dump produced no pieces").with_context("backup", &id)
        );
    }
    let raw_bytes = objects.iter().map(|(_, raw)| raw).sum();
    let objects: Vec<ObjectEntry> = objects.into_iter().map(|(o, _)| o).collect();
    let stored_bytes = objects.iter().map(|o| o.size).sum();

    let mut manifest = Manifest {
        format: PIECES_MANIFEST_FORMAT,
        id: id.clone(),
        kind: "full".into(),
        tool: concat!("dr ", env!("CARGO_PKG_VERSION")).into(),
        started_at,
        finished_at: started_at + chrono::Duration::from_std(clock.elapsed()).unwrap_or_default(),
        series: Series::of(&dump.source),
        source: dump.source,
        stats,
        codec,
        encryption,
        objects,
        raw_bytes,
        stored_bytes,
        labels: opts.labels.clone(),
        pinned: false,
        annotations: Default::default(),
        signature: None,
    };
    repo.seal_manifest(&mut manifest).context("backup", &id)?;
    repo.storage()
        .put_if_absent(
            &Repository::manifest_path(&id),
            Bytes::from(manifest.to_json()),
            PutOptions::default(),
        )
        .await
        .context("backup", &id)?;
    tracing::info!(backup = %id, raw_bytes, stored_bytes, pieces = manifest.objects.len(), "backup committed");
    Ok(manifest)
}

/// What every piece's upload shares.
struct PieceUpload {
    storage: Arc<dyn StorageTarget>,
    id: String,
    codec: Codec,
    sealer: Arc<dyn PieceSealer>,
    storage_class: Option<String>,
    stages: StageOptions,
    read: Arc<Mutex<Meter>>,
    written: Arc<Mutex<Meter>>,
}

impl PieceUpload {
    /// Store one piece; returns its manifest entry and its raw size.
    async fn store(&self, piece: Piece) -> Result<(ObjectEntry, u64)> {
        let Piece { name, stream, size } = piece;
        check_piece_name(&name)?;
        let path = piece_path(&self.id, &name);
        let raw = Arc::new(Mutex::new(0u64));
        let counted = {
            let raw = raw.clone();
            let meter = self.read.clone();
            stream
                .map(move |chunk| {
                    if let Ok(c) = &chunk {
                        *raw.lock().unwrap() += c.len() as u64;
                        meter.lock().unwrap().add(c.len());
                    }
                    chunk
                })
                .boxed()
        };
        let compressed = spawn_transform(counted, self.codec.encoder()?, self.stages);
        let sealed = spawn_transform(compressed, self.sealer.seal(&name)?, self.stages);
        let slot = Arc::new(Mutex::new(None));
        let mut hashed = hash_tap(sealed, slot.clone(), None);
        let put = PutOptions {
            storage_class: self.storage_class.clone(),
            expected_size: size.map(stored_size_bound),
        };
        let mut writer = self
            .storage
            .put_stream(&path, put)
            .await
            .context("piece", &name)?;
        let streamed: Result<()> = async {
            while let Some(chunk) = hashed.next().await {
                let chunk = chunk?;
                self.written.lock().unwrap().add(chunk.len());
                writer.write(chunk).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = streamed {
            let _ = writer.abort().await;
            return Err(e.with_context("piece", &name));
        }
        let stored = writer.finish().await.context("piece", &name)?;
        let sha256 = slot.lock().unwrap().take().expect("hash tap finished");
        let raw = *raw.lock().unwrap();
        Ok((
            ObjectEntry {
                path,
                size: stored,
                sha256,
                storage_class: self.storage_class.clone(),
                piece: Some(name),
            },
            raw,
        ))
    }
}

/// The pieces of a backup in a repository, opened one by one: each object's size and
/// SHA-256 are checked and every chunk authenticated (under the name it was sealed for)
/// before its bytes are released, then it is decompressed.
pub struct RepoPieces<'a> {
    storage: Arc<dyn StorageTarget>,
    id: String,
    objects: BTreeMap<String, ObjectEntry>,
    order: Vec<String>,
    encryption: EncryptionInfo,
    codec: Codec,
    decryptor: &'a dyn Decryptor,
    stages: StageOptions,
    progress: Option<ProgressSink>,
}

impl std::fmt::Debug for RepoPieces<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoPieces")
            .field("id", &self.id)
            .field("pieces", &self.order)
            .finish_non_exhaustive()
    }
}

impl<'a> RepoPieces<'a> {
    /// Check the key and that every object is present with its recorded size, before
    /// anything is read: a wrong key or a missing object fails here, not halfway through.
    pub async fn open(
        repo: &Repository,
        manifest: &Manifest,
        decryptor: &'a dyn Decryptor,
        opts: &ReadOptions,
    ) -> Result<RepoPieces<'a>> {
        let id = manifest.id.clone();
        if !manifest.is_pieces() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "this backup's payload is one stream, not pieces",
            )
            .with_context("backup", &id));
        }
        let mut objects = BTreeMap::new();
        let mut order = Vec::new();
        for o in &manifest.objects {
            let name = o
                .piece
                .clone()
                .expect("a pieces manifest names every object");
            order.push(name.clone());
            objects.insert(name, o.clone());
        }
        if manifest.encryption.scheme != "none" {
            decryptor
                .decrypt_piece(&manifest.encryption, &order[0])
                .context("backup", &id)?;
        }
        manifest.codec.decoder()?;
        crate::pipeline::probe_objects(repo, manifest).await?;
        Ok(RepoPieces {
            storage: repo.storage().clone(),
            id,
            objects,
            order,
            encryption: manifest.encryption.clone(),
            codec: manifest.codec,
            decryptor,
            stages: opts.stages,
            progress: opts.progress.clone(),
        })
    }
}

#[async_trait]
impl PieceSource for RepoPieces<'_> {
    fn names(&self) -> Vec<String> {
        self.order.clone()
    }

    fn stored_size(&self, name: &str) -> Option<u64> {
        self.objects.get(name).map(|o| o.size)
    }

    async fn open(&self, name: &str) -> Result<ByteStream> {
        let o = self.objects.get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("backup '{}' has no piece '{name}'", self.id),
            )
        })?;
        let opener = if self.encryption.scheme == "none" {
            None
        } else {
            Some(self.decryptor.decrypt_piece(&self.encryption, name)?)
        };
        let stored = self
            .storage
            .get(&o.path, None)
            .await
            .map_err(|e| e.with_context("backup", &self.id))?;
        let slot = Arc::new(Mutex::new(None));
        let checked = hash_tap(stored, slot, Some(o.clone()));
        let checked =
            crate::pipeline::metered(checked, Stage::Verify, Some(o.size), self.progress.clone());
        let plain = match opener {
            Some(t) => spawn_transform(checked, t, self.stages),
            None => checked,
        };
        let decoded = spawn_transform(plain, self.codec.decoder()?, self.stages);
        let (id, piece) = (self.id.clone(), name.to_owned());
        Ok(decoded
            .map_err(move |e| e.with_context("piece", &piece).with_context("backup", &id))
            .boxed())
    }
}

/// Restore a backup stored as pieces through `restorer`. Checks the key and every object's
/// presence before touching the target.
pub async fn restore_pieces(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    restorer: &dyn PieceRestorer,
    opts: &ReadOptions,
) -> Result<RestoreReport> {
    let pieces = RepoPieces::open(repo, manifest, decryptor, opts).await?;
    restorer
        .restore_pieces(&manifest.source, &manifest.stats, &pieces)
        .await
        .context("backup", &manifest.id)
}

/// Write every piece as a file of directory `dir` (created if missing; it must be empty),
/// each checked to its end before it gets its name: a piece that fails leaves no file of
/// its name. Returns the plaintext bytes written.
pub async fn write_pieces(pieces: &dyn PieceSource, dir: &Path) -> Result<u64> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
    if entries
        .next_entry()
        .await
        .map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?
        .is_some()
    {
        return Err(Error::new(
            ErrorKind::NotEmpty,
            format!("{} is not empty", dir.display()),
        ));
    }
    let mut total = 0u64;
    for name in pieces.names() {
        check_piece_name(&name)?;
        let partial = dir.join(format!("{name}.partial"));
        let written: Result<u64> = async {
            let mut file = tokio::fs::File::create(&partial)
                .await
                .map_err(|e| Error::io(format!("cannot create {}", partial.display()), e))?;
            let mut stream = pieces.open(&name).await?;
            let mut n = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                n += chunk.len() as u64;
                tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                    .await
                    .map_err(|e| Error::io(format!("cannot write {}", partial.display()), e))?;
            }
            file.sync_all()
                .await
                .map_err(|e| Error::io(format!("cannot write {}", partial.display()), e))?;
            Ok(n)
        }
        .await;
        match written {
            Ok(n) => {
                tokio::fs::rename(&partial, dir.join(&name))
                    .await
                    .map_err(|e| Error::io(format!("cannot rename {}", partial.display()), e))?;
                total += n;
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e);
            }
        }
    }
    Ok(total)
}
