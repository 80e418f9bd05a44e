//! Ed25519 signatures over repository state and manifests (see FORMAT.md, "Authenticated
//! repository state").
//!
//! Someone who can only write to the bucket must not be able to change what dr trusts: the
//! key list a backup's data key is wrapped for, the defaults, the stored retention policy, or
//! a manifest's times, labels, pin and objects. Each is signed over a canonical JSON form
//! ([`canonical_json`]) with a key the bucket's credentials do not give: the repository's
//! administrative key (state and any manifest) or a writer key the administrator listed in
//! the signed state (manifests only). Verifying needs public keys only, so a backup host
//! that holds no secret at all still checks them.

use std::fmt;

use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// The prefix of a signing key's public text: `dr-ed25519-v1-` and 64 hex digits.
pub const PUBLIC_KEY_PREFIX: &str = "dr-ed25519-v1-";
/// Domain separation of the signed repository state.
const STATE_CONTEXT: &[u8] = b"dr-repo-state-v1\n";
/// Domain separation of a signed manifest.
const MANIFEST_CONTEXT: &[u8] = b"dr-manifest-v1\n";
const KEY_ID_CONTEXT: &[u8] = b"dr ed25519 key id v1";

/// A signature as stored in `dr-repo.json` and manifests: which key, and the 64 bytes in hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Key id of the signing key's public half ([`PublicKey::key_id`]).
    pub key_id: String,
    /// The Ed25519 signature, 128 lowercase hex digits.
    pub value: String,
}

/// The public half of a signing key: `dr-ed25519-v1-<64 hex digits>`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parse `dr-ed25519-v1-…`.
    pub fn parse(text: &str) -> Result<PublicKey> {
        let hex_part = text.trim().strip_prefix(PUBLIC_KEY_PREFIX).ok_or_else(|| {
            Error::invalid(format!(
                "not a signing public key: expected {PUBLIC_KEY_PREFIX}… (from `drctl keygen --signing`)"
            ))
        })?;
        let bytes = hex::decode(hex_part)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "not a signing public key: {PUBLIC_KEY_PREFIX} must be followed by 64 hex digits"
                ))
            })?;
        Ok(PublicKey(bytes))
    }

    /// 16 lowercase hex digits: the first 8 bytes of SHA-256("dr ed25519 key id v1" || key).
    pub fn key_id(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(KEY_ID_CONTEXT);
        ctx.update(&self.0);
        hex::encode(&ctx.finish().as_ref()[..8])
    }

    /// Whether `sig` is this key's signature of `message` (for formats built on these keys).
    pub(crate) fn verifies_detached(&self, message: &[u8], sig: &Signature) -> bool {
        self.verifies(message, sig)
    }

    /// Whether `sig` is this key's signature of `message`.
    fn verifies(&self, message: &[u8], sig: &Signature) -> bool {
        let Ok(bytes) = hex::decode(&sig.value) else {
            return false;
        };
        sig.key_id == self.key_id()
            && UnparsedPublicKey::new(&signature::ED25519, &self.0)
                .verify(message, &bytes)
                .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_KEY_PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

/// An Ed25519 signing key: the administrative key of a repository, or a writer key of a
/// backup host. The secret lives in ring's key pair; `Debug` shows the key id only. Files of
/// these keys are read and written by dr-crypto (`DR-ED25519-SECRET-V1-…`).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl SigningKey {
    /// The key of a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Result<SigningKey> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|_| Error::invalid("the signing key's seed is not a valid Ed25519 seed"))?;
        let public = PublicKey(
            pair.public_key()
                .as_ref()
                .try_into()
                .expect("Ed25519 public keys are 32 bytes"),
        );
        Ok(SigningKey { pair, public })
    }

    /// The public half, which `dr-repo.json` lists.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The public key's id.
    pub fn key_id(&self) -> String {
        self.public.key_id()
    }

    fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key_id: self.key_id(),
            value: hex::encode(self.pair.sign(message).as_ref()),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.key_id())
    }
}

/// JSON with object members sorted by key (byte order), no white space, strings escaped as
/// serde_json writes them: the same bytes for the same value whatever the file's layout.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).expect("strings serialize"));
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).expect("scalars serialize")),
    }
}

/// The message a repository state is signed over: its JSON object without `signature`.
fn state_message(state: &Value) -> Vec<u8> {
    let mut v = state.clone();
    if let Value::Object(map) = &mut v {
        map.remove("signature");
    }
    [STATE_CONTEXT, &canonical_json(&v)].concat()
}

/// The message a manifest is signed over: the repository id, then its JSON object without
/// `signature`, without `encryption.wrapped_keys` (which key changes rewrite; a wrap only
/// ever opens with the data key it was made from, so it needs no signature) and without the
/// objects' `storage_class` (which replication to another class rewrites; it says where the
/// bytes sit, not what they are).
fn manifest_message(repository_id: &str, manifest: &Value) -> Vec<u8> {
    let mut v = manifest.clone();
    if let Value::Object(map) = &mut v {
        map.remove("signature");
        if let Some(Value::Object(enc)) = map.get_mut("encryption") {
            enc.remove("wrapped_keys");
        }
        if let Some(Value::Array(objects)) = map.get_mut("objects") {
            for o in objects.iter_mut().filter_map(Value::as_object_mut) {
                o.remove("storage_class");
            }
        }
    }
    [
        MANIFEST_CONTEXT,
        repository_id.as_bytes(),
        b"\n",
        &canonical_json(&v),
    ]
    .concat()
}

/// Sign `message` as is (for formats that build their own message, as the audit trail).
pub(crate) fn sign_detached(key: &SigningKey, message: &[u8]) -> Signature {
    key.sign(message)
}

/// Sign a repository state (the JSON of `dr-repo.json`).
pub fn sign_state(key: &SigningKey, state: &Value) -> Signature {
    key.sign(&state_message(state))
}

/// Sign a manifest of repository `repository_id`.
pub fn sign_manifest(key: &SigningKey, repository_id: &str, manifest: &Value) -> Signature {
    key.sign(&manifest_message(repository_id, manifest))
}

/// Check the `signature` member of a repository state against `admin`. The error is one
/// line: what is wrong and what to do.
pub fn verify_state(admin: &PublicKey, state: &Value) -> Result<()> {
    let sig =
        signature_of(state).ok_or_else(|| unauthenticated("dr-repo.json carries no signature"))?;
    if !admin.verifies(&state_message(state), &sig) {
        return Err(unauthenticated(
            "dr-repo.json's signature does not verify with its administrative key: its keys, \
             defaults or retention policy were changed outside dr",
        ));
    }
    Ok(())
}

/// Check the `signature` member of a manifest against the keys allowed to sign it.
pub fn verify_manifest(allowed: &[PublicKey], repository_id: &str, manifest: &Value) -> Result<()> {
    let sig = signature_of(manifest).ok_or_else(|| unauthenticated("it carries no signature"))?;
    let key = allowed
        .iter()
        .find(|k| k.key_id() == sig.key_id)
        .ok_or_else(|| {
            unauthenticated(format!(
                "it is signed by key {}, which is neither the administrative key nor a writer key of this repository",
                sig.key_id
            ))
        })?;
    if !key.verifies(&manifest_message(repository_id, manifest), &sig) {
        return Err(unauthenticated(
            "its signature does not verify: it was changed outside dr or copied from another repository",
        ));
    }
    Ok(())
}

fn signature_of(v: &Value) -> Option<Signature> {
    serde_json::from_value(v.get("signature")?.clone()).ok()
}

/// An authentication failure ([`ErrorKind::Corrupt`]).
fn unauthenticated(msg: impl Into<String>) -> Error {
    let msg: String = msg.into();
    Error::new(ErrorKind::Corrupt, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_seed(&[n; 32]).unwrap()
    }

    #[test]
    fn canonical_json_ignores_member_order_and_white_space() {
        let a: Value =
            serde_json::from_str(r#"{ "b": [1, {"y": "é\n", "x": null}], "a": true }"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":true,"b":[1,{"x":null,"y":"é\n"}]}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            String::from_utf8(canonical_json(&a)).unwrap(),
            r#"{"a":true,"b":[1,{"x":null,"y":"é\n"}]}"#
        );
    }

    #[test]
    fn a_state_signature_covers_every_member() {
        let admin = key(1);
        let mut state = json!({ "keys": [{ "id": "a" }], "defaults": { "cipher": "aes-256-gcm" } });
        let sig = sign_state(&admin, &state);
        state["signature"] = serde_json::to_value(&sig).unwrap();
        verify_state(admin.public_key(), &state).unwrap();

        let mut added = state.clone();
        added["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "id": "b" }));
        let mut cipher = state.clone();
        cipher["defaults"]["cipher"] = json!("chacha20-poly1305");
        let mut extra = state.clone();
        extra["retention"] = json!({ "keep_last": 1 });
        for changed in [added, cipher, extra] {
            let e = verify_state(admin.public_key(), &changed).unwrap_err();
            assert!(e.message().contains("changed outside dr"), "{e}");
        }
        let e = verify_state(key(2).public_key(), &state).unwrap_err();
        assert!(e.message().contains("does not verify"), "{e}");
    }

    #[test]
    fn a_manifest_signature_ignores_wrapped_keys_only_and_binds_the_repository() {
        let writer = key(3);
        let allowed = [writer.public_key().clone()];
        let mut m = json!({ "id": "x", "pinned": false,
            "encryption": { "cipher": "aes-256-gcm", "wrapped_keys": [{ "key_id": "k" }] } });
        m["signature"] = serde_json::to_value(sign_manifest(&writer, "repo1", &m)).unwrap();
        verify_manifest(&allowed, "repo1", &m).unwrap();

        let mut rewrapped = m.clone();
        rewrapped["encryption"]["wrapped_keys"] = json!([{ "key_id": "other" }]);
        verify_manifest(&allowed, "repo1", &rewrapped).unwrap();

        let mut pinned = m.clone();
        pinned["pinned"] = json!(true);
        assert!(verify_manifest(&allowed, "repo1", &pinned).is_err());
        assert!(verify_manifest(&allowed, "repo2", &m).is_err());
        let e = verify_manifest(&[key(4).public_key().clone()], "repo1", &m).unwrap_err();
        assert!(
            e.message().contains("neither the administrative key"),
            "{e}"
        );
    }

    #[test]
    fn public_keys_round_trip_and_debug_hides_the_secret() {
        let k = key(5);
        let text = k.public_key().to_string();
        assert_eq!(PublicKey::parse(&text).unwrap(), *k.public_key());
        assert!(PublicKey::parse("dr-ed25519-v1-00").is_err());
        assert_eq!(format!("{k:?}"), format!("SigningKey({})", k.key_id()));
    }
}
