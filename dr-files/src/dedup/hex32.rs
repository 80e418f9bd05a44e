//! 32-byte values (chunk ids, BLAKE3 checksums) held as bytes in memory and written as 64
//! lowercase hex digits in JSON: the stored format is unchanged, and each value costs 32
//! bytes instead of a 64-byte heap string and its 24-byte handle.

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserializer, Serializer};

/// Parse 64 hex digits.
pub(crate) fn parse(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    (text.len() == 64 && hex::decode_to_slice(text, &mut out).is_ok()).then_some(out)
}

/// `#[serde(with = "hex32")]` for one value.
pub(crate) fn serialize<S: Serializer>(value: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    let mut text = [0u8; 64];
    hex::encode_to_slice(value, &mut text).expect("64 digits for 32 bytes");
    s.serialize_str(std::str::from_utf8(&text).expect("hex is ASCII"))
}

/// `#[serde(with = "hex32")]` for one value.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    struct Hex;
    impl Visitor<'_> for Hex {
        type Value = [u8; 32];
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("64 hex digits")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<[u8; 32], E> {
            parse(text).ok_or_else(|| E::custom(format!("{text:?} is not 64 hex digits")))
        }
    }
    d.deserialize_str(Hex)
}

/// `#[serde(with = "hex32::list")]` for a list of values.
pub(crate) mod list {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(values: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        struct One<'a>(&'a [u8; 32]);
        impl serde::Serialize for One<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::serialize(self.0, s)
            }
        }
        let mut seq = s.serialize_seq(Some(values.len()))?;
        for v in values {
            seq.serialize_element(&One(v))?;
        }
        seq.end()
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        struct Ids;
        impl<'de> Visitor<'de> for Ids {
            type Value = Vec<[u8; 32]>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of 64-hex-digit ids")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                struct One([u8; 32]);
                impl<'de> serde::Deserialize<'de> for One {
                    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                        super::deserialize(d).map(One)
                    }
                }
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(One(id)) = seq.next_element()? {
                    out.push(id);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Ids)
    }
}
