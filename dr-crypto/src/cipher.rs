//! The AEAD ciphers a stream can be sealed with.

use std::fmt;
use std::str::FromStr;

use dr_core::{Error, ErrorKind, Result};
use ring::aead;
use serde::{Deserialize, Serialize};

/// Bytes in a key of either cipher: data keys, and the master keys that wrap them.
pub const KEY_BYTES: usize = 32;
/// Bytes of the authentication tag either cipher appends to what it seals.
pub const TAG_BYTES: usize = 16;

/// The AEAD cipher that seals a stream's chunks.
///
/// Both take a 256-bit key and a 96-bit nonce and append a 128-bit tag. AES-256-GCM is the
/// default: on any CPU with AES instructions it is the faster of the two. ChaCha20-Poly1305 is
/// the choice for machines without them.
///
/// Spelled `aes-256-gcm` and `chacha20-poly1305` in [`FromStr`], [`Display`](fmt::Display),
/// serde and manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Cipher {
    /// AES-256 in Galois/Counter mode. Stream header id `0x01`.
    #[default]
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    /// ChaCha20 with the Poly1305 authenticator (RFC 8439). Stream header id `0x02`.
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
}

impl Cipher {
    /// Every cipher, in id order.
    pub const ALL: [Cipher; 2] = [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305];

    /// The name used in manifests: `aes-256-gcm` or `chacha20-poly1305`.
    pub fn as_str(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }

    /// The byte that names this cipher in a stream header.
    pub fn id(self) -> u8 {
        match self {
            Cipher::Aes256Gcm => 0x01,
            Cipher::ChaCha20Poly1305 => 0x02,
        }
    }

    /// The cipher a stream header's id byte names, if any.
    pub fn from_id(id: u8) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.id() == id)
    }

    pub(crate) fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Cipher {
    type Err = Error;

    fn from_str(s: &str) -> Result<Cipher> {
        Cipher::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "unknown cipher {s:?}: this dr knows \"aes-256-gcm\" and \"chacha20-poly1305\""
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_names_round_trip_through_from_str_display_and_serde() {
        for c in Cipher::ALL {
            assert_eq!(c.to_string().parse::<Cipher>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(serde_json::from_str::<Cipher>(&json).unwrap(), c);
            assert_eq!(Cipher::from_id(c.id()), Some(c));
        }
        assert_eq!(Cipher::default(), Cipher::Aes256Gcm);
        assert_eq!(
            "aes-128-gcm".parse::<Cipher>().unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(Cipher::from_id(0), None);
    }
}
