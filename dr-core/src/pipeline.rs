//! The pipelines: dump → compress → encrypt → hash → store, and back.
//!
//! Each CPU-bound stage runs on its own thread (see [`crate::stage`]); the upload keeps a
//! bounded number of parts in flight (the storage target's business). Memory is
//! `StageOptions::bytes_per_stage() × stages` plus the target's upload buffers, whatever
//! the size of the database.
//!
//! Commit protocol: the payload object is finished only after the dumper reports success,
//! and the manifest is written last with create-if-absent. A backup that fails or is killed
//! at any point leaves at most an uncommitted payload, which is never listed.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use ring::digest;

use crate::codec::Codec;
use crate::crypto::{Decryptor, EncryptionInfo, Encryptor};
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::lease::Clock;
use crate::manifest::{Manifest, ObjectEntry, MANIFEST_FORMAT};
use crate::progress::{Meter, ProgressSink, Stage};
use crate::repo::{new_backup_id, Repository};
use crate::series::Series;
use crate::source::{Dumper, RestoreReport, Restorer};
use crate::stage::{spawn_transform, ByteStream, StageOptions, Transform};
use crate::storage::PutOptions;

/// How to take a backup.
#[derive(Clone, Default)]
pub struct BackupOptions {
    /// Compression; `None` takes the repository default.
    pub codec: Option<Codec>,
    /// Labels recorded in the manifest.
    pub labels: Vec<String>,
    /// Storage class for the data objects; `None` takes the repository default.
    pub storage_class: Option<String>,
    /// Chunk sizes and channel depths.
    pub stages: StageOptions,
    /// Where progress events go.
    pub progress: Option<ProgressSink>,
    /// The wall clock that stamps the backup's id and times; `None` is the system clock.
    /// A scheduler passes its own, so that backups carry the times it planned them at
    /// (and tests on a simulated clock get backups at simulated times).
    pub clock: Option<Clock>,
}

impl std::fmt::Debug for BackupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupOptions")
            .field("codec", &self.codec)
            .field("labels", &self.labels)
            .field("storage_class", &self.storage_class)
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

impl BackupOptions {
    /// The codec, storage class and start time of a backup into `repo`: these options where
    /// set, the repository's defaults and the clock otherwise.
    pub(crate) fn resolve(&self, repo: &Repository) -> (Codec, Option<String>, DateTime<Utc>) {
        let defaults = &repo.config().defaults;
        (
            self.codec.unwrap_or(defaults.compression),
            self.storage_class
                .clone()
                .or_else(|| defaults.storage_class.clone()),
            self.clock.as_ref().map_or_else(Utc::now, Clock::now),
        )
    }
}

/// How to read a backup back.
#[derive(Clone, Default)]
pub struct ReadOptions {
    /// Chunk sizes and channel depths.
    pub stages: StageOptions,
    /// Where progress events go.
    pub progress: Option<ProgressSink>,
}

impl std::fmt::Debug for ReadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadOptions")
            .field("stages", &self.stages)
            .finish_non_exhaustive()
    }
}

/// Take a backup of `dumper`'s source into `repo`, encrypted by `encryptor`.
///
/// Returns the committed manifest. On any error nothing is committed, and the partial
/// upload is aborted.
pub async fn backup(
    repo: &Repository,
    dumper: &dyn Dumper,
    encryptor: &dyn Encryptor,
    opts: &BackupOptions,
) -> Result<Manifest> {
    let (codec, storage_class, started_at) = opts.resolve(repo);
    let clock = Instant::now();

    // Check the encryptor, the codec and the signing key before the dump starts, so a bad
    // key costs nothing (and nothing is encrypted for a repository that would refuse it).
    repo.check_can_sign_manifests()?;
    let (encryption, sealer) = encryptor.encrypt_stream()?;
    let compressor = codec.encoder()?;

    let dump = dumper.start().await?;
    let id = new_backup_id(started_at, &dump.source.kind)?;
    let path = Repository::payload_path(&id, 0);
    tracing::info!(backup = %id, source = %dump.source.name, "backup started");

    // raw bytes → compress → encrypt → hash → upload
    let raw_count = Arc::new(Mutex::new(Meter::new(
        Stage::Read,
        None,
        opts.progress.clone(),
    )));
    let counted = {
        let raw_count = raw_count.clone();
        dump.stream
            .map(move |chunk| {
                if let Ok(c) = &chunk {
                    raw_count.lock().unwrap().add(c.len());
                }
                chunk
            })
            .boxed()
    };
    let stages = dumper.stage_options(opts.stages);
    let compressed = spawn_transform(counted, compressor, stages);
    let sealed = spawn_transform(compressed, sealer, stages);
    let digest_slot = Arc::new(Mutex::new(None));
    let hashed = hash_tap(sealed, digest_slot.clone(), None);

    let put = PutOptions {
        storage_class: storage_class.clone(),
        expected_size: dump.size_hint.map(stored_size_bound),
    };
    let writer = repo
        .storage()
        .put_stream(&path, put)
        .await
        .context("backup", &id)?;
    let stored = upload(writer, hashed, dump.completion, opts.progress.clone()).await;
    let (stored_bytes, stats) = stored.context("backup", &id)?;
    let sha256 = digest_slot
        .lock()
        .unwrap()
        .take()
        .expect("hash tap finished");
    let raw_bytes = {
        let mut m = raw_count.lock().unwrap();
        m.done();
        m.bytes()
    };

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
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
        objects: vec![ObjectEntry {
            path,
            size: stored_bytes,
            sha256,
            storage_class,
            piece: None,
        }],
        raw_bytes,
        stored_bytes,
        labels: opts.labels.clone(),
        pinned: false,
        annotations: Default::default(),
        signature: None,
    };
    let mut manifest = manifest;
    repo.seal_manifest(&mut manifest).context("backup", &id)?;
    repo.storage()
        .put_if_absent(
            &Repository::manifest_path(&id),
            Bytes::from(manifest.to_json()),
            PutOptions::default(),
        )
        .await
        .context("backup", &id)?;
    tracing::info!(backup = %id, raw_bytes, stored_bytes, "backup committed");
    Ok(manifest)
}

/// The most a payload of `raw` bytes can take once compressed and encrypted: compression
/// may add a little to incompressible data and encryption adds a tag to every chunk, both
/// far below 1/1024 of the size.
pub(crate) fn stored_size_bound(raw: u64) -> u64 {
    raw.saturating_add(raw / 1024).saturating_add(1 << 20)
}

/// Stream `data` into `writer`; finish it only once the dumper reports success.
async fn upload(
    mut writer: Box<dyn crate::storage::ObjectWriter>,
    mut data: ByteStream,
    completion: Box<dyn crate::source::DumpCompletion>,
    progress: Option<ProgressSink>,
) -> Result<(u64, crate::source::DumpStats)> {
    let mut meter = Meter::new(Stage::Write, None, progress);
    let streamed: Result<()> = async {
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            meter.add(chunk.len());
            writer.write(chunk).await?;
        }
        Ok(())
    }
    .await;
    drop(data);
    // Always wait for the dumper, so its process is reaped and its error (usually the real
    // cause of a stream error) is reported.
    let completed = completion.finish().await;
    let stats = match (streamed, completed) {
        (Ok(()), Ok(stats)) => stats,
        (Err(e), Ok(_)) | (Ok(()), Err(e)) => {
            let _ = writer.abort().await;
            return Err(e);
        }
        (Err(stream_err), Err(dump_err)) => {
            let _ = writer.abort().await;
            // The dumper's failure explains a broken stream better than the stream does.
            return Err(if stream_err.kind() == ErrorKind::Cancelled {
                dump_err
            } else {
                dump_err.with_source(stream_err)
            });
        }
    };
    let size = writer.finish().await?;
    meter.done();
    Ok((size, stats))
}

/// Open the payload of a backup as a plaintext stream: read every object, check its size
/// and SHA-256, decrypt (authenticating every chunk) and decompress.
///
/// The key is checked before any data is read, so a wrong key fails at once. Any mismatch
/// arrives as an error item before the stream's end, so a consumer that commits only at the
/// end (a restore) never commits tampered data.
pub async fn open_payload(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    opts: &ReadOptions,
) -> Result<ByteStream> {
    let id = manifest.id.clone();
    if manifest.is_pieces() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "this backup is stored as pieces (a directory archive, taken with --jobs), not as \
             one stream: write it out with `drctl cat ID --dir DIR` and restore that with \
             `pg_restore -Fd DIR`, or restore it with `drctl restore`",
        )
        .with_context("backup", &id));
    }
    let opener = open_encryption(&manifest.encryption, decryptor).context("backup", &id)?;
    let decoder = manifest.codec.decoder()?;
    probe_objects(repo, manifest).await?;

    let storage = repo.storage().clone();
    let objects = manifest.objects.clone();
    let progress = opts.progress.clone();
    let stored_total = manifest.stored_bytes;
    let stored: ByteStream = futures::stream::iter(objects)
        .then(move |o| {
            let storage = storage.clone();
            async move {
                let stream = storage.get(&o.path, None).await?;
                let slot = Arc::new(Mutex::new(None));
                Ok::<_, Error>(hash_tap(stream, slot, Some(o)))
            }
        })
        .flat_map(|r| match r {
            Ok(s) => s,
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .boxed();
    let stored = metered(stored, Stage::Verify, Some(stored_total), progress);
    let plain = match opener {
        Some(t) => spawn_transform(stored, t, opts.stages),
        None => stored,
    };
    let decoded = spawn_transform(plain, decoder, opts.stages);
    Ok(expect_length(decoded, manifest.raw_bytes, id))
}

/// Check that every object of `manifest` is in storage with its recorded size, so that a
/// missing or cut object fails before anything is consumed.
pub(crate) async fn probe_objects(repo: &Repository, manifest: &Manifest) -> Result<()> {
    let id = &manifest.id;
    for o in &manifest.objects {
        let meta = repo.storage().head(&o.path).await.map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Error::corrupt(format!(
                    "backup object '{}' is missing from storage",
                    o.path
                ))
                .with_context("backup", id)
            } else {
                e.with_context("backup", id)
            }
        })?;
        if meta.size != o.size {
            return Err(Error::corrupt(format!(
                "backup object '{}' is {} bytes, the manifest says {}",
                o.path, meta.size, o.size
            ))
            .with_context("backup", id));
        }
    }
    Ok(())
}

/// Verify a backup end to end without a database: every stored byte, every checksum and
/// authentication tag, decompression, and the payload length. Returns the raw bytes read.
pub async fn verify(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    opts: &ReadOptions,
) -> Result<u64> {
    crate::stage::drain(open_payload(repo, manifest, decryptor, opts).await?).await
}

/// Restore a backup through `restorer`. Checks the key and every object's presence before
/// touching the target.
pub async fn restore(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    restorer: &dyn Restorer,
    opts: &ReadOptions,
) -> Result<RestoreReport> {
    let payload = open_payload(repo, manifest, decryptor, opts).await?;
    restorer
        .restore(&manifest.source, &manifest.stats, payload)
        .await
        .context("backup", &manifest.id)
}

fn open_encryption(
    info: &EncryptionInfo,
    decryptor: &dyn Decryptor,
) -> Result<Option<Box<dyn Transform>>> {
    if info.scheme == "none" {
        return Ok(None);
    }
    decryptor.decrypt_stream(info).map(Some)
}

/// Count bytes through a stream for progress.
pub(crate) fn metered(
    stream: ByteStream,
    stage: Stage,
    total: Option<u64>,
    sink: Option<ProgressSink>,
) -> ByteStream {
    if sink.is_none() {
        return stream;
    }
    let meter = Meter::new(stage, total, sink);
    futures::stream::unfold(
        (stream, meter, false),
        |(mut s, mut meter, done)| async move {
            if done {
                return None;
            }
            match s.next().await {
                Some(Ok(b)) => {
                    meter.add(b.len());
                    Some((Ok(b), (s, meter, false)))
                }
                Some(Err(e)) => Some((Err(e), (s, meter, true))),
                None => {
                    meter.done();
                    None
                }
            }
        },
    )
    .boxed()
}

/// Fail the stream at its end if it did not carry exactly `expected` bytes.
fn expect_length(stream: ByteStream, expected: u64, id: String) -> ByteStream {
    let state = (stream, 0u64, false);
    futures::stream::unfold(state, move |(mut s, mut n, done)| {
        let id = id.clone();
        async move {
            if done {
                return None;
            }
            match s.next().await {
                Some(Ok(b)) => {
                    n += b.len() as u64;
                    Some((Ok(b), (s, n, false)))
                }
                Some(Err(e)) => Some((Err(e.with_context("backup", &id)), (s, n, true))),
                None if n != expected => Some((
                    Err(Error::corrupt(format!(
                        "payload is {n} bytes after decompression, the manifest says {expected}"
                    ))
                    .with_context("backup", id)),
                    (s, n, true),
                )),
                None => None,
            }
        }
    })
    .boxed()
}

/// Hashes the bytes passing through; on the stream's end stores the hex SHA-256 in `slot`,
/// and when given the manifest's entry, ends with an error instead if size or hash differ.
///
/// Runs inline, in whichever thread polls the stream (the next stage's): the chunks pass
/// through as they are, without a copy or a thread hand-over of their own.
pub(crate) fn hash_tap(
    input: ByteStream,
    slot: Arc<Mutex<Option<String>>>,
    expect: Option<ObjectEntry>,
) -> ByteStream {
    let tap = HashTap {
        ctx: digest::Context::new(&digest::SHA256),
        size: 0,
        slot,
        expect,
    };
    futures::stream::unfold((input, Some(tap)), |(mut input, mut tap)| async move {
        let t = tap.as_mut()?;
        match input.next().await {
            Some(Ok(chunk)) => {
                t.ctx.update(&chunk);
                t.size += chunk.len() as u64;
                Some((Ok(chunk), (input, tap)))
            }
            Some(Err(e)) => Some((Err(e), (input, None))),
            None => match tap.take().expect("checked above").finish() {
                Ok(()) => None,
                Err(e) => Some((Err(e), (input, None))),
            },
        }
    })
    .boxed()
}

struct HashTap {
    ctx: digest::Context,
    size: u64,
    slot: Arc<Mutex<Option<String>>>,
    expect: Option<ObjectEntry>,
}

impl HashTap {
    fn finish(self) -> Result<()> {
        let hex = hex::encode(self.ctx.finish().as_ref());
        if let Some(o) = &self.expect {
            if self.size != o.size {
                return Err(Error::corrupt(format!(
                    "backup object '{}' ended after {} bytes, the manifest says {}",
                    o.path, self.size, o.size
                )));
            }
            if hex != o.sha256 {
                return Err(Error::corrupt(format!(
                    "backup object '{}' fails its SHA-256 check: the stored bytes were modified",
                    o.path
                )));
            }
        }
        *self.slot.lock().unwrap() = Some(hex);
        Ok(())
    }
}
