//! Reading one pack front to back as it downloads, handing over the blobs a restore wants.
//!
//! The whole pack is never held: stored bytes go through SHA-256 and the decryptor (which
//! releases only authenticated bytes) as they arrive, and plaintext is kept only from the
//! next wanted blob on, so a pack in flight costs about one blob and one read buffer instead
//! of its 16–24 MiB twice over. The size and SHA-256 of the stored object are checked when
//! it ends; anything written from it before then went to temporary files that are moved
//! into place only after their own size and BLAKE3 match, and the restore fails as a whole
//! if the pack does.

use futures::StreamExt;

use dr_core::{Decryptor, Error, ErrorKind, Repository, Result};

use super::pack::{decode_blob, BlobEntry, PackIndex};

/// Stream the pack of `index` (whose plaintext is `plain_len` bytes), calling `each(key,
/// chunk)` for every `(key, blob)` of `wanted` (by ascending offset; a repeated key is called
/// once), each chunk decompressed and its length checked against the blob entry. `plain`
/// holds the plaintext on the way (a caller reading many packs passes the same buffer, so
/// the allocator does not see a new one per pack).
#[allow(clippy::too_many_arguments)]
pub(crate) fn for_each_blob(
    repo: &Repository,
    runtime: &tokio::runtime::Handle,
    index: &PackIndex,
    plain_len: u64,
    decryptor: &dyn Decryptor,
    plain: &mut Vec<u8>,
    wanted: impl IntoIterator<Item = (u32, BlobEntry)>,
    mut each: impl FnMut(u32, &[u8]) -> Result<()>,
) -> Result<()> {
    let path = index.pack_path();
    let mut stream = runtime
        .block_on(repo.storage().get(&path, None))
        .map_err(|e| missing_or(e, &path))?;
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut opener = decryptor.decrypt_stream(&index.encryption)?;
    let mut wanted = wanted.into_iter().peekable();
    // Plaintext from pack offset `start` on; everything before it was handed over or skipped.
    plain.clear();
    let mut start = 0u64;
    let mut stored = 0u64;
    let mut ended = false;
    let mut last = None;
    loop {
        // Hand over every wanted blob the plaintext holds whole.
        while let Some((n, blob)) = wanted.peek() {
            let n = *n;
            if last == Some(n) || blob.offset < start {
                wanted.next(); // a repeat, already handed over
                continue;
            }
            let from = (blob.offset - start) as usize;
            let to = from + blob.length as usize;
            if to > plain.len() {
                break;
            }
            let chunk = decode_blob(blob, &plain[from..to], None)
                .map_err(|e| e.with_context("pack", &path))?;
            each(n, &chunk)?;
            last = Some(n);
            wanted.next();
        }
        // Keep only what the next wanted blob needs.
        let keep_from = match wanted.peek() {
            Some((_, blob)) => blob.offset,
            None => start + plain.len() as u64,
        };
        let drop = usize::try_from(keep_from.saturating_sub(start))
            .unwrap_or(usize::MAX)
            .min(plain.len());
        plain.drain(..drop);
        start += drop as u64;
        if ended {
            break;
        }
        match runtime.block_on(stream.next()) {
            Some(bytes) => {
                let bytes = bytes.map_err(|e| missing_or(e, &path))?;
                stored += bytes.len() as u64;
                if stored > index.size {
                    return Err(Error::corrupt(format!(
                        "pack '{path}' is larger than its index says ({} bytes)",
                        index.size
                    )));
                }
                sha.update(&bytes);
                opener
                    .update(&bytes, plain)
                    .map_err(|e| e.with_context("pack", &path))?;
            }
            None => {
                if stored != index.size {
                    return Err(Error::corrupt(format!(
                        "pack '{path}' is {stored} bytes, its index says {}",
                        index.size
                    )));
                }
                if hex::encode(sha.clone().finish()) != index.sha256 {
                    return Err(Error::corrupt(format!(
                        "pack '{path}' fails its SHA-256 check: the stored bytes were modified"
                    )));
                }
                opener
                    .finish(plain)
                    .map_err(|e| e.with_context("pack", &path))?;
                ended = true;
            }
        }
    }
    let total = start + plain.len() as u64;
    if wanted.peek().is_some() || total != plain_len {
        return Err(Error::corrupt(format!(
            "pack '{path}' holds {total} bytes, its index lists {plain_len}"
        )));
    }
    Ok(())
}

/// A missing pack is damage to the repository, not a plain "not found".
fn missing_or(e: Error, path: &str) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::corrupt(format!("pack '{path}' is missing from storage"))
    } else {
        e.with_context("pack", path)
    }
}
