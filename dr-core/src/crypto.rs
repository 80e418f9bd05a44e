//! The encryption plug-in point: envelope encryption of one stream.
//!
//! An [`Encryptor`] holds whatever key material it needs (a repository key, public
//! recipients) and hands out one [`Transform`] per stream with a fresh data key behind it;
//! callers never see keys or choose nonces. What a reader needs to open the stream again,
//! other than a key, is returned as [`EncryptionInfo`] and stored in the manifest, so that
//! re-wrapping data keys (rotation, revocation) rewrites manifests, never data.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::stage::Transform;

/// How one stored stream was encrypted, as recorded in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    /// The format: `none`, `dr-aead-v1`, …
    pub scheme: String,
    /// The AEAD cipher: `aes-256-gcm`, `chacha20-poly1305`; empty for `none`.
    #[serde(default)]
    pub cipher: String,
    /// The stream's data key, wrapped once for each key that may open it.
    #[serde(default)]
    pub wrapped_keys: Vec<WrappedKey>,
}

impl EncryptionInfo {
    /// The info of an unencrypted stream.
    pub fn none() -> Self {
        EncryptionInfo {
            scheme: "none".into(),
            cipher: String::new(),
            wrapped_keys: Vec::new(),
        }
    }

    /// The ids of the keys that can open this stream.
    pub fn key_ids(&self) -> Vec<&str> {
        self.wrapped_keys
            .iter()
            .map(|k| k.key_id.as_str())
            .collect()
    }
}

/// A data key wrapped (encrypted) for one key. Public: safe to store and print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Which key unwraps it (see the repository's key list).
    pub key_id: String,
    /// The wrapping method, e.g. `aes-256-gcm-kw`, `x25519-hkdf-aes-256-gcm`.
    pub method: String,
    /// Method-specific bytes (nonce, ephemeral share, ciphertext), base64 or hex as the method
    /// defines in FORMAT.md.
    pub body: String,
}

/// Starts encrypted streams.
pub trait Encryptor: Send + Sync + fmt::Debug {
    /// A fresh data key, and a transform that turns plaintext into the stored bytes (header
    /// and sealed chunks). The returned info goes into the manifest.
    fn encrypt_stream(&self) -> Result<(EncryptionInfo, Box<dyn Transform>)>;

    /// A fresh data key for a payload stored as named pieces (see [`crate::pieces`]), and a
    /// sealer that starts one stream per piece under it. The returned info goes into the
    /// manifest once, for all pieces. A format that can bind a stream to its piece's name
    /// does so, so that pieces swapped in storage fail to open.
    fn encrypt_pieces(&self) -> Result<(EncryptionInfo, Box<dyn PieceSealer>)>;
}

/// Starts the streams of a pieces payload, all under one data key.
pub trait PieceSealer: Send + Sync {
    /// A transform that turns the plaintext of piece `name` into its stored bytes.
    fn seal(&self, name: &str) -> Result<Box<dyn Transform>>;
}

/// Opens encrypted streams.
pub trait Decryptor: Send + Sync + fmt::Debug {
    /// A transform that turns the stored bytes back into plaintext, releasing only
    /// authenticated bytes and failing on truncation. Fails with
    /// [`crate::ErrorKind::WrongKey`] when none of `info.wrapped_keys` is for this key,
    /// naming the key ids that would be needed.
    fn decrypt_stream(&self, info: &EncryptionInfo) -> Result<Box<dyn Transform>>;

    /// A transform that opens piece `name` of a pieces payload (see
    /// [`Encryptor::encrypt_pieces`]): like [`Decryptor::decrypt_stream`], and it fails with
    /// [`crate::ErrorKind::Corrupt`] on a stream sealed for another piece, where the format
    /// binds streams to names.
    fn decrypt_piece(&self, info: &EncryptionInfo, name: &str) -> Result<Box<dyn Transform>>;
}
