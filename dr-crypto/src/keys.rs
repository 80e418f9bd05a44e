//! Master keys, passphrases and key files.

use std::fmt;
use std::num::NonZeroU32;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dr_core::{Error, ErrorKind, Result};
use ring::{hmac, pbkdf2};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::cipher::KEY_BYTES;
use crate::key_file::{read_secret_file, write_secret_file, KeyText, KEY_FILE_PREFIX};
use crate::random::fill_random;

/// The only key-derivation function [`KdfParams`] names today.
pub const KDF_PBKDF2_HMAC_SHA256: &str = "pbkdf2-hmac-sha256";

/// PBKDF2 iterations [`KdfParams::generate`] chooses (OWASP 2023 for PBKDF2-HMAC-SHA256).
pub const DEFAULT_KDF_ITERATIONS: u32 = 600_000;

const KEY_ID_MESSAGE: &[u8] = b"dr key id v1";
const KDF_SALT_BYTES: usize = 16;
const KDF_MIN_SALT_BYTES: usize = 16;

/// A 256-bit symmetric master key: the key a repository's data keys are wrapped for.
///
/// The bytes live on the heap, are wiped when the key is dropped, and never appear in
/// `Debug` output or errors; `Debug` shows only the public [`key_id`](MasterKey::key_id).
/// `Clone` makes a second, independently wiped copy; the type is deliberately not `Copy`.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Box<[u8; KEY_BYTES]>,
    id: String,
}

impl MasterKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> Result<MasterKey> {
        let mut bytes = Box::new([0u8; KEY_BYTES]);
        fill_random(&mut bytes[..])?;
        Ok(MasterKey::from_boxed(bytes))
    }

    /// The key a passphrase gives under `kdf` (PBKDF2-HMAC-SHA256 today). The same
    /// passphrase and parameters always give the same key. Slow on purpose: about half a
    /// second with the default 600,000 iterations.
    pub fn from_passphrase(passphrase: &Passphrase, kdf: &KdfParams) -> Result<MasterKey> {
        if kdf.algorithm != KDF_PBKDF2_HMAC_SHA256 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "unknown key-derivation function {:?}: this dr knows \"{KDF_PBKDF2_HMAC_SHA256}\"",
                    kdf.algorithm
                ),
            ));
        }
        let iterations = NonZeroU32::new(kdf.iterations).ok_or_else(|| {
            Error::invalid("key-derivation parameters have 0 iterations; at least 1 is required")
        })?;
        let salt = hex::decode(&kdf.salt).map_err(|e| {
            Error::invalid("key-derivation salt is not valid hexadecimal").with_source(e)
        })?;
        if salt.len() < KDF_MIN_SALT_BYTES {
            return Err(Error::invalid(format!(
                "key-derivation salt has {} bytes; at least {KDF_MIN_SALT_BYTES} are required",
                salt.len()
            )));
        }
        if passphrase.0.is_empty() {
            return Err(Error::invalid("the passphrase is empty"));
        }
        let mut bytes = Box::new([0u8; KEY_BYTES]);
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            passphrase.0.as_bytes(),
            &mut bytes[..],
        );
        Ok(MasterKey::from_boxed(bytes))
    }

    /// The key's public id: 16 lowercase hex digits, the first 8 bytes of
    /// HMAC-SHA256(key, "dr key id v1"). Stable across versions; safe to print and store.
    pub fn key_id(&self) -> String {
        self.id.clone()
    }

    /// The key as the text of a key file: a comment line naming the key id, then
    /// `DR-KEY-V1-` and the 32 bytes in unpadded base64url. See FORMAT.md.
    pub fn to_key_file(&self) -> String {
        let encoded = Zeroizing::new(URL_SAFE_NO_PAD.encode(&self.bytes[..]));
        format!(
            "# dr master key id {}: anyone holding this file can read the backups it protects\n\
             {KEY_FILE_PREFIX}{}\n",
            self.id, *encoded
        )
    }

    /// Parse the text of a key file (see [`to_key_file`](MasterKey::to_key_file)).
    ///
    /// Blank lines and lines starting with `#` are ignored, except that a comment of the form
    /// `# dr master key id <16 hex digits>` is checked against the key, so that a corrupted
    /// key line is reported here instead of as a wrong key later. Errors are
    /// [`ErrorKind::InvalidInput`] and never repeat the key text.
    pub fn from_key_file(text: &str) -> Result<MasterKey> {
        let parsed = KeyText::parse(text)?;
        let encoded = parsed.line.strip_prefix(KEY_FILE_PREFIX).ok_or_else(|| {
            Error::invalid(format!(
                "not a dr key file: the key line does not start with {KEY_FILE_PREFIX}"
            ))
        })?;
        let key = MasterKey::from_encoded(encoded)?;
        parsed.check_id(&key.id)?;
        Ok(key)
    }

    /// Decode the part after [`KEY_FILE_PREFIX`] of a key line.
    pub(crate) fn from_encoded(encoded: &str) -> Result<MasterKey> {
        let decoded = Zeroizing::new(URL_SAFE_NO_PAD.decode(encoded).map_err(|_| {
            Error::invalid(
                "the key line of the key file is damaged: it is not valid unpadded base64url",
            )
        })?);
        if decoded.len() != KEY_BYTES {
            return Err(Error::invalid(format!(
                "the key line of the key file is damaged: it holds {} bytes instead of {KEY_BYTES}",
                decoded.len()
            )));
        }
        let mut bytes = Box::new([0u8; KEY_BYTES]);
        bytes.copy_from_slice(&decoded);
        Ok(MasterKey::from_boxed(bytes))
    }

    /// The raw key bytes, for key derivation inside this crate.
    pub(crate) fn secret(&self) -> &[u8; KEY_BYTES] {
        &self.bytes
    }

    /// A key from bytes chosen by the caller: only for known-answer test vectors.
    #[cfg(test)]
    pub(crate) fn from_bytes_for_test_vectors(bytes: [u8; KEY_BYTES]) -> MasterKey {
        MasterKey::from_boxed(Box::new(bytes))
    }

    fn from_boxed(bytes: Box<[u8; KEY_BYTES]>) -> MasterKey {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &bytes[..]),
            KEY_ID_MESSAGE,
        );
        let id = hex::encode(&tag.as_ref()[..8]);
        MasterKey { bytes, id }
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

/// Write `key` to a new key file at `path`, readable only by its owner (mode 0600 on Unix).
///
/// Never overwrites: if `path` exists the call fails with [`ErrorKind::AlreadyExists`], since
/// replacing a key file can make every backup it protects unreadable.
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<()> {
    write_secret_file(path, &Zeroizing::new(key.to_key_file()))
}

/// Read a key file written by [`write_key_file`] (or by hand in the same format).
///
/// Fails with [`ErrorKind::NotFound`] if there is no file at `path`, and with
/// [`ErrorKind::InvalidInput`] if its contents are not a valid key; both name the path.
pub fn read_key_file(path: &Path) -> Result<MasterKey> {
    read_secret_file(path, MasterKey::from_key_file)
}

/// A passphrase that a master key is derived from (see [`MasterKey::from_passphrase`]).
///
/// Wiped on drop; `Debug` prints `Passphrase(***)`. The bytes used are the UTF-8 of the
/// string exactly as given: no trimming, no Unicode normalisation (strip the newline that a
/// terminal or file adds before calling [`Passphrase::new`]).
pub struct Passphrase(String);

impl Passphrase {
    /// Take ownership of `passphrase`; it is wiped when the `Passphrase` is dropped.
    pub fn new(passphrase: String) -> Passphrase {
        Passphrase(passphrase)
    }
}

impl From<String> for Passphrase {
    fn from(passphrase: String) -> Passphrase {
        Passphrase::new(passphrase)
    }
}

impl Drop for Passphrase {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(***)")
    }
}

/// How a passphrase becomes a master key. Public: stored next to the backups (in the
/// repository configuration) so that the same passphrase gives the same key later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// The function: `pbkdf2-hmac-sha256`.
    pub algorithm: String,
    /// PBKDF2 iterations. [`KdfParams::generate`] uses 600,000; any value >= 1 is accepted
    /// when deriving (tests use small counts), so choose with care.
    pub iterations: u32,
    /// The salt, lowercase hex of at least 16 bytes; PBKDF2 uses the decoded bytes.
    pub salt: String,
}

impl KdfParams {
    /// Fresh parameters: PBKDF2-HMAC-SHA256, 600,000 iterations, a random 16-byte salt.
    pub fn generate() -> Result<KdfParams> {
        let mut salt = [0u8; KDF_SALT_BYTES];
        fill_random(&mut salt)?;
        Ok(KdfParams {
            algorithm: KDF_PBKDF2_HMAC_SHA256.to_owned(),
            iterations: DEFAULT_KDF_ITERATIONS,
            salt: hex::encode(salt),
        })
    }
}
