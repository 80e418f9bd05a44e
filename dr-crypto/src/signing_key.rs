//! Files of signing keys (`DR-ED25519-SECRET-V1-…`): the repository's administrative key and
//! backup hosts' writer keys. The signatures themselves are dr-core's ([`dr_core::signing`]).

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use dr_core::signing::SigningKey;
use dr_core::{Error, Result};
use zeroize::Zeroizing;

use crate::key_file::{read_secret_file, write_secret_file, KeyText};
use crate::random::fill_random;

/// The prefix of the secret line of a signing key file.
pub const SIGNING_KEY_PREFIX: &str = "DR-ED25519-SECRET-V1-";

/// Write a new random signing key to `path` (mode 0600, never overwriting) and return it.
pub fn generate_signing_key_file(path: &Path) -> Result<SigningKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    fill_random(&mut seed[..])?;
    let key = SigningKey::from_seed(&seed)?;
    let text = Zeroizing::new(format!(
        "# dr signing key id {}: its holder can sign this repository's state (an \
         administrative key) or backups (a writer key)\n\
         # public key: {}\n{SIGNING_KEY_PREFIX}{}\n",
        key.key_id(),
        key.public_key(),
        *Zeroizing::new(URL_SAFE_NO_PAD.encode(&seed[..]))
    ));
    write_secret_file(path, &text)?;
    Ok(key)
}

/// Read a signing key file. Errors name the path and never repeat the secret.
pub fn read_signing_key_file(path: &Path) -> Result<SigningKey> {
    read_secret_file(path, parse)
}

fn parse(text: &str) -> Result<SigningKey> {
    let parsed = KeyText::parse(text)?;
    let encoded = parsed
        .line
        .strip_prefix(SIGNING_KEY_PREFIX)
        .ok_or_else(|| {
            Error::invalid(format!(
                "not a signing key file: its key line does not start with {SIGNING_KEY_PREFIX} \
             (create one with `drctl keygen --signing`)"
            ))
        })?;
    let seed = Zeroizing::new(URL_SAFE_NO_PAD.decode(encoded).map_err(|_| {
        Error::invalid("the signing key file is damaged: its key line is not unpadded base64url")
    })?);
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(seed.as_slice().try_into().map_err(|_| {
        Error::invalid("the signing key file is damaged: its key line does not hold 32 bytes")
    })?);
    let key = SigningKey::from_seed(&seed)?;
    parsed.check_id(&key.key_id())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signing_key_file_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.key");
        let key = generate_signing_key_file(&path).unwrap();
        assert_eq!(read_signing_key_file(&path).unwrap().key_id(), key.key_id());
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().last().unwrap();
        let last = line.chars().last().unwrap();
        let damaged = text.replace(
            line,
            &format!(
                "{}{}",
                &line[..line.len() - 1],
                if last == 'A' { 'B' } else { 'A' }
            ),
        );
        assert!(parse(&damaged).is_err());
        assert!(
            generate_signing_key_file(&path).is_err(),
            "never overwrites"
        );
    }
}
