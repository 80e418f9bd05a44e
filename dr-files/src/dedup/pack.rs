//! Packs: many compressed chunks ("blobs") in one encrypted object, and their index.
//!
//! A pack's plaintext is its blobs back to back; the stored object is that plaintext as
//! one dr-aead-v1 stream with its own data key (or an age file, in an age repository),
//! through the repository's [`Encryptor`]. The index object beside it (plain JSON) says
//! where each chunk lies and holds the wrapped data key: chunk ids are MACs under the dedup
//! key, so the index tells a reader without that key nothing about the content but the
//! compressed sizes. A pack counts only once its index exists (written second).

use std::io::Read;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use dr_core::{
    Decryptor, EncryptionInfo, Encryptor, Error, ErrorKind, PutOptions, Repository, Result,
    StorageExt,
};

use super::key::{ChunkId, DedupKey};

/// Prefix of the pack objects.
pub const PACKS_PREFIX: &str = "files/packs/";
/// Prefix of the pack indexes.
pub const INDEX_PREFIX: &str = "files/index/";
/// A pack is sealed once its plaintext reaches this size (restic uses 16 MiB too).
pub const PACK_TARGET_BYTES: usize = 16 << 20;
/// No chunk is larger (FastCDC's own maximum; dr cuts at 8 MiB).
const MAX_CHUNK_BYTES: usize = 16 << 20;
/// zstd level of the blobs.
const ZSTD_LEVEL: i32 = 3;

/// How a blob's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobCodec {
    /// As they are (the chunk did not compress).
    None,
    /// One zstd frame.
    Zstd,
}

/// One chunk in a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// The chunk id (64 hex digits in JSON).
    #[serde(with = "super::hex32")]
    pub id: ChunkId,
    /// Where the blob starts in the pack's plaintext.
    pub offset: u64,
    /// The blob's stored length.
    pub length: u32,
    /// The chunk's length once decompressed.
    pub raw: u32,
    /// How it is stored.
    pub codec: BlobCodec,
}

/// `files/index/<pack>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackIndex {
    /// Format version (1).
    pub format: u32,
    /// The pack's name: `files/packs/<pack>`.
    pub pack: String,
    /// Stored size of the pack object.
    pub size: u64,
    /// SHA-256 of the stored pack object, hex.
    pub sha256: String,
    /// The id of the dedup key its chunk ids were computed with.
    pub dedup_key: String,
    /// How the pack was encrypted (wrapped data keys).
    pub encryption: EncryptionInfo,
    /// The blobs, in plaintext order, back to back from offset 0.
    pub blobs: Vec<BlobEntry>,
}

impl PackIndex {
    /// Path of the pack object.
    pub fn pack_path(&self) -> String {
        format!("{PACKS_PREFIX}{}", self.pack)
    }

    /// Path of this index.
    pub fn index_path(pack: &str) -> String {
        format!("{INDEX_PREFIX}{pack}.json")
    }

    /// Bytes of the pack's plaintext.
    pub fn plain_len(&self) -> u64 {
        self.blobs.iter().map(|b| u64::from(b.length)).sum()
    }

    /// Parse and check an index read from storage (untrusted bytes).
    pub fn from_json(bytes: &[u8]) -> Result<PackIndex> {
        let index: PackIndex = serde_json::from_slice(bytes).map_err(|e| {
            Error::corrupt("pack index is not JSON of the expected shape").with_source(e)
        })?;
        if index.format != 1 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("pack index format {} is not 1: upgrade dr", index.format),
            ));
        }
        let bad = |what: String| Error::corrupt(format!("pack index of '{}': {what}", index.pack));
        if index.pack.len() != 32 || !index.pack.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the pack name is not 32 hex digits".into()));
        }
        if index.sha256.len() != 64 || hex::decode(&index.sha256).is_err() {
            return Err(bad("malformed SHA-256".into()));
        }
        let mut at = 0u64;
        for b in &index.blobs {
            if b.offset != at {
                return Err(bad(format!(
                    "blob {} does not start where the previous ends",
                    hex::encode(b.id)
                )));
            }
            if b.raw as usize > MAX_CHUNK_BYTES || b.length as usize > MAX_CHUNK_BYTES + (64 << 10)
            {
                return Err(bad(format!(
                    "blob {} is larger than any chunk",
                    hex::encode(b.id)
                )));
            }
            if b.codec == BlobCodec::None && b.length != b.raw {
                return Err(bad(format!(
                    "stored blob {} has two lengths",
                    hex::encode(b.id)
                )));
            }
            at += u64::from(b.length);
        }
        Ok(index)
    }
}

/// A chunk as it goes into a pack: compressed if that made it smaller.
#[derive(Debug)]
pub struct Blob {
    /// The chunk id.
    pub id: ChunkId,
    /// The chunk's length.
    pub raw: u32,
    /// How `bytes` hold the chunk.
    pub codec: BlobCodec,
    /// The stored bytes.
    pub bytes: Vec<u8>,
}

/// Turns chunks into [`Blob`]s with one zstd context, reused: a fresh context per chunk
/// (allocating and clearing its tables) cost more than compressing a small file's chunk.
pub struct BlobCompressor {
    zstd: zstd::bulk::Compressor<'static>,
}

impl std::fmt::Debug for BlobCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCompressor").finish_non_exhaustive()
    }
}

impl BlobCompressor {
    /// A compressor at the blobs' zstd level.
    pub fn new() -> Result<BlobCompressor> {
        let zstd = zstd::bulk::Compressor::new(ZSTD_LEVEL)
            .map_err(|e| Error::io("cannot set up zstd compression", e))?;
        Ok(BlobCompressor { zstd })
    }

    /// The blob of chunk `id`: zstd if that is smaller, else the chunk as it is.
    pub fn blob(&mut self, id: &ChunkId, chunk: &[u8]) -> Result<Blob> {
        let compressed = self
            .zstd
            .compress(chunk)
            .map_err(|e| Error::io("cannot compress a chunk", e))?;
        let (codec, bytes) = if compressed.len() < chunk.len() {
            (BlobCodec::Zstd, compressed)
        } else {
            (BlobCodec::None, chunk.to_vec())
        };
        Ok(Blob {
            id: *id,
            raw: chunk.len() as u32,
            codec,
            bytes,
        })
    }
}

/// Collects blobs into a pack's plaintext until it is full.
#[derive(Debug, Default)]
pub struct PackBuilder {
    plain: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

impl PackBuilder {
    /// Add a blob.
    pub fn add(&mut self, blob: &Blob) {
        self.blobs.push(BlobEntry {
            id: blob.id,
            offset: self.plain.len() as u64,
            length: blob.bytes.len() as u32,
            raw: blob.raw,
            codec: blob.codec,
        });
        self.plain.extend_from_slice(&blob.bytes);
    }

    /// Whether the pack has reached its target size.
    pub fn is_full(&self) -> bool {
        self.plain.len() >= PACK_TARGET_BYTES
    }

    /// Whether no chunk was added.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Encrypt the pack: its stored bytes and its index.
    pub fn seal(mut self, encryptor: &dyn Encryptor, dedup: &DedupKey) -> Result<SealedPack> {
        self.seal_into(encryptor, dedup, Vec::new())
    }

    /// [`PackBuilder::seal`] into `stored` (a buffer an earlier pack's upload gave back,
    /// cleared here), leaving this builder empty with its buffer kept for the next pack.
    ///
    /// A backup reuses its pack buffers: each is 16–32 MiB, and glibc, once such a block is
    /// freed, serves the next ones from its arenas instead of fresh mappings; a new pair of
    /// buffers per pack then left peak RSS growing with the number of packs.
    pub fn seal_into(
        &mut self,
        encryptor: &dyn Encryptor,
        dedup: &DedupKey,
        mut stored: Vec<u8>,
    ) -> Result<SealedPack> {
        let (encryption, mut sealer) = encryptor.encrypt_stream()?;
        stored.clear();
        stored.reserve(self.plain.len() + self.plain.len() / 1024 + 4096);
        sealer.update(&self.plain, &mut stored)?;
        sealer.finish(&mut stored)?;
        let mut name = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut name)
            .map_err(|_| Error::new(ErrorKind::Other, "the system random generator failed"))?;
        let index = PackIndex {
            format: 1,
            pack: hex::encode(name),
            size: stored.len() as u64,
            sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &stored)),
            dedup_key: dedup.key_id(),
            encryption,
            blobs: std::mem::take(&mut self.blobs),
        };
        self.plain.clear();
        Ok(SealedPack {
            stored: Bytes::from(stored),
            index,
        })
    }
}

/// A pack ready to upload.
#[derive(Debug)]
pub struct SealedPack {
    /// The object's bytes.
    pub stored: Bytes,
    /// Its index.
    pub index: PackIndex,
}

impl SealedPack {
    /// Store the pack, then its index (create-if-absent): the pack counts from then on.
    pub async fn upload(
        self,
        repo: &Repository,
        storage_class: Option<String>,
    ) -> Result<PackIndex> {
        self.upload_and_reclaim(repo, storage_class)
            .await
            .map(|(index, _)| index)
    }

    /// [`SealedPack::upload`], giving back the stored bytes' buffer for the next pack when
    /// the storage kept no reference to it.
    pub async fn upload_and_reclaim(
        self,
        repo: &Repository,
        storage_class: Option<String>,
    ) -> Result<(PackIndex, Option<Vec<u8>>)> {
        let opts = PutOptions {
            storage_class,
            expected_size: Some(self.stored.len() as u64),
        };
        repo.storage()
            .put_bytes(&self.index.pack_path(), self.stored.clone(), opts)
            .await?;
        let json = serde_json::to_vec(&self.index).expect("an index serializes");
        repo.storage()
            .put_if_absent(
                &PackIndex::index_path(&self.index.pack),
                Bytes::from(json),
                PutOptions::default(),
            )
            .await?;
        let buffer = self.stored.try_into_mut().ok().map(Vec::from);
        Ok((self.index, buffer))
    }
}

/// A pack read back: its plaintext, authenticated and checked against its index.
#[derive(Debug)]
pub struct OpenPack {
    plain: Vec<u8>,
}

impl OpenPack {
    /// Download, check size and SHA-256, and decrypt the pack of `index`.
    pub async fn read(
        repo: &Repository,
        index: &PackIndex,
        decryptor: &dyn Decryptor,
    ) -> Result<OpenPack> {
        let stored = OpenPack::download(repo, index).await?;
        OpenPack::from_stored(index, &stored, decryptor)
    }

    /// The stored bytes of the pack of `index` (checked by [`OpenPack::from_stored`]).
    pub(crate) async fn download(repo: &Repository, index: &PackIndex) -> Result<Bytes> {
        let path = index.pack_path();
        repo.storage().get_bytes(&path).await.map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Error::corrupt(format!("pack '{path}' is missing from storage"))
            } else {
                e.with_context("pack", &path)
            }
        })
    }

    /// Check and decrypt stored pack bytes.
    pub fn from_stored(
        index: &PackIndex,
        stored: &[u8],
        decryptor: &dyn Decryptor,
    ) -> Result<OpenPack> {
        let path = index.pack_path();
        if stored.len() as u64 != index.size {
            return Err(Error::corrupt(format!(
                "pack '{path}' is {} bytes, its index says {}",
                stored.len(),
                index.size
            )));
        }
        if hex::encode(ring::digest::digest(&ring::digest::SHA256, stored)) != index.sha256 {
            return Err(Error::corrupt(format!(
                "pack '{path}' fails its SHA-256 check: the stored bytes were modified"
            )));
        }
        let mut opener = decryptor.decrypt_stream(&index.encryption)?;
        let mut plain = Vec::with_capacity(stored.len());
        opener
            .update(stored, &mut plain)
            .and_then(|()| opener.finish(&mut plain))
            .map_err(|e| e.with_context("pack", &path))?;
        if plain.len() as u64 != index.plain_len() {
            return Err(Error::corrupt(format!(
                "pack '{path}' holds {} bytes, its index lists {}",
                plain.len(),
                index.plain_len()
            )));
        }
        Ok(OpenPack { plain })
    }

    /// A pack from plaintext already authenticated elsewhere (fuzzing the blob reader).
    #[doc(hidden)]
    pub fn from_plaintext(plain: Vec<u8>) -> OpenPack {
        OpenPack { plain }
    }

    /// The chunk `blob` of this pack, decompressed and its length checked; with `dedup`, its
    /// id checked too (the MAC proves the chunk is what the snapshot referenced).
    pub fn chunk(&self, blob: &BlobEntry, dedup: Option<&DedupKey>) -> Result<Vec<u8>> {
        let start = usize::try_from(blob.offset).unwrap_or(usize::MAX);
        let stored = self
            .plain
            .get(start..start.saturating_add(blob.length as usize))
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "blob {} lies outside its pack",
                    hex::encode(blob.id)
                ))
            })?;
        decode_blob(blob, stored, dedup).map(std::borrow::Cow::into_owned)
    }
}

/// A blob's chunk from its stored bytes (`stored`, exactly the blob's `length`):
/// decompressed and its length checked; with `dedup`, its id checked too. A `none` blob is
/// borrowed, not copied.
pub(crate) fn decode_blob<'a>(
    blob: &BlobEntry,
    stored: &'a [u8],
    dedup: Option<&DedupKey>,
) -> Result<std::borrow::Cow<'a, [u8]>> {
    let raw = match blob.codec {
        BlobCodec::None => std::borrow::Cow::Borrowed(stored),
        BlobCodec::Zstd => {
            let mut out = Vec::with_capacity(blob.raw as usize);
            zstd::stream::read::Decoder::with_buffer(stored)
                .and_then(|d| d.take(u64::from(blob.raw) + 1).read_to_end(&mut out))
                .map_err(|e| {
                    Error::corrupt(format!("blob {} does not decompress", hex::encode(blob.id)))
                        .with_source(e)
                })?;
            std::borrow::Cow::Owned(out)
        }
    };
    if raw.len() != blob.raw as usize {
        return Err(Error::corrupt(format!(
            "blob {} is {} bytes, its index says {}",
            hex::encode(blob.id),
            raw.len(),
            blob.raw
        )));
    }
    if let Some(key) = dedup {
        if key.chunk_id(&raw) != blob.id {
            return Err(Error::corrupt(format!(
                "chunk {} does not match its id: the pack holds other content",
                hex::encode(blob.id)
            )));
        }
    }
    Ok(raw)
}

/// Where a chunk lies: pack number and blob number in a [`Catalog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Index into [`Catalog::packs`].
    pub pack: u32,
    /// Index into that pack's blobs.
    pub blob: u32,
}

/// Every committed pack's index, and every chunk's location.
///
/// Memory: the indexes (about 56 bytes per blob, ids held as bytes) and a sorted table of
/// 40 bytes per distinct chunk (id, pack, blob), searched by bisection.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The indexes.
    pub packs: Vec<PackIndex>,
    /// (chunk id, location), sorted by id; the first pack listed wins when a chunk is in two.
    chunks: Vec<(ChunkId, Location)>,
}

impl Catalog {
    /// Read every index under `files/index/`.
    pub async fn load(repo: &Repository) -> Result<Catalog> {
        Catalog::load_where(repo, |_| true).await
    }

    /// Read every index, keeping only the packs that hold one of `chunks` (all indexes are
    /// still read and checked): what one file needs, in memory that does not grow with the
    /// repository.
    pub async fn load_holding(repo: &Repository, chunks: &[ChunkId]) -> Result<Catalog> {
        let wanted: std::collections::HashSet<&ChunkId> = chunks.iter().collect();
        Catalog::load_where(repo, |index| {
            index.blobs.iter().any(|b| wanted.contains(&b.id))
        })
        .await
    }

    async fn load_where(
        repo: &Repository,
        mut keep: impl FnMut(&PackIndex) -> bool,
    ) -> Result<Catalog> {
        let listed = repo.storage().list(INDEX_PREFIX).await?;
        let storage = repo.storage().clone();
        let mut indexes = futures::stream::iter(listed)
            .map(|o| {
                let storage = storage.clone();
                async move {
                    let bytes = storage.get_bytes(&o.path).await?;
                    PackIndex::from_json(&bytes).map_err(|e| e.with_context("object", &o.path))
                }
            })
            .buffered(16);
        let mut catalog = Catalog::default();
        while let Some(index) = indexes.try_next().await? {
            if keep(&index) {
                catalog.push(index);
            }
        }
        catalog.sort();
        Ok(catalog)
    }

    /// Add a pack that was just written.
    pub fn add(&mut self, index: PackIndex) {
        self.push(index);
        self.sort();
    }

    fn push(&mut self, index: PackIndex) {
        let pack = self.packs.len() as u32;
        self.chunks
            .extend(index.blobs.iter().enumerate().map(|(n, b)| {
                (
                    b.id,
                    Location {
                        pack,
                        blob: n as u32,
                    },
                )
            }));
        self.packs.push(index);
    }

    /// Sort by id, keeping the first location of a chunk stored twice.
    fn sort(&mut self) {
        self.chunks
            .sort_by(|a, b| a.0.cmp(&b.0).then(a.1.pack.cmp(&b.1.pack)));
        self.chunks.dedup_by(|later, first| later.0 == first.0);
        self.chunks.shrink_to_fit();
    }

    /// Where chunk `id` lies.
    pub fn locate(&self, id: &ChunkId) -> Option<Location> {
        self.chunks
            .binary_search_by(|(k, _)| k.cmp(id))
            .ok()
            .map(|n| self.chunks[n].1)
    }

    /// Whether some pack holds chunk `id`.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.locate(id).is_some()
    }

    /// Distinct chunks indexed.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether no chunk is indexed.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The index and blob entry of a chunk.
    pub fn find(&self, id: &ChunkId) -> Option<(&PackIndex, &BlobEntry)> {
        let at = self.locate(id)?;
        let pack = &self.packs[at.pack as usize];
        Some((pack, &pack.blobs[at.blob as usize]))
    }
}
