//! Envelope encryption: a fresh data key per stream, wrapped for every master key.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dr_core::{
    Decryptor, EncryptionInfo, Encryptor, Error, ErrorKind, PieceSealer, Result, Transform,
    WrappedKey,
};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use zeroize::Zeroizing;

use crate::cipher::{Cipher, KEY_BYTES, TAG_BYTES};
use crate::identity::{unsupported_recipient, Identity, Recipient};
use crate::keys::MasterKey;
use crate::random::fill_random;
use crate::stream::{
    check_chunk_bytes, piece_salt, Header, StreamOpener, StreamSealer, DEFAULT_CHUNK_BYTES,
    SALT_BYTES,
};
use crate::x25519::X25519_WRAP_METHOD;

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
/// recipient given (symmetric master keys and X25519 public recipients), so that any one of
/// them opens the stream.
///
/// `Debug` shows the cipher, chunk size and key ids; never key bytes.
pub struct AeadEncryptor {
    cipher: Cipher,
    recipients: Vec<Recipient>,
    chunk_bytes: usize,
}

impl AeadEncryptor {
    /// An encryptor sealing with `cipher` whose streams open with any of `keys` (at least
    /// one; keys given twice are wrapped for once). Chunks hold 64 KiB of plaintext.
    pub fn new(cipher: Cipher, keys: Vec<MasterKey>) -> Result<Self> {
        Self::to_recipients(cipher, keys.into_iter().map(Recipient::Symmetric).collect())
    }

    /// An encryptor whose streams open with the identity behind any of `recipients`:
    /// symmetric keys and X25519 public recipients (at least one; duplicates are wrapped for
    /// once). A host that holds only public recipients can write streams it cannot read.
    /// Age recipients are refused ([`ErrorKind::Unsupported`]): they need an age-format
    /// repository.
    pub fn to_recipients(cipher: Cipher, recipients: Vec<Recipient>) -> Result<Self> {
        if recipients.is_empty() {
            return Err(Error::invalid(
                "an encryptor needs at least one master key to wrap data keys for",
            ));
        }
        let mut unique: Vec<Recipient> = Vec::with_capacity(recipients.len());
        for r in recipients {
            if let Recipient::Age(_) = r {
                return Err(unsupported_recipient(&r, "the dr-aead-v1 format"));
            }
            if !unique.iter().any(|k| k.key_id() == r.key_id()) {
                unique.push(r);
            }
        }
        Ok(AeadEncryptor {
            cipher,
            recipients: unique,
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
        self.recipients.iter().map(Recipient::key_id).collect()
    }

    /// Start a stream with the given data key, salt and wrap nonces (one per recipient; X25519
    /// recipients draw their own ephemeral keys). Used by [`Encryptor::encrypt_stream`] with
    /// random values, and by test vectors with fixed ones.
    fn start(
        &self,
        data_key: &[u8; KEY_BYTES],
        salt: [u8; SALT_BYTES],
        wrap_nonces: &[[u8; aead::NONCE_LEN]],
    ) -> Result<(EncryptionInfo, StreamSealer)> {
        check_chunk_bytes(self.chunk_bytes)?;
        let wrapped_keys = self
            .recipients
            .iter()
            .zip(wrap_nonces)
            .map(|(r, n)| wrap_for(r, data_key, self.cipher, *n))
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

/// Wrap `data_key` for one recipient (`nonce` is used by symmetric keys only).
fn wrap_for(
    r: &Recipient,
    data_key: &[u8; KEY_BYTES],
    cipher: Cipher,
    nonce: [u8; aead::NONCE_LEN],
) -> Result<WrappedKey> {
    match r {
        Recipient::Symmetric(k) => wrap(k, data_key, cipher, nonce),
        Recipient::X25519(x) => x.wrap(data_key, cipher),
        Recipient::Age(_) => Err(unsupported_recipient(r, "the dr-aead-v1 format")),
    }
}

impl Encryptor for AeadEncryptor {
    fn encrypt_stream(&self) -> Result<(EncryptionInfo, Box<dyn Transform>)> {
        check_chunk_bytes(self.chunk_bytes)?;
        let mut data_key = Zeroizing::new([0u8; KEY_BYTES]);
        fill_random(&mut data_key[..])?;
        let mut salt = [0u8; SALT_BYTES];
        fill_random(&mut salt)?;
        let mut nonces = vec![[0u8; aead::NONCE_LEN]; self.recipients.len()];
        for n in &mut nonces {
            fill_random(n)?;
        }
        let (info, sealer) = self.start(&data_key, salt, &nonces)?;
        Ok((info, Box::new(sealer)))
    }

    fn encrypt_pieces(&self) -> Result<(EncryptionInfo, Box<dyn PieceSealer>)> {
        check_chunk_bytes(self.chunk_bytes)?;
        let mut data_key = Zeroizing::new([0u8; KEY_BYTES]);
        fill_random(&mut data_key[..])?;
        let mut nonces = vec![[0u8; aead::NONCE_LEN]; self.recipients.len()];
        for n in &mut nonces {
            fill_random(n)?;
        }
        // The salt of this first stream is never used: pieces get their names' salts.
        let (info, _) = self.start(&data_key, [0u8; SALT_BYTES], &nonces)?;
        Ok((
            info,
            Box::new(AeadPieceSealer {
                data_key,
                cipher: self.cipher,
                chunk_bytes: self.chunk_bytes,
            }),
        ))
    }
}

/// Seals the pieces of one backup under its data key, each with its name's salt.
struct AeadPieceSealer {
    data_key: Zeroizing<[u8; KEY_BYTES]>,
    cipher: Cipher,
    chunk_bytes: usize,
}

impl PieceSealer for AeadPieceSealer {
    fn seal(&self, name: &str) -> Result<Box<dyn Transform>> {
        let header = Header {
            cipher: self.cipher,
            chunk_bytes: self.chunk_bytes,
            salt: piece_salt(name),
        };
        Ok(Box::new(StreamSealer::new(&self.data_key, header)))
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

/// Opens `dr-aead-v1` streams with any of the identities it holds (symmetric master keys,
/// X25519 identities).
///
/// `Debug` shows key ids only.
pub struct AeadDecryptor {
    keys: Vec<Identity>,
}

impl AeadDecryptor {
    /// A decryptor that tries `keys`; a stream opens if its data key was wrapped for one of
    /// them.
    pub fn new(keys: Vec<MasterKey>) -> Self {
        AeadDecryptor {
            keys: keys.into_iter().map(Identity::Symmetric).collect(),
        }
    }

    /// A decryptor that tries identities of any kind.
    pub fn with_identities(keys: Vec<Identity>) -> Self {
        AeadDecryptor { keys }
    }

    /// The ids of the keys this decryptor holds.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(Identity::key_id).collect()
    }

    /// Check the scheme and cipher of `info`, find a wrapped key this decryptor holds an
    /// identity for, and unwrap the data key.
    fn data_key(&self, info: &EncryptionInfo) -> Result<(Box<[u8; KEY_BYTES]>, Cipher)> {
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
        let data_key = match key {
            Identity::Symmetric(k) => unwrap(k, wrapped, cipher)?,
            Identity::X25519(k) => k.unwrap(wrapped, cipher)?,
            Identity::Age(_) => {
                return Err(Error::new(
                    ErrorKind::WrongKey,
                    format!(
                        "key {} is an age identity, which opens age-format repositories only",
                        wrapped.key_id
                    ),
                ))
            }
        };
        Ok((data_key, cipher))
    }
}

impl Decryptor for AeadDecryptor {
    fn decrypt_stream(&self, info: &EncryptionInfo) -> Result<Box<dyn Transform>> {
        let (data_key, cipher) = self.data_key(info)?;
        Ok(Box::new(StreamOpener::new(data_key, cipher)))
    }

    fn decrypt_piece(&self, info: &EncryptionInfo, name: &str) -> Result<Box<dyn Transform>> {
        let (data_key, cipher) = self.data_key(info)?;
        Ok(Box::new(
            StreamOpener::new(data_key, cipher).expect_salt(piece_salt(name)),
        ))
    }
}

/// Re-wrap a `dr-aead-v1` stream's data key: unwrap it with one of `openers` and wrap it
/// for each of `add` whose key id the info does not list yet; then drop the wrapped keys whose
/// id is in `remove`. The stream itself is untouched; only its [`EncryptionInfo`] (in the
/// manifest) changes. The data key never leaves this function.
///
/// When nothing has to be added, no opener is needed (removal alone needs no key). Fails with
/// [`ErrorKind::WrongKey`] when a key must be added and no opener unwraps the data key, and
/// with [`ErrorKind::InvalidInput`] if the result would list no wrapped key at all.
pub fn rewrap(
    info: &EncryptionInfo,
    openers: &[Identity],
    add: &[Recipient],
    remove: &[String],
) -> Result<EncryptionInfo> {
    let mut out = info.clone();
    let missing: Vec<&Recipient> = add
        .iter()
        .filter(|r| !info.wrapped_keys.iter().any(|w| w.key_id == r.key_id()))
        .collect();
    if !missing.is_empty() {
        let (data_key, cipher) = AeadDecryptor::with_identities(openers.to_vec()).data_key(info)?;
        let data_key = Zeroizing::new(*data_key);
        for r in missing {
            if out.wrapped_keys.iter().any(|w| w.key_id == r.key_id()) {
                continue; // listed twice in `add`
            }
            let mut nonce = [0u8; aead::NONCE_LEN];
            fill_random(&mut nonce)?;
            out.wrapped_keys
                .push(wrap_for(r, &data_key, cipher, nonce)?);
        }
    }
    out.wrapped_keys.retain(|w| !remove.contains(&w.key_id));
    if out.wrapped_keys.is_empty() {
        return Err(Error::invalid(
            "refusing to remove every wrapped key: nothing could open the stream afterwards",
        ));
    }
    Ok(out)
}

/// Check the shape of a wrapped key's body without any key: method known, base64 valid,
/// length right. For fuzzing and for tools that inspect manifests.
pub fn check_wrapped_key(wrapped: &WrappedKey) -> Result<()> {
    match wrapped.method.as_str() {
        WRAP_METHOD => {
            let body = STANDARD.decode(&wrapped.body).map_err(|_| {
                Error::corrupt(format!(
                    "the wrapped data key for key {} is not valid base64",
                    wrapped.key_id
                ))
            })?;
            if body.len() != WRAPPED_BYTES {
                return Err(Error::corrupt(format!(
                    "the wrapped data key for key {} has {} bytes instead of {WRAPPED_BYTES}",
                    wrapped.key_id,
                    body.len()
                )));
            }
            Ok(())
        }
        X25519_WRAP_METHOD => crate::x25519::decode_x25519_body(wrapped).map(|_| ()),
        other => Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the data key for key {} is wrapped with unknown method {other:?}",
                wrapped.key_id
            ),
        )),
    }
}

impl fmt::Debug for AeadDecryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadDecryptor")
            .field("key_ids", &self.key_ids())
            .finish()
    }
}
