//! Known-answer vectors and the parts of the format that need fixed inputs to test.
//!
//! The expected values come from `tools/reference.py vector`, an independent Python
//! implementation written from FORMAT.md, so these tests tie the code, the document and a
//! second implementation together.

use dr_core::{Decryptor, ErrorKind, Transform};
use ring::digest;

use crate::stream::{Header, StreamOpener, StreamSealer};
use crate::{AeadDecryptor, AeadEncryptor, Cipher, MasterKey};

fn seq(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start + i as u8)
}

struct Expected {
    cipher: Cipher,
    wrapped: &'static str,
    stored_sha256: &'static str,
    stored_tail: &'static str,
    empty_stream: &'static str,
}

const KEY_ID: &str = "b791a730831f88ce";

const EXPECTED: [Expected; 2] = [
    Expected {
        cipher: Cipher::Aes256Gcm,
        wrapped: "YGFiY2RlZmdoaWprgh28Y5ZFXJsUrssGpbd3TZ9rdwrz4d0vCSc3tTLJTFJu0rsKfJVGnauw73i8C2R4",
        stored_sha256: "33107ecb7d6d058bcca688c7c0965ce8a653f18f18cf6cb96879ea0cdfc7204b",
        stored_tail: "3f2936ac92deba448afd7fe13437a59344671c0c4f1889bcfa6697adc9831d5d",
        empty_stream: "44524145414400010100000400404142434445464748494a4b4c4d4e4f50515253\
                       5455565758595a5b5c5d5e5f76abcb67b207b14669d8c7ec84f05fa4",
    },
    Expected {
        cipher: Cipher::ChaCha20Poly1305,
        wrapped: "YGFiY2RlZmdoaWprgh28Y5ZFXJsUrssGpbd3TZ9rdwrz4d0vCSc3tTLJTFKJAWHOFYf+XZrCEZndwXFx",
        stored_sha256: "cf21b7008a28b57f786e0daf3d9b6b7e4919ddfb4c6ec8fef2d69bfe78555695",
        stored_tail: "f94a7998333e475287f82b930e136bf272e1049cbaca294493c61602eaf5cdb1",
        empty_stream: "44524145414400010200000400404142434445464748494a4b4c4d4e4f50515253\
                       5455565758595a5b5c5d5e5f28c74f72956bce4ec424d393785a1a60",
    },
];

fn seal_fixed(cipher: Cipher, plain: &[u8]) -> (dr_core::EncryptionInfo, Vec<u8>) {
    let master = MasterKey::from_bytes_for_test_vectors(seq(0));
    let enc = AeadEncryptor::new(cipher, vec![master])
        .unwrap()
        .with_chunk_bytes(1024);
    let nonce: [u8; 12] = std::array::from_fn(|i| 96 + i as u8);
    let (info, mut sealer) = enc
        .start_for_test_vectors(&seq(32), seq(64), &[nonce])
        .unwrap();
    let mut out = Vec::new();
    sealer.update(plain, &mut out).unwrap();
    sealer.finish(&mut out).unwrap();
    (info, out)
}

#[test]
fn stream_and_wrap_match_the_reference_vector() {
    let plain: Vec<u8> = (0..2100).map(|i| (i % 251) as u8).collect();
    for e in EXPECTED {
        let (info, stored) = seal_fixed(e.cipher, &plain);
        assert_eq!(info.scheme, "dr-aead-v1");
        assert_eq!(info.cipher, e.cipher.as_str());
        assert_eq!(info.wrapped_keys[0].key_id, KEY_ID);
        assert_eq!(info.wrapped_keys[0].method, "aes-256-gcm-kw");
        assert_eq!(info.wrapped_keys[0].body, e.wrapped);
        assert_eq!(stored.len(), 2193);
        assert_eq!(
            hex::encode(digest::digest(&digest::SHA256, &stored)),
            e.stored_sha256
        );
        assert_eq!(hex::encode(&stored[stored.len() - 32..]), e.stored_tail);
        let empty_expected = e.empty_stream.replace(' ', "");
        assert_eq!(hex::encode(seal_fixed(e.cipher, b"").1), empty_expected);

        let master = MasterKey::from_bytes_for_test_vectors(seq(0));
        let mut opener = AeadDecryptor::new(vec![master])
            .decrypt_stream(&info)
            .unwrap();
        let mut out = Vec::new();
        opener.update(&stored, &mut out).unwrap();
        opener.finish(&mut out).unwrap();
        assert_eq!(out, plain);
    }
}

fn header() -> Header {
    Header {
        cipher: Cipher::Aes256Gcm,
        chunk_bytes: 1024,
        salt: seq(64),
    }
}

#[test]
fn sealer_refuses_to_use_the_last_counter_value() {
    let mut sealer = StreamSealer::new(&seq(32), header());
    sealer.set_counter_for_test(u64::MAX - 1);
    let mut out = Vec::new();
    sealer.update(&[7; 1500], &mut out).unwrap();
    let e = sealer.finish(&mut out).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.message().contains("chunk counter"), "{e}");
}

#[test]
fn opener_fails_on_counter_overflow() {
    let mut sealer = StreamSealer::new(&seq(32), header());
    sealer.set_counter_for_test(u64::MAX - 1);
    let mut stored = Vec::new();
    sealer.update(b"tail", &mut stored).unwrap();
    sealer.finish(&mut stored).unwrap();

    let mut opener = StreamOpener::new(Box::new(seq(32)), Cipher::Aes256Gcm);
    opener.set_counter_for_test(u64::MAX - 1);
    let mut out = Vec::new();
    opener.update(&stored, &mut out).unwrap();
    opener.finish(&mut out).unwrap();
    assert_eq!(out, b"tail");

    let mut opener = StreamOpener::new(Box::new(seq(32)), Cipher::Aes256Gcm);
    opener.set_counter_for_test(u64::MAX);
    let mut out = Vec::new();
    opener.update(&stored, &mut out).unwrap();
    let e = opener.finish(&mut out).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.message().contains("chunk counter"), "{e}");
    assert!(out.is_empty());
}

#[test]
fn x25519_wrap_matches_the_reference_vector() {
    use crate::x25519::X25519Identity;
    let identity = X25519Identity::from_secret_bytes(std::array::from_fn(|i| 0x70 + i as u8));
    let ephemeral: [u8; 32] = std::array::from_fn(|i| 0x90 + i as u8);
    assert_eq!(
        identity.recipient().to_string(),
        "dr-x25519-v1-I7e7jJGuAIcR-xKEZ4C83x4GX4Ib3-xJ9X58fc1MSCM"
    );
    assert_eq!(identity.key_id(), "f5039951f2a0ab03");
    let w = identity
        .recipient()
        .wrap_with_ephemeral(&seq(32), Cipher::Aes256Gcm, ephemeral)
        .unwrap();
    assert_eq!(w.key_id, "f5039951f2a0ab03");
    assert_eq!(w.method, "x25519-hkdf-aes-256-gcm");
    assert_eq!(
        w.body,
        "n9etbc/0KY3T+W1bGyr5EKBTWxSI1/j6uzSamCiAthVM3VdZCsP7j1QstKEI1hieEAs3yqXUPeHkCwvQb4Nle1dZEWqi6fYU/WptjUAFo1U="
    );
    assert_eq!(*identity.unwrap(&w, Cipher::Aes256Gcm).unwrap(), seq(32));
}
