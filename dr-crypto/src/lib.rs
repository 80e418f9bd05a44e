//! dr's encryption: `dr-aead-v1`, a streaming chunked AEAD format on
//! [ring](https://docs.rs/ring), with envelope encryption of a fresh data key per stream.
//!
//! ```
//! use dr_core::{Decryptor, Encryptor, Transform};
//! use dr_crypto::{AeadDecryptor, AeadEncryptor, Cipher, MasterKey};
//!
//! # fn main() -> dr_core::Result<()> {
//! let key = MasterKey::generate()?;
//! let encryptor = AeadEncryptor::new(Cipher::Aes256Gcm, vec![key.clone()])?;
//!
//! // Encrypt: the info (scheme, cipher, wrapped data keys) goes into the manifest.
//! let (info, mut sealer) = encryptor.encrypt_stream()?;
//! let mut stored = Vec::new();
//! sealer.update(b"hello, ", &mut stored)?;
//! sealer.update(b"disaster recovery", &mut stored)?;
//! sealer.finish(&mut stored)?;
//!
//! // Decrypt with the key and the manifest's info.
//! let mut opener = AeadDecryptor::new(vec![key]).decrypt_stream(&info)?;
//! let mut plain = Vec::new();
//! opener.update(&stored, &mut plain)?;
//! opener.finish(&mut plain)?;
//! assert_eq!(plain, b"hello, disaster recovery");
//! # Ok(())
//! # }
//! ```
//!
//! In a pipeline, hand the transforms to [`dr_core::spawn_transform`] instead of calling
//! `update` and `finish` yourself.
//!
//! # What it guarantees
//!
//! - Each stream gets a fresh random 256-bit data key and a random header salt; chunks are
//!   sealed with a key derived from both *and from the whole header*, so a changed or swapped
//!   header fails at the first chunk.
//! - Chunks follow the STREAM construction (as in age): the nonce is a chunk counter and a
//!   last-chunk flag, so reordering, dropping, duplicating, truncating or extending the stored
//!   bytes fails authentication.
//! - The decryptor releases only authenticated plaintext and fails in `finish` if the stream
//!   ended without its final chunk. Its errors are [`dr_core::ErrorKind::Corrupt`] and name
//!   the chunk number.
//! - Recipients: symmetric [`MasterKey`]s (key files, passphrases) and X25519 public keys
//!   ([`X25519Recipient`]): a host holding only public recipients writes backups it cannot
//!   read. [`AgeEncryptor`] writes standard age files instead, for the stock `age` CLI.
//! - The data key is wrapped (AES-256-GCM) for every recipient given; the wrapped keys
//!   go into the manifest as [`dr_core::WrappedKey`]s, so rotating keys rewrites manifests,
//!   never data. A decryptor without a matching key fails with
//!   [`dr_core::ErrorKind::WrongKey`], naming the key ids that would open the stream.
//! - Key bytes and passphrases are wiped on drop and never appear in `Debug` or errors.
//!   (ring's own expanded key schedules are outside this crate's reach and are not wiped.)
//!
//! The byte format is specified in `FORMAT.md` at the root of the repository.
#![deny(missing_docs)]

mod age;
mod cipher;
mod envelope;
mod identity;
mod key_file;
mod keys;
mod random;
mod signing_key;
mod stream;
mod x25519;

#[cfg(test)]
mod vectors;

pub use age::{
    AgeDecryptor, AgeEncryptor, AgeIdentity, AgeRecipient, AGE_IDENTITY_PREFIX,
    AGE_RECIPIENT_PREFIX, AGE_SCHEME, AGE_STANZA_METHOD,
};
pub use cipher::{Cipher, KEY_BYTES, TAG_BYTES};
pub use envelope::{check_wrapped_key, rewrap, AeadDecryptor, AeadEncryptor, SCHEME, WRAP_METHOD};
pub use identity::{read_identity_file, write_identity_file, Identity, Recipient};
pub use key_file::{IDENTITY_PREFIX, KEY_FILE_PREFIX};
pub use keys::{
    read_key_file, write_key_file, KdfParams, MasterKey, Passphrase, DEFAULT_KDF_ITERATIONS,
    KDF_PBKDF2_HMAC_SHA256,
};
pub use signing_key::{generate_signing_key_file, read_signing_key_file, SIGNING_KEY_PREFIX};
pub use stream::{
    DEFAULT_CHUNK_BYTES, HEADER_BYTES, MAGIC, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES, SALT_BYTES,
};
pub use x25519::{X25519Identity, X25519Recipient, RECIPIENT_PREFIX, X25519_WRAP_METHOD};
