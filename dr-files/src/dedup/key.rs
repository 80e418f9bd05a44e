//! [`DedupKey`]: the repository's deduplication secret.
//!
//! Chunk ids are a keyed MAC of the chunk's content, and chunk boundaries come from a gear
//! table seeded from the same secret, so someone who reads the bucket (pack indexes, sizes)
//! but lacks this key cannot confirm a guess of a file's content. The key cannot decrypt
//! anything: a write-only host (one holding only public recipients) holds it to deduplicate
//! and still cannot read a single backed-up byte. See FORMAT.md, "Deduplicated file backups".

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use dr_core::{
    Decryptor, EncryptionInfo, Encryptor, Error, ErrorKind, PutOptions, Repository, Result,
    StorageExt,
};

/// Where the repository keeps the dedup key, encrypted for the repository's keys.
pub const DEDUP_KEY_PATH: &str = "files/dedup-key.json";
/// The first characters of a dedup key file's key line.
pub const DEDUP_KEY_FILE_PREFIX: &str = "DR-DEDUP-V1-";

/// A chunk id: keyed BLAKE3 of the chunk's plaintext, 32 bytes.
pub type ChunkId = [u8; 32];

/// The deduplication secret: 32 random bytes. Never printed; wiped on drop.
#[derive(Clone)]
pub struct DedupKey {
    secret: Zeroizing<[u8; 32]>,
    mac_key: Zeroizing<[u8; 32]>,
    gear_seed: u64,
}

impl fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DedupKey({})", self.key_id())
    }
}

impl DedupKey {
    /// A key from its 32 secret bytes.
    pub fn from_bytes(secret: [u8; 32]) -> DedupKey {
        let mac_key = Zeroizing::new(blake3::derive_key("dr-files v1 chunk id", &secret));
        let seed = Zeroizing::new(blake3::derive_key("dr-files v1 gear seed", &secret));
        let gear_seed = u64::from_be_bytes(seed[..8].try_into().expect("8 bytes"));
        DedupKey {
            secret: Zeroizing::new(secret),
            mac_key,
            gear_seed,
        }
    }

    /// A fresh random key.
    pub fn generate() -> Result<DedupKey> {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::new(ErrorKind::Other, "the system random generator failed"))?;
        Ok(DedupKey::from_bytes(bytes))
    }

    /// The public id: 16 hex digits that say which key a snapshot was made with.
    pub fn key_id(&self) -> String {
        hex::encode(&blake3::derive_key("dr-files v1 key id", &*self.secret)[..8])
    }

    /// The id of a chunk with this content.
    pub fn chunk_id(&self, content: &[u8]) -> ChunkId {
        *blake3::keyed_hash(&self.mac_key, content).as_bytes()
    }

    /// The seed XORed into FastCDC's gear table (never 0, which would mean "unkeyed").
    pub fn gear_seed(&self) -> u64 {
        self.gear_seed.max(1)
    }

    /// The text of a dedup key file (mode 0600), for write-only hosts.
    pub fn to_file_text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "# dr dedup key id {}: lets a host deduplicate file backups; it decrypts nothing\n{}{}\n",
            self.key_id(),
            DEDUP_KEY_FILE_PREFIX,
            hex::encode(self.secret.as_slice())
        ))
    }

    /// Parse a dedup key file (the rules of FORMAT.md's "Key file": comments, one key line,
    /// a `# dr dedup key id` comment that must match).
    pub fn from_file_text(text: &str) -> Result<DedupKey> {
        let mut key_lines = Vec::new();
        let mut expected_id = None;
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("# dr dedup key id ") {
                expected_id = rest.get(..16).map(str::to_owned);
            } else if !line.is_empty() && !line.starts_with('#') {
                key_lines.push(line);
            }
        }
        let [line] = key_lines[..] else {
            return Err(Error::invalid(
                "a dedup key file must have exactly one key line",
            ));
        };
        let body = line.strip_prefix(DEDUP_KEY_FILE_PREFIX).ok_or_else(|| {
            Error::invalid(format!(
                "a dedup key file's key line starts with {DEDUP_KEY_FILE_PREFIX}"
            ))
        })?;
        let mut secret = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(body, &mut *secret)
            .map_err(|_| Error::invalid("a dedup key file's key is not 64 hexadecimal digits"))?;
        let key = DedupKey::from_bytes(*secret);
        if let Some(id) = expected_id {
            if id != key.key_id() {
                return Err(Error::corrupt(
                    "the dedup key file is damaged: its key does not match its key id comment",
                ));
            }
        }
        Ok(key)
    }

    /// Read a dedup key file.
    pub fn read_file(path: &std::path::Path) -> Result<DedupKey> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Error::io("cannot read the dedup key file", e).with_context("file", path.display())
        })?);
        DedupKey::from_file_text(&text).map_err(|e| e.with_context("file", path.display()))
    }
}

/// `files/dedup-key.json`: the dedup key as a dr-aead-v1 stream for the repository's keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredDedupKey {
    format: u32,
    key_id: String,
    encryption: EncryptionInfo,
    /// Hex of the stored stream whose plaintext is the 32 secret bytes.
    sealed: String,
}

/// The repository's dedup key: read with `decryptor`, or created (encrypted with
/// `encryptor`, create-if-absent, so racing hosts agree on one) when the repository has
/// none yet. A write-only host passes no decryptor: it can create the first key, but reading
/// an existing one needs a key holder's export (`drctl files dedup-key`).
pub async fn load_or_create_dedup_key(
    repo: &Repository,
    encryptor: &dyn Encryptor,
    decryptor: Option<&dyn Decryptor>,
) -> Result<DedupKey> {
    if let Some(found) = load_dedup_key(repo, decryptor).await? {
        return Ok(found);
    }
    let key = DedupKey::generate()?;
    let (encryption, mut sealer) = encryptor.encrypt_stream()?;
    let mut sealed = Vec::new();
    sealer.update(&*key.secret, &mut sealed)?;
    sealer.finish(&mut sealed)?;
    let stored = StoredDedupKey {
        format: 1,
        key_id: key.key_id(),
        encryption,
        sealed: hex::encode(sealed),
    };
    let json = serde_json::to_vec_pretty(&stored).expect("serializes");
    match repo
        .storage()
        .put_if_absent(DEDUP_KEY_PATH, Bytes::from(json), PutOptions::default())
        .await
    {
        Ok(()) => Ok(key),
        // Another host created one first: use theirs.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => load_dedup_key(repo, decryptor)
            .await?
            .ok_or_else(|| Error::corrupt(format!("{DEDUP_KEY_PATH} vanished while read"))),
        Err(e) => Err(e),
    }
}

/// The repository's dedup key, if it has one. Without a decryptor an existing key cannot be
/// read: fails with [`ErrorKind::WrongKey`] saying how to give one.
pub async fn load_dedup_key(
    repo: &Repository,
    decryptor: Option<&dyn Decryptor>,
) -> Result<Option<DedupKey>> {
    let bytes = match repo.storage().get_bytes(DEDUP_KEY_PATH).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let stored: StoredDedupKey = serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(format!("{DEDUP_KEY_PATH} is malformed")).with_source(e))?;
    let Some(decryptor) = decryptor else {
        return Err(Error::new(
            ErrorKind::WrongKey,
            format!(
                "this repository's dedup key {} is encrypted for its keys and this host holds \
                 none: export it on a key holder with `drctl dedup-key --repo URL -o FILE` and pass \
                 the file with --dedup-key-file",
                stored.key_id
            ),
        ));
    };
    let sealed = hex::decode(&stored.sealed)
        .map_err(|_| Error::corrupt(format!("{DEDUP_KEY_PATH} has a malformed sealed key")))?;
    let mut opener = decryptor.decrypt_stream(&stored.encryption)?;
    let mut plain = Zeroizing::new(Vec::new());
    opener.update(&sealed, &mut plain)?;
    opener.finish(&mut plain)?;
    let secret: [u8; 32] = plain[..]
        .try_into()
        .map_err(|_| Error::corrupt(format!("{DEDUP_KEY_PATH} does not hold 32 bytes")))?;
    let key = DedupKey::from_bytes(secret);
    if key.key_id() != stored.key_id {
        return Err(Error::corrupt(format!(
            "{DEDUP_KEY_PATH} names key {} but holds key {}",
            stored.key_id,
            key.key_id()
        )));
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_detects_a_changed_digit() {
        let key = DedupKey::generate().unwrap();
        let text = key.to_file_text();
        let back = DedupKey::from_file_text(&text).unwrap();
        assert_eq!(back.key_id(), key.key_id());
        assert_eq!(back.chunk_id(b"x"), key.chunk_id(b"x"));
        let line = text.lines().nth(1).unwrap();
        let last = line.chars().last().unwrap();
        let changed = text.replace(
            line,
            &format!(
                "{}{}",
                &line[..line.len() - 1],
                if last == '0' { '1' } else { '0' }
            ),
        );
        assert_eq!(
            DedupKey::from_file_text(&changed).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn chunk_ids_depend_on_the_key() {
        let (a, b) = (DedupKey::generate().unwrap(), DedupKey::generate().unwrap());
        assert_ne!(a.chunk_id(b"same"), b.chunk_id(b"same"));
        assert_ne!(a.gear_seed(), b.gear_seed());
        assert!(!format!("{a:?}").contains(&hex::encode(a.secret.as_slice())));
    }
}
