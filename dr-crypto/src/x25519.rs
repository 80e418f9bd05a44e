//! X25519 public-key recipients: a backup host that holds only the public half can wrap data
//! keys it can never unwrap again.
//!
//! Why x25519-dalek and not ring: ring's X25519 (`ring::agreement`) is ephemeral-only: it
//! cannot import a private key, so it cannot be the long-lived secret in an identity file.
//! x25519-dalek (with `static_secrets`) is the well-kept pure-Rust implementation that can,
//! and it is used for both sides so that one implementation computes every shared secret.
//! A test checks that its shared secrets equal ring's for the same public values.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use dr_core::{Error, ErrorKind, Result, WrappedKey};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::{digest, hkdf};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::cipher::{Cipher, KEY_BYTES, TAG_BYTES};
use crate::key_file::IDENTITY_PREFIX;
use crate::random::fill_random;

/// The wrapping method recorded in [`WrappedKey::method`] for X25519 recipients.
pub const X25519_WRAP_METHOD: &str = "x25519-hkdf-aes-256-gcm";
/// The prefix of a public recipient's text form.
pub const RECIPIENT_PREFIX: &str = "dr-x25519-v1-";

const KEY_ID_LABEL: &[u8] = b"dr x25519 key id v1";
const WRAP_INFO: &[u8] = b"dr-aead-v1 x25519 wrap";
const WRAP_AAD_PREFIX: &[u8] = b"dr-aead-v1 wrap ";
/// Ephemeral share, wrapped data key, tag.
pub(crate) const X25519_WRAPPED_BYTES: usize = 32 + KEY_BYTES + TAG_BYTES;

/// The public half of an X25519 key pair: data keys can be wrapped for it by anyone, and
/// unwrapped only by the holder of the matching [`X25519Identity`].
///
/// Text form: `dr-x25519-v1-` and the 32 bytes in unpadded base64url (56 characters).
#[derive(Clone, PartialEq, Eq)]
pub struct X25519Recipient {
    bytes: [u8; 32],
    id: String,
}

impl X25519Recipient {
    fn from_bytes(bytes: [u8; 32]) -> X25519Recipient {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(KEY_ID_LABEL);
        ctx.update(&bytes);
        let id = hex::encode(&ctx.finish().as_ref()[..8]);
        X25519Recipient { bytes, id }
    }

    /// Parse the text form (`dr-x25519-v1-…`). Errors are [`ErrorKind::InvalidInput`].
    pub fn parse(text: &str) -> Result<X25519Recipient> {
        let text = text.trim();
        let encoded = text.strip_prefix(RECIPIENT_PREFIX).ok_or_else(|| {
            Error::invalid(format!(
                "not a dr public recipient: it does not start with {RECIPIENT_PREFIX}"
            ))
        })?;
        let raw = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| {
            Error::invalid("the public recipient is damaged: it is not valid unpadded base64url")
        })?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| {
            Error::invalid("the public recipient is damaged: it does not hold 32 bytes")
        })?;
        Ok(X25519Recipient::from_bytes(bytes))
    }

    /// The public key id: 16 lowercase hex digits, the first 8 bytes of
    /// SHA-256("dr x25519 key id v1" || public key).
    pub fn key_id(&self) -> String {
        self.id.clone()
    }

    /// The raw 32-byte public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Wrap `data_key` for this recipient with a fresh ephemeral key pair.
    pub(crate) fn wrap(&self, data_key: &[u8; KEY_BYTES], cipher: Cipher) -> Result<WrappedKey> {
        let mut eph = Zeroizing::new([0u8; 32]);
        fill_random(&mut eph[..])?;
        self.wrap_with_ephemeral(data_key, cipher, *eph)
    }

    /// Wrap with a caller-chosen ephemeral secret: for test vectors and [`Self::wrap`].
    pub(crate) fn wrap_with_ephemeral(
        &self,
        data_key: &[u8; KEY_BYTES],
        cipher: Cipher,
        ephemeral: [u8; 32],
    ) -> Result<WrappedKey> {
        let eph = StaticSecret::from(ephemeral);
        let eph_public = PublicKey::from(&eph);
        let shared = eph.diffie_hellman(&PublicKey::from(self.bytes));
        if !shared.was_contributory() {
            return Err(Error::invalid(format!(
                "public recipient {} is a low-order point, not a usable X25519 public key",
                self.id
            )));
        }
        let kek = kek(shared.as_bytes(), eph_public.as_bytes(), &self.bytes);
        let mut body = Zeroizing::new(Vec::with_capacity(X25519_WRAPPED_BYTES));
        body.extend_from_slice(eph_public.as_bytes());
        body.extend_from_slice(data_key);
        let aad = wrap_aad(&self.id, cipher);
        let tag = kek
            .seal_in_place_separate_tag(zero_nonce(), Aad::from(&aad[..]), &mut body[32..])
            .map_err(|_| Error::new(ErrorKind::Other, "wrapping the data key failed"))?;
        body.extend_from_slice(tag.as_ref());
        Ok(WrappedKey {
            key_id: self.id.clone(),
            method: X25519_WRAP_METHOD.to_owned(),
            body: STANDARD.encode(&body[..]),
        })
    }
}

impl fmt::Display for X25519Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{RECIPIENT_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(self.bytes)
        )
    }
}

impl fmt::Debug for X25519Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X25519Recipient")
            .field("id", &self.id)
            .finish()
    }
}

impl std::str::FromStr for X25519Recipient {
    type Err = Error;
    fn from_str(s: &str) -> Result<X25519Recipient> {
        X25519Recipient::parse(s)
    }
}

/// The secret half of an X25519 key pair, as kept in an identity file.
///
/// The scalar is wiped on drop (x25519-dalek's `zeroize`), never printed: `Debug` shows the
/// key id only. Its [`key_id`](X25519Identity::key_id) is that of its public recipient.
#[derive(Clone)]
pub struct X25519Identity {
    secret: StaticSecret,
    public: X25519Recipient,
}

impl X25519Identity {
    /// A new random identity from the operating system's generator.
    pub fn generate() -> Result<X25519Identity> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        fill_random(&mut bytes[..])?;
        Ok(X25519Identity::from_secret_bytes(*bytes))
    }

    pub(crate) fn from_secret_bytes(bytes: [u8; 32]) -> X25519Identity {
        let secret = StaticSecret::from(bytes);
        let public = X25519Recipient::from_bytes(PublicKey::from(&secret).to_bytes());
        X25519Identity { secret, public }
    }

    /// The public recipient a backup host needs.
    pub fn recipient(&self) -> &X25519Recipient {
        &self.public
    }

    /// The key id (that of the public recipient).
    pub fn key_id(&self) -> String {
        self.public.key_id()
    }

    /// The identity as the text of an identity file: two comment lines (the key id, the
    /// public recipient), then `DR-X25519-SECRET-V1-` and the secret in unpadded base64url.
    pub fn to_identity_file(&self) -> String {
        let encoded = Zeroizing::new(URL_SAFE_NO_PAD.encode(self.secret.as_bytes()));
        format!(
            "# dr identity key id {}: anyone holding this file can read the backups it protects\n\
             # public recipient: {}\n\
             {IDENTITY_PREFIX}{}\n",
            self.public.id, self.public, *encoded
        )
    }

    /// Decode the part after [`IDENTITY_PREFIX`] of an identity file's secret line.
    pub(crate) fn from_encoded_secret(encoded: &str) -> Result<X25519Identity> {
        let raw = Zeroizing::new(URL_SAFE_NO_PAD.decode(encoded).map_err(|_| {
            Error::invalid(
                "the secret line of the identity file is damaged: it is not valid unpadded \
                 base64url",
            )
        })?);
        if raw.len() != 32 {
            return Err(Error::invalid(format!(
                "the secret line of the identity file is damaged: it holds {} bytes instead of 32",
                raw.len()
            )));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&raw);
        Ok(X25519Identity::from_secret_bytes(*bytes))
    }

    /// Unwrap a data key wrapped for this identity's recipient.
    pub(crate) fn unwrap(
        &self,
        wrapped: &WrappedKey,
        cipher: Cipher,
    ) -> Result<Box<[u8; KEY_BYTES]>> {
        let id = &wrapped.key_id;
        let mut body = Zeroizing::new(decode_x25519_body(wrapped)?);
        let mut eph = [0u8; 32];
        eph.copy_from_slice(&body[..32]);
        let shared = self.secret.diffie_hellman(&PublicKey::from(eph));
        if !shared.was_contributory() {
            return Err(Error::corrupt(format!(
                "the wrapped data key for key {id} carries a low-order ephemeral share"
            )));
        }
        let kek = kek(shared.as_bytes(), &eph, &self.public.bytes);
        let aad = wrap_aad(id, cipher);
        let plain = kek
            .open_in_place(zero_nonce(), Aad::from(&aad[..]), &mut body[32..])
            .map_err(|_| {
                Error::new(
                    ErrorKind::WrongKey,
                    format!(
                        "key {id} failed to unwrap the data key: wrong key or tampered manifest"
                    ),
                )
            })?;
        let mut data_key = Box::new([0u8; KEY_BYTES]);
        data_key.copy_from_slice(plain);
        Ok(data_key)
    }
}

impl fmt::Debug for X25519Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X25519Identity")
            .field("id", &self.public.id)
            .finish()
    }
}

/// Decode and length-check the body of an `x25519-hkdf-aes-256-gcm` wrapped key.
pub(crate) fn decode_x25519_body(wrapped: &WrappedKey) -> Result<Vec<u8>> {
    let id = &wrapped.key_id;
    if wrapped.method != X25519_WRAP_METHOD {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the data key for key {id} is wrapped with method {:?}, not {X25519_WRAP_METHOD}",
                wrapped.method
            ),
        ));
    }
    let body = STANDARD.decode(&wrapped.body).map_err(|_| {
        Error::corrupt(format!(
            "the wrapped data key for key {id} in the manifest is not valid base64"
        ))
    })?;
    if body.len() != X25519_WRAPPED_BYTES {
        return Err(Error::corrupt(format!(
            "the wrapped data key for key {id} in the manifest has {} bytes instead of \
             {X25519_WRAPPED_BYTES}",
            body.len()
        )));
    }
    Ok(body)
}

/// KEK = HKDF-SHA256(ikm = shared secret, salt = ephemeral share || recipient,
/// info = "dr-aead-v1 x25519 wrap"), as an AES-256-GCM key used for exactly one seal.
fn kek(shared: &[u8; 32], eph_public: &[u8; 32], recipient: &[u8; 32]) -> LessSafeKey {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph_public);
    salt[32..].copy_from_slice(recipient);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(shared);
    let okm = prk
        .expand(&[WRAP_INFO], &aead::AES_256_GCM)
        .expect("32 bytes is far below HKDF-SHA256's output limit");
    LessSafeKey::new(UnboundKey::from(okm))
}

/// The KEK is fresh for every wrap (a new ephemeral key), so a fixed nonce is safe.
fn zero_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0u8; aead::NONCE_LEN])
}

fn wrap_aad(key_id: &str, cipher: Cipher) -> Vec<u8> {
    [
        WRAP_AAD_PREFIX,
        key_id.as_bytes(),
        cipher.as_str().as_bytes(),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::agreement;

    #[test]
    fn dalek_shared_secrets_match_ring() {
        let rng = ring::rand::SystemRandom::new();
        for _ in 0..8 {
            let ring_secret =
                agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng).unwrap();
            let ring_public = ring_secret.compute_public_key().unwrap();
            let identity = X25519Identity::generate().unwrap();
            let dalek_public: [u8; 32] = ring_public.as_ref().try_into().unwrap();
            let dalek_shared = identity
                .secret
                .diffie_hellman(&PublicKey::from(dalek_public))
                .to_bytes();
            let peer = agreement::UnparsedPublicKey::new(
                &agreement::X25519,
                identity.recipient().as_bytes().to_vec(),
            );
            let ring_shared =
                agreement::agree_ephemeral(ring_secret, &peer, |s| s.to_vec()).unwrap();
            assert_eq!(ring_shared, dalek_shared.to_vec());
        }
    }

    #[test]
    fn wrap_round_trips_and_binds_the_cipher() {
        let identity = X25519Identity::generate().unwrap();
        let data_key = [7u8; 32];
        let w = identity
            .recipient()
            .wrap(&data_key, Cipher::Aes256Gcm)
            .unwrap();
        assert_eq!(w.body.len(), 108, "base64 of 32 + 32 + 16 bytes");
        assert_eq!(*identity.unwrap(&w, Cipher::Aes256Gcm).unwrap(), data_key);
        let e = identity.unwrap(&w, Cipher::ChaCha20Poly1305).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WrongKey);
        let other = X25519Identity::generate().unwrap();
        assert_eq!(
            other.unwrap(&w, Cipher::Aes256Gcm).unwrap_err().kind(),
            ErrorKind::WrongKey
        );
    }

    #[test]
    fn low_order_recipient_is_refused() {
        let zero = X25519Recipient::from_bytes([0u8; 32]);
        let e = zero.wrap(&[1u8; 32], Cipher::Aes256Gcm).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn recipient_text_round_trips_and_debug_hides_the_secret() {
        let identity = X25519Identity::generate().unwrap();
        let text = identity.recipient().to_string();
        assert!(text.starts_with(RECIPIENT_PREFIX));
        assert_eq!(text.len(), RECIPIENT_PREFIX.len() + 43);
        assert_eq!(
            &X25519Recipient::parse(&text).unwrap(),
            identity.recipient()
        );
        let secret_b64 = URL_SAFE_NO_PAD.encode(identity.secret.as_bytes());
        let debug = format!("{identity:?}");
        assert!(!debug.contains(&secret_b64));
        assert!(debug.contains(&identity.key_id()));
    }
}
