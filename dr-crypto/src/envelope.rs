//! Envelope encryption: a fresh data key per stream, wrapped for every master key.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dr_core::{
    Decryptor, EncryptionInfo, Encryptor, Error, ErrorKind, Result, Transform, WrappedKey,
};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use zeroize::Zeroizing;

use crate::cipher::Cipher;
use crate::keys::{fill_random, MasterKey, KEY_BYTES};
use crate::stream::{
    check_chunk_bytes, Header, StreamOpener, StreamSealer, DEFAULT_CHUNK_BYTES, SALT_BYTES,
    TAG_BYTES,
};

/// The scheme name recorded in [`EncryptionInfo::scheme`] for streams this crate writes.
pub const SCHEME: &str = "dr-aead-v1";

/// The wrapping method recorded in [`WrappedKey::method`].
pub const WRAP_METHOD: &str = "aes-256-gcm-kw";

const WRAP_INFO: &[u8] = b"dr-aead-v1 wrap";
const WRAP_AAD_PREFIX: &[u8] = b"dr-aead-v1 wrap ";
const WRAPPED_BYTES: usize = aead::NONCE_LEN + KEY_BYTES + TAG_BYTES;

/// The key-encryption key of a master key: HKDF-SHA256(ikm = master key, salt = empty,
/// info = "dr-aead-v1 wrap"), as an AES-256-GCM key.
fn kek(master: &MasterKey) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(master.secret());
    let okm = prk
        .expand(&[WRAP_INFO], &aead::AES_256_GCM)
        .expect("32 bytes is far below HKDF-SHA256's output limit");
    LessSafeKey::new(UnboundKey::from(okm))
}

fn wrap_aad(key_id: &str, cipher: Cipher) -> Vec<u8> {
    [
        WRAP_AAD_PREFIX,
        key_id.as_bytes(),
        cipher.as_str().as_bytes(),
    ]
    .concat()
}

/// Wrap `data_key` for `master` with the given nonce.
fn wrap(
    master: &MasterKey,
    data_key: &[u8; KEY_BYTES],
    cipher: Cipher,
    nonce: [u8; aead::NONCE_LEN],
) -> Result<WrappedKey> {
    let key_id = master.key_id();
    let mut body = Zeroizing::new(Vec::with_capacity(WRAPPED_BYTES));
    body.extend_from_slice(&nonce);
    body.extend_from_slice(data_key);
    let aad = wrap_aad(&key_id, cipher);
    let tag = kek(master)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad[..]),
            &mut body[aead::NONCE_LEN..],
        )
        .map_err(|_| Error::new(ErrorKind::Other, "wrapping the data key failed"))?;
    body.extend_from_slice(tag.as_ref());
    Ok(WrappedKey {
        key_id,
        method: WRAP_METHOD.to_owned(),
        body: STANDARD.encode(&body[..]),
    })
}

/// Unwrap the data key in `wrapped` with `master`.
fn unwrap(
    master: &MasterKey,
    wrapped: &WrappedKey,
    cipher: Cipher,
) -> Result<Box<[u8; KEY_BYTES]>> {
    let id = &wrapped.key_id;
    if wrapped.method != WRAP_METHOD {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the data key for key {id} is wrapped with unknown method {:?}; this dr knows \
                 {WRAP_METHOD}",
                wrapped.method
            ),
        ));
    }
    let mut body = Zeroizing::new(STANDARD.decode(&wrapped.body).map_err(|_| {
        Error::corrupt(format!(
            "the wrapped data key for key {id} in the manifest is not valid base64"
        ))
    })?);
    if body.len() != WRAPPED_BYTES {
        return Err(Error::corrupt(format!(
            "the wrapped data key for key {id} in the manifest has {} bytes instead of \
             {WRAPPED_BYTES}",
            body.len()
        )));
    }
    let mut nonce = [0u8; aead::NONCE_LEN];
    nonce.copy_from_slice(&body[..aead::NONCE_LEN]);
    let aad = wrap_aad(id, cipher);
    let plain = kek(master)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad[..]),
            &mut body[aead::NONCE_LEN..],
        )
        .map_err(|_| {
            Error::new(
                ErrorKind::WrongKey,
                format!("key {id} failed to unwrap the data key: wrong key or tampered manifest"),
            )
        })?;
    let mut data_key = Box::new([0u8; KEY_BYTES]);
    data_key.copy_from_slice(plain);
    Ok(data_key)
}

/// Encrypts streams as `dr-aead-v1`: a fresh random data key per stream, wrapped for every
/// master key given, so that any one of them opens the stream.
///
/// `Debug` shows the cipher, chunk size and key ids; never key bytes.
pub struct AeadEncryptor {
    cipher: Cipher,
    keys: Vec<MasterKey>,
    chunk_bytes: usize,
}

impl AeadEncryptor {
    /// An encryptor sealing with `cipher` whose streams open with any of `keys` (at least
    /// one; keys given twice are wrapped for once). Chunks hold 64 KiB of plaintext.
    pub fn new(cipher: Cipher, keys: Vec<MasterKey>) -> Result<Self> {
        if keys.is_empty() {
            return Err(Error::invalid(
                "an encryptor needs at least one master key to wrap data keys for",
            ));
        }
        let mut unique: Vec<MasterKey> = Vec::with_capacity(keys.len());
        for key in keys {
            if !unique.iter().any(|k| k.key_id() == key.key_id()) {
                unique.push(key);
            }
        }
        Ok(AeadEncryptor {
            cipher,
            keys: unique,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        })
    }

    /// Use chunks of `n` plaintext bytes (1 KiB..=16 MiB). A size outside that range makes
    /// [`Encryptor::encrypt_stream`] fail with [`ErrorKind::InvalidInput`].
    pub fn with_chunk_bytes(mut self, n: usize) -> Self {
        self.chunk_bytes = n;
        self
    }

    /// The cipher new streams are sealed with.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The ids of the keys each stream's data key is wrapped for.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(MasterKey::key_id).collect()
    }

    /// Start a stream with the given data key, salt and wrap nonces (one per key). Used by
    /// [`Encryptor::encrypt_stream`] with random values, and by test vectors with fixed ones.
    fn start(
        &self,
        data_key: &[u8; KEY_BYTES],
        salt: [u8; SALT_BYTES],
        wrap_nonces: &[[u8; aead::NONCE_LEN]],
    ) -> Result<(EncryptionInfo, StreamSealer)> {
        check_chunk_bytes(self.chunk_bytes)?;
        let wrapped_keys = self
            .keys
            .iter()
            .zip(wrap_nonces)
            .map(|(k, n)| wrap(k, data_key, self.cipher, *n))
            .collect::<Result<Vec<_>>>()?;
        let info = EncryptionInfo {
            scheme: SCHEME.to_owned(),
            cipher: self.cipher.as_str().to_owned(),
            wrapped_keys,
        };
        let header = Header {
            cipher: self.cipher,
            chunk_bytes: self.chunk_bytes,
            salt,
        };
        Ok((info, StreamSealer::new(data_key, header)))
    }

    #[cfg(test)]
    pub(crate) fn start_for_test_vectors(
        &self,
        data_key: &[u8; KEY_BYTES],
        salt: [u8; SALT_BYTES],
        wrap_nonces: &[[u8; aead::NONCE_LEN]],
    ) -> Result<(EncryptionInfo, StreamSealer)> {
        self.start(data_key, salt, wrap_nonces)
    }
}

impl Encryptor for AeadEncryptor {
    fn encrypt_stream(&self) -> Result<(EncryptionInfo, Box<dyn Transform>)> {
        check_chunk_bytes(self.chunk_bytes)?;
        let mut data_key = Zeroizing::new([0u8; KEY_BYTES]);
        fill_random(&mut data_key[..])?;
        let mut salt = [0u8; SALT_BYTES];
        fill_random(&mut salt)?;
        let mut nonces = vec![[0u8; aead::NONCE_LEN]; self.keys.len()];
        for n in &mut nonces {
            fill_random(n)?;
        }
        let (info, sealer) = self.start(&data_key, salt, &nonces)?;
        Ok((info, Box::new(sealer)))
    }
}

impl fmt::Debug for AeadEncryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadEncryptor")
            .field("cipher", &self.cipher)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

/// Opens `dr-aead-v1` streams with any of the master keys it holds.
///
/// `Debug` shows key ids only.
pub struct AeadDecryptor {
    keys: Vec<MasterKey>,
}

impl AeadDecryptor {
    /// A decryptor that tries `keys`; a stream opens if its data key was wrapped for one of
    /// them.
    pub fn new(keys: Vec<MasterKey>) -> Self {
        AeadDecryptor { keys }
    }

    /// The ids of the keys this decryptor holds.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(MasterKey::key_id).collect()
    }
}

impl Decryptor for AeadDecryptor {
    fn decrypt_stream(&self, info: &EncryptionInfo) -> Result<Box<dyn Transform>> {
        if info.scheme != SCHEME {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "encryption scheme {:?} is not supported by this decryptor, which reads \
                     {SCHEME}",
                    info.scheme
                ),
            ));
        }
        let cipher: Cipher = info.cipher.parse()?;
        let found = info.wrapped_keys.iter().find_map(|w| {
            self.keys
                .iter()
                .find(|k| k.key_id() == w.key_id)
                .map(|k| (k, w))
        });
        let Some((key, wrapped)) = found else {
            let needed = info.key_ids();
            let given = self.key_ids();
            let needed = if needed.is_empty() {
                "none (the manifest lists no wrapped keys)".to_owned()
            } else {
                needed.join(", ")
            };
            let given = if given.is_empty() {
                "none".to_owned()
            } else {
                given.join(", ")
            };
            return Err(Error::new(
                ErrorKind::WrongKey,
                format!(
                    "none of the keys given can open this stream: it opens with key id {needed}; \
                     keys given: {given}"
                ),
            ));
        };
        let data_key = unwrap(key, wrapped, cipher)?;
        Ok(Box::new(StreamOpener::new(data_key, cipher)))
    }
}

impl fmt::Debug for AeadDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadDecryptor")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}
