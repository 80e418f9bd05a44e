//! Reading chunks back for a restore: each pack downloaded, checked and decrypted once
//! while the files that need it are written, a few packs kept at a time.

use std::collections::VecDeque;
use std::sync::Arc;

use dr_core::{Decryptor, Error, ErrorKind, Repository, Result};

use super::key::ChunkId;
use super::pack::{Catalog, OpenPack};
use super::restore::pack_unreadable;
use super::tree::TreeEntry;

/// Packs decrypted at a time (16 MiB each): files are restored in the order they were backed
/// up, so their chunks mostly come pack after pack.
const PACK_CACHE: usize = 4;

/// The chunks of a repository's packs, by id.
pub(crate) struct PackReader {
    repo: Repository,
    decryptor: Arc<dyn Decryptor>,
    catalog: Catalog,
    cache: VecDeque<(u32, Arc<OpenPack>)>,
}

impl PackReader {
    pub(crate) fn new(
        repo: Repository,
        decryptor: Arc<dyn Decryptor>,
        catalog: Catalog,
    ) -> PackReader {
        PackReader {
            repo,
            decryptor,
            catalog,
            cache: VecDeque::new(),
        }
    }

    /// The chunk `id`, decompressed and its length checked (the caller checks the whole
    /// file's BLAKE3). A pack that cannot be read fails with the files of `all` that need it.
    pub(crate) async fn chunk(&mut self, id: &ChunkId, all: &[TreeEntry]) -> Result<Vec<u8>> {
        let at = self
            .catalog
            .locate(id)?
            .ok_or_else(|| Error::corrupt(format!("chunk {} is in no pack", hex::encode(id))))?;
        let pack = self.pack(at.pack, all).await?;
        let index = &self.catalog.packs[at.pack as usize];
        pack.chunk(&at.blob(id), None)
            .map_err(|e| e.with_context("pack", &index.pack))
    }

    async fn pack(&mut self, n: u32, all: &[TreeEntry]) -> Result<Arc<OpenPack>> {
        if let Some((_, p)) = self.cache.iter().find(|(k, _)| *k == n) {
            return Ok(p.clone());
        }
        let index = self.catalog.packs[n as usize].clone();
        let opened = self
            .open(&index, self.catalog.plain_len(n))
            .await
            .map_err(|e| pack_unreadable(&e, all, &self.catalog, n))?;
        let opened = Arc::new(opened);
        if self.cache.len() == PACK_CACHE {
            self.cache.pop_front();
        }
        self.cache.push_back((n, opened.clone()));
        Ok(opened)
    }

    /// Download the pack, then check and decrypt it off the async threads.
    async fn open(&self, index: &super::pack::PackIndex, plain_len: u64) -> Result<OpenPack> {
        let stored = OpenPack::download(&self.repo, index).await?;
        let decryptor = self.decryptor.clone();
        let index = index.clone();
        tokio::task::spawn_blocking(move || {
            OpenPack::from_stored(&index, &stored, &*decryptor, plain_len)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Other, "decrypting a pack failed").with_source(e))?
    }
}
