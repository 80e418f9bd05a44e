//! Master keys, passphrases and key files.

use std::fmt;
use std::io::Write;
use std::num::NonZeroU32;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dr_core::{Error, ErrorKind, Result};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{hmac, pbkdf2};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Bytes in a master key (and in a data key).
pub const KEY_BYTES: usize = 32;

/// The prefix of the key line in a key file.
pub const KEY_FILE_PREFIX: &str = "DR-KEY-V1-";

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

/// The parts of a key or identity file that every kind shares: one non-comment line, and
/// the key id recorded in a `# dr … key id <16 hex digits>` comment, if any.
pub(crate) struct KeyText<'a> {
    pub(crate) line: &'a str,
    recorded_id: Option<String>,
}

impl<'a> KeyText<'a> {
    /// Lines are split on `\n` (a trailing `\r` is ignored) and trimmed; blank lines and
    /// `#` comments are skipped; exactly one other line must remain.
    pub(crate) fn parse(text: &'a str) -> Result<KeyText<'a>> {
        let mut line = None;
        let mut recorded_id = None;
        for l in text.lines() {
            let l = l.trim();
            if l.is_empty() {
                continue;
            }
            if let Some(comment) = l.strip_prefix('#') {
                let comment = comment.trim_start();
                let rest = comment
                    .strip_prefix("dr master key id ")
                    .or_else(|| comment.strip_prefix("dr identity key id "));
                if let Some(rest) = rest {
                    let id: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
                    if id.len() == 16 {
                        recorded_id = Some(id.to_ascii_lowercase());
                    }
                }
                continue;
            }
            if line.is_some() {
                return Err(Error::invalid(
                    "not a dr key file: it has more than one non-comment line",
                ));
            }
            line = Some(l);
        }
        let line = line.ok_or_else(|| {
            Error::invalid(format!(
                "not a dr key file: no line starting with {KEY_FILE_PREFIX} or {}",
                crate::x25519::IDENTITY_PREFIX
            ))
        })?;
        Ok(KeyText { line, recorded_id })
    }

    /// Fail if a key id was recorded in a comment and differs from `id`.
    pub(crate) fn check_id(&self, id: &str) -> Result<()> {
        match &self.recorded_id {
            Some(recorded) if recorded != id => Err(Error::invalid(format!(
                "the key file is damaged: its key line does not match the key id {recorded} \
                 recorded in its comment"
            ))),
            _ => Ok(()),
        }
    }
}

/// Write `key` to a new key file at `path`, readable only by its owner (mode 0600 on Unix).
///
/// Never overwrites: if `path` exists the call fails with [`ErrorKind::AlreadyExists`], since
/// replacing a key file can make every backup it protects unreadable.
pub fn write_key_file(path: &Path, key: &MasterKey) -> Result<()> {
    write_secret_file(path, &Zeroizing::new(key.to_key_file()))
}

/// Write `text` (a key or identity file) to a new file at `path`, mode 0600; never overwrites.
pub(crate) fn write_secret_file(path: &Path, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::new(
                ErrorKind::AlreadyExists,
                "refusing to overwrite an existing key file: move it away first if it is no \
                 longer needed",
            )
            .with_source(e)
        } else {
            Error::io("creating the key file", e)
        }
        .with_context("path", path.display())
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("writing the key file", e).with_context("path", path.display()))
}

/// Read a key file written by [`write_key_file`] (or by hand in the same format).
///
/// Fails with [`ErrorKind::NotFound`] if there is no file at `path`, and with
/// [`ErrorKind::InvalidInput`] if its contents are not a valid key; both name the path.
pub fn read_key_file(path: &Path) -> Result<MasterKey> {
    read_secret_file(path, MasterKey::from_key_file)
}

/// Read a small secret text file and parse it with `parse`; errors name the path.
pub(crate) fn read_secret_file<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        let kind = e.kind();
        let error = if kind == std::io::ErrorKind::NotFound {
            Error::new(ErrorKind::NotFound, "key file not found").with_source(e)
        } else {
            Error::io("reading the key file", e)
        };
        error.with_context("path", path.display())
    })?);
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        Error::invalid("not a dr key file: it is not UTF-8 text")
            .with_context("path", path.display())
    })?;
    parse(text).map_err(|e| e.with_context("path", path.display()))
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

/// Fill `buf` from the operating system's random number generator.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    SystemRandom::new().fill(buf).map_err(|_| {
        Error::new(
            ErrorKind::Other,
            "the operating system's random number generator failed",
        )
    })
}
