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
use super::sorted_file::{SortedRecords, SortedRecordsBuilder};

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
        if at > u64::from(u32::MAX) {
            return Err(bad("the pack's plaintext is larger than 4 GiB".into()));
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
        OpenPack::from_stored(index, &stored, decryptor, index.plain_len())
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

    /// Check and decrypt stored pack bytes, whose plaintext must be `plain_len` bytes (the
    /// sum of the blob lengths of its index).
    pub fn from_stored(
        index: &PackIndex,
        stored: &[u8],
        decryptor: &dyn Decryptor,
        plain_len: u64,
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
        if plain.len() as u64 != plain_len {
            return Err(Error::corrupt(format!(
                "pack '{path}' holds {} bytes, its index lists {plain_len}",
                plain.len(),
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

/// Where a chunk lies: its pack (a number in a [`Catalog`]) and its blob there, in 16
/// bytes (a [`BlobEntry`] without the id, and the codec folded into the length's top bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Index into [`Catalog::packs`].
    pub pack: u32,
    /// Where the blob starts in the pack's plaintext.
    offset: u32,
    /// The blob's stored length; the top bit is set for [`BlobCodec::Zstd`].
    length_codec: u32,
    /// The chunk's length once decompressed.
    pub raw: u32,
}

const ZSTD_BIT: u32 = 1 << 31;

impl Location {
    fn of(pack: u32, blob: &BlobEntry) -> Location {
        let codec = match blob.codec {
            BlobCodec::None => 0,
            BlobCodec::Zstd => ZSTD_BIT,
        };
        Location {
            pack,
            offset: u32::try_from(blob.offset).expect("checked when the index was read"),
            length_codec: blob.length | codec,
            raw: blob.raw,
        }
    }

    /// The chunk table's record of chunk `id` at this location.
    fn record(&self, id: &ChunkId) -> [u8; LOCATION_RECORD] {
        let mut r = [0u8; LOCATION_RECORD];
        r[..32].copy_from_slice(id);
        r[32..36].copy_from_slice(&self.pack.to_be_bytes());
        r[36..40].copy_from_slice(&self.offset.to_be_bytes());
        r[40..44].copy_from_slice(&self.length_codec.to_be_bytes());
        r[44..48].copy_from_slice(&self.raw.to_be_bytes());
        r
    }

    /// The location a chunk table record holds.
    fn from_record(r: &[u8]) -> Location {
        let word = |at: usize| u32::from_be_bytes(r[at..at + 4].try_into().expect("4 bytes"));
        Location {
            pack: word(32),
            offset: word(36),
            length_codec: word(40),
            raw: word(44),
        }
    }

    /// Where the blob starts in its pack's plaintext.
    pub fn offset(&self) -> u64 {
        u64::from(self.offset)
    }

    /// The blob entry of chunk `id` at this location.
    pub fn blob(&self, id: &ChunkId) -> BlobEntry {
        BlobEntry {
            id: *id,
            offset: u64::from(self.offset),
            length: self.length_codec & !ZSTD_BIT,
            raw: self.raw,
            codec: if self.length_codec & ZSTD_BIT != 0 {
                BlobCodec::Zstd
            } else {
                BlobCodec::None
            },
        }
    }
}

/// Every committed pack's index, and every chunk's location.
///
/// Memory: each pack's index, and half a byte per distinct chunk: the chunk table (id and
/// [`Location`], 48 bytes per chunk) is a sorted temporary file, looked up with one
/// positioned read (`sorted_file.rs`); a table of at most 32,768 chunks (1.5 MiB) stays in
/// memory. [`Catalog::load`] keeps the indexes whole (verify and
/// prune walk their blobs); [`Catalog::load_locations`], what backups and restores use,
/// keeps them without their blob lists: the table says all a reader needs.
#[derive(Debug)]
pub struct Catalog {
    /// The indexes (without their blobs when loaded by [`Catalog::load_locations`]).
    pub packs: Vec<PackIndex>,
    /// Bytes of each pack's plaintext.
    plain_lens: Vec<u64>,
    /// (chunk id, location) records; the first pack listed wins when a chunk is in two.
    chunks: SortedRecords,
}

impl Default for Catalog {
    fn default() -> Catalog {
        Catalog {
            packs: Vec::new(),
            plain_lens: Vec::new(),
            chunks: SortedRecords::empty(LOCATION_RECORD),
        }
    }
}

/// Bytes of a chunk table record: the id, then the location (pack and offset big-endian,
/// so that records of one id sort by pack, then offset: the first pack listed wins).
const LOCATION_RECORD: usize = 48;

/// Index downloads in flight while a catalog loads: each holds an index's JSON and its
/// parsed blobs (about 2 MB for a full pack of small files).
const INDEXES_IN_FLIGHT: usize = 4;

impl Catalog {
    /// Read every index under `files/index/`, kept whole.
    pub async fn load(repo: &Repository) -> Result<Catalog> {
        Catalog::load_where(repo, |_| true, true).await
    }

    /// Read every index under `files/index/`, keeping only where each chunk lies.
    pub async fn load_locations(repo: &Repository) -> Result<Catalog> {
        Catalog::load_where(repo, |_| true, false).await
    }

    /// Read every index, keeping only the packs that hold one of `chunks` (all indexes are
    /// still read and checked): what one file needs, in memory that does not grow with the
    /// repository.
    pub async fn load_holding(repo: &Repository, chunks: &[ChunkId]) -> Result<Catalog> {
        let wanted: std::collections::HashSet<&ChunkId> = chunks.iter().collect();
        Catalog::load_where(
            repo,
            |index| index.blobs.iter().any(|b| wanted.contains(&b.id)),
            false,
        )
        .await
    }

    async fn load_where(
        repo: &Repository,
        mut keep: impl FnMut(&PackIndex) -> bool,
        whole: bool,
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
            .buffered(INDEXES_IN_FLIGHT);
        let mut builder = CatalogBuilder::default();
        while let Some(mut index) = indexes.try_next().await? {
            if keep(&index) {
                builder.push_locations(&index)?;
                if !whole {
                    index.blobs = Vec::new();
                }
                builder.packs.push(index);
            }
        }
        builder.finish()
    }

    /// Where chunk `id` lies.
    pub fn locate(&self, id: &ChunkId) -> Result<Option<Location>> {
        Ok(self.chunks.find(id)?.map(|r| Location::from_record(&r)))
    }

    /// Whether some pack holds chunk `id`.
    pub fn contains(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.chunks.find(id)?.is_some())
    }

    /// Whether some pack holds each of `chunks`.
    pub fn holds_all(&self, chunks: &[ChunkId]) -> Result<bool> {
        for id in chunks {
            if !self.contains(id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Distinct chunks indexed.
    pub fn len(&self) -> u64 {
        self.chunks.len()
    }

    /// Whether no chunk is indexed.
    pub fn is_empty(&self) -> bool {
        self.chunks.len() == 0
    }

    /// Bytes of pack `n`'s plaintext.
    pub fn plain_len(&self, n: u32) -> u64 {
        self.plain_lens[n as usize]
    }

    /// The index and blob entry of a chunk.
    pub fn find(&self, id: &ChunkId) -> Result<Option<(&PackIndex, BlobEntry)>> {
        Ok(self
            .locate(id)?
            .map(|at| (&self.packs[at.pack as usize], at.blob(id))))
    }
}

/// A [`Catalog`] as its indexes arrive.
#[derive(Default)]
struct CatalogBuilder {
    packs: Vec<PackIndex>,
    plain_lens: Vec<u64>,
    chunks: Option<SortedRecordsBuilder>,
}

impl CatalogBuilder {
    /// The locations of `index`'s chunks, as pack number `packs.len()` (pushed next).
    fn push_locations(&mut self, index: &PackIndex) -> Result<()> {
        let pack = self.packs.len() as u32;
        let chunks = self
            .chunks
            .get_or_insert_with(|| SortedRecordsBuilder::new(LOCATION_RECORD));
        for b in &index.blobs {
            chunks.push(&Location::of(pack, b).record(&b.id))?;
        }
        self.plain_lens.push(index.plain_len());
        Ok(())
    }

    fn finish(self) -> Result<Catalog> {
        Ok(Catalog {
            packs: self.packs,
            plain_lens: self.plain_lens,
            chunks: match self.chunks {
                Some(b) => b.finish()?,
                None => SortedRecords::empty(LOCATION_RECORD),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack index of `blobs` (id byte, stored length, raw length, zstd?) back to back.
    fn index(name: u8, blobs: &[(u8, u32, u32, bool)]) -> PackIndex {
        let mut at = 0u64;
        let blobs = blobs
            .iter()
            .map(|&(id, length, raw, zstd)| {
                let entry = BlobEntry {
                    id: [id; 32],
                    offset: at,
                    length,
                    raw,
                    codec: if zstd {
                        BlobCodec::Zstd
                    } else {
                        BlobCodec::None
                    },
                };
                at += u64::from(length);
                entry
            })
            .collect();
        PackIndex {
            format: 1,
            pack: format!("{name:032x}"),
            size: at + 16,
            sha256: "00".repeat(32),
            dedup_key: "k".into(),
            encryption: EncryptionInfo::none(),
            blobs,
        }
    }

    #[test]
    fn the_compact_catalog_finds_every_chunk_where_the_whole_indexes_say() {
        // Chunk 7 is in packs 0 and 2: the first pack listed wins, as before.
        let packs = [
            index(
                1,
                &[
                    (9, 100, 300, true),
                    (7, 50, 50, false),
                    (3, 8 << 20, 8 << 20, false),
                ],
            ),
            index(
                2,
                &[(1, 10, 40, true), (200, (16 << 20) + 1000, 16 << 20, true)],
            ),
            index(3, &[(5, 1, 1, false), (7, 20, 50, true)]),
        ];
        let mut builder = CatalogBuilder::default();
        for p in &packs {
            builder.push_locations(p).unwrap();
            let mut kept = p.clone();
            kept.blobs = Vec::new();
            builder.packs.push(kept);
        }
        let compact = builder.finish().unwrap();
        assert_eq!(compact.len(), 6);
        for (n, p) in packs.iter().enumerate() {
            assert_eq!(compact.plain_len(n as u32), p.plain_len());
            for b in &p.blobs {
                let (index, found) = compact.find(&b.id).unwrap().expect("every chunk is found");
                if b.id == [7; 32] && n == 2 {
                    assert_eq!(index.pack, packs[0].pack, "the first pack listed wins");
                    continue;
                }
                assert_eq!(index.pack, p.pack);
                assert_eq!(&found, b, "offset, lengths and codec survive the packing");
            }
        }
        for absent in [0u8, 2, 8, 255] {
            assert!(!compact.contains(&[absent; 32]).unwrap());
        }
        assert!(Catalog::default().locate(&[7; 32]).unwrap().is_none());
        assert!(Catalog::default().is_empty());
    }

    #[test]
    fn the_first_pack_listed_wins_across_spilled_runs_too() {
        // Pack numbers above 255 and offsets above 255 must compare as numbers (big-endian
        // in the record), in whichever run the records land.
        let mut builder = SortedRecordsBuilder::with_run(LOCATION_RECORD, 3);
        let blob = |offset: u64| BlobEntry {
            id: [9; 32],
            offset,
            length: 10,
            raw: 10,
            codec: BlobCodec::None,
        };
        for (pack, offset) in [(300u32, 5u64), (256, 70_000), (2, 1), (256, 3), (1000, 0)] {
            builder
                .push(&Location::of(pack, &blob(offset)).record(&[9; 32]))
                .unwrap();
        }
        let table = builder.finish().unwrap();
        assert_eq!(table.len(), 1);
        let at = Location::from_record(&table.find(&[9; 32]).unwrap().unwrap());
        assert_eq!((at.pack, at.offset()), (2, 1));
    }

    #[test]
    fn an_index_whose_pack_exceeds_4_gib_is_refused() {
        let blobs: Vec<_> = (0..257u32)
            .map(|n| (n as u8, (16 << 20) + 1000, 16 << 20, true))
            .collect();
        let json = serde_json::to_vec(&index(1, &blobs)).unwrap();
        let e = PackIndex::from_json(&json).unwrap_err();
        assert!(e.message().contains("larger than 4 GiB"), "{e}");
    }
}
