//! The dr-aead-v1 stream: round trips, and every kind of tampering fails.

mod common;

use common::*;
use dr_core::{Encryptor, ErrorKind};
use dr_crypto::{AeadEncryptor, Cipher, MasterKey, HEADER_BYTES, TAG_BYTES};
use proptest::prelude::*;

fn piece_sizes(boundary: usize) -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![
            Just(boundary - 1),
            Just(boundary),
            Just(boundary + 1),
            Just(1usize),
            Just(0usize),
            1..4 * boundary,
        ],
        1..24,
    )
}

/// (chunk size, plaintext length, seed, encrypt pieces, decrypt pieces)
fn round_trip_case() -> impl Strategy<Value = (usize, usize, u64, Vec<usize>, Vec<usize>)> {
    (1024usize..=8192).prop_flat_map(|cs| {
        let len = prop_oneof![
            0usize..200_000,
            (0usize..24, 0usize..=2).prop_map(move |(k, d)| (k * cs + d).saturating_sub(1)),
        ];
        (
            Just(cs),
            len,
            any::<u64>(),
            piece_sizes(cs),
            piece_sizes(cs + TAG_BYTES),
        )
    })
}

fn round_trips(cipher: Cipher, cs: usize, len: usize, seed: u64, enc_p: &[usize], dec_p: &[usize]) {
    let key = MasterKey::generate().unwrap();
    let plain = bytes(len, seed);
    let (info, stored) = seal(&encryptor(cipher, &key, cs), &plain, enc_p);
    let chunks = len.div_ceil(cs).max(1);
    assert_eq!(stored.len(), HEADER_BYTES + len + chunks * TAG_BYTES);
    let dec = dr_crypto::AeadDecryptor::new(vec![key]);
    let (r, out) = open_with(&dec, &info, &stored, dec_p);
    r.unwrap();
    assert!(out == plain, "plaintext differs after a round trip");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn aes_stream_round_trips_any_plaintext_at_any_split((cs, len, seed, e, d) in round_trip_case()) {
        round_trips(Cipher::Aes256Gcm, cs, len, seed, &e, &d);
    }

    #[test]
    fn chacha_stream_round_trips_any_plaintext_at_any_split((cs, len, seed, e, d) in round_trip_case()) {
        round_trips(Cipher::ChaCha20Poly1305, cs, len, seed, &e, &d);
    }
}

#[test]
fn empty_plaintext_is_one_empty_final_chunk() {
    for cipher in Cipher::ALL {
        let key = MasterKey::generate().unwrap();
        let (info, stored) = seal(&encryptor(cipher, &key, 1024), b"", &[]);
        assert_eq!(stored.len(), HEADER_BYTES + TAG_BYTES);
        let (r, out) = open(&key, &info, &stored);
        r.unwrap();
        assert!(out.is_empty());
    }
}

#[test]
fn large_updates_and_default_chunks_round_trip() {
    let key = MasterKey::generate().unwrap();
    let enc = AeadEncryptor::new(Cipher::Aes256Gcm, vec![key.clone()]).unwrap();
    let plain = bytes(3 * 65536 + 7, 7);
    let (info, stored) = seal(&enc, &plain, &[usize::MAX]);
    let (r, out) = open(&key, &info, &stored);
    r.unwrap();
    assert!(out == plain);
}

#[test]
fn two_streams_of_the_same_plaintext_differ() {
    let key = MasterKey::generate().unwrap();
    let enc = encryptor(Cipher::Aes256Gcm, &key, 1024);
    let plain = bytes(5000, 1);
    let (a_info, a) = seal(&enc, &plain, &[usize::MAX]);
    let (b_info, b) = seal(&enc, &plain, &[usize::MAX]);
    assert_ne!(a, b);
    assert_ne!(a_info, b_info);
}

const CS: usize = 1024;
const STORED_CHUNK: usize = CS + TAG_BYTES;

/// A stream of three full 1 KiB chunks (the last one flagged final) and its key.
fn small_stream(cipher: Cipher) -> (MasterKey, dr_core::EncryptionInfo, Vec<u8>, Vec<u8>) {
    let key = MasterKey::generate().unwrap();
    let plain = bytes(3 * CS, 42);
    let (info, stored) = seal(&encryptor(cipher, &key, CS), &plain, &[usize::MAX]);
    assert_eq!(stored.len(), HEADER_BYTES + 3 * STORED_CHUNK);
    (key, info, plain, stored)
}

/// Decrypting `stored` must fail, and whatever came out must be a prefix of the plaintext.
#[track_caller]
fn assert_fails(
    key: &MasterKey,
    info: &dr_core::EncryptionInfo,
    stored: &[u8],
    plain: &[u8],
) -> dr_core::Error {
    for pieces in [&[usize::MAX][..], &[STORED_CHUNK, 1, 7]] {
        let dec = dr_crypto::AeadDecryptor::new(vec![key.clone()]);
        let (r, out) = open_with(&dec, info, stored, pieces);
        assert!(r.is_err(), "tampered stream opened");
        assert!(
            plain.starts_with(&out),
            "unauthenticated bytes were released"
        );
    }
    open(key, info, stored).0.unwrap_err()
}

#[test]
fn every_single_bit_flip_fails() {
    for cipher in Cipher::ALL {
        let (key, info, plain, stored) = small_stream(cipher);
        let dec = dr_crypto::AeadDecryptor::new(vec![key.clone()]);
        for i in 0..stored.len() {
            for bit in 0..8 {
                let mut bad = stored.clone();
                bad[i] ^= 1 << bit;
                let (r, out) = open_with(&dec, &info, &bad, &[usize::MAX]);
                let e = r.expect_err("a flipped bit went unnoticed");
                assert_eq!(e.kind(), ErrorKind::Corrupt, "byte {i} bit {bit}: {e}");
                assert!(
                    plain.starts_with(&out),
                    "unauthenticated bytes were released"
                );
            }
        }
    }
}

#[test]
fn bit_flip_in_a_chunk_names_that_chunk() {
    let (key, info, plain, mut stored) = small_stream(Cipher::Aes256Gcm);
    stored[HEADER_BYTES + STORED_CHUNK + 5] ^= 0x20;
    let e = assert_fails(&key, &info, &stored, &plain);
    assert_eq!(
        e.message(),
        "authentication failed at chunk 1: the stored data was modified, truncated, or belongs \
         to another backup"
    );
}

#[test]
fn bit_flip_in_the_header_fails_at_the_first_chunk() {
    let (key, info, plain, mut stored) = small_stream(Cipher::Aes256Gcm);
    stored[HEADER_BYTES - 1] ^= 1;
    let e = assert_fails(&key, &info, &stored, &plain);
    assert!(e.message().contains("at chunk 0"), "{e}");
}

#[test]
fn truncated_stream_fails_at_every_length() {
    for cipher in Cipher::ALL {
        let (key, info, plain, stored) = small_stream(cipher);
        for len in 0..stored.len() {
            let e = assert_fails(&key, &info, &stored[..len], &plain);
            assert_eq!(e.kind(), ErrorKind::Corrupt, "length {len}: {e}");
        }
    }
}

#[test]
fn truncation_at_a_chunk_boundary_is_reported_as_truncation() {
    let (key, info, plain, stored) = small_stream(Cipher::Aes256Gcm);
    let e = assert_fails(
        &key,
        &info,
        &stored[..HEADER_BYTES + 2 * STORED_CHUNK],
        &plain,
    );
    assert!(
        e.message().contains("truncated") && e.message().contains("chunk 1"),
        "{e}"
    );
    let e = assert_fails(&key, &info, &stored[..HEADER_BYTES], &plain);
    assert!(e.message().contains("truncated"), "{e}");
    let e = assert_fails(&key, &info, &stored[..10], &plain);
    assert!(e.message().contains("header"), "{e}");
}

#[test]
fn appended_bytes_fail() {
    for cipher in Cipher::ALL {
        let (key, info, plain, stored) = small_stream(cipher);
        for extra in [
            &[0u8][..],
            &[1, 2, 3],
            &stored[HEADER_BYTES..HEADER_BYTES + STORED_CHUNK],
        ] {
            let mut bad = stored.clone();
            bad.extend_from_slice(extra);
            let e = assert_fails(&key, &info, &bad, &plain);
            assert!(e.message().contains("after the final chunk 2"), "{e}");
        }
    }
    // A short final chunk with a byte appended.
    let key = MasterKey::generate().unwrap();
    let plain = bytes(CS + 100, 3);
    let (info, mut stored) = seal(
        &encryptor(Cipher::Aes256Gcm, &key, CS),
        &plain,
        &[usize::MAX],
    );
    stored.push(0);
    assert_eq!(
        assert_fails(&key, &info, &stored, &plain).kind(),
        ErrorKind::Corrupt
    );
}

#[test]
fn swapping_headers_between_two_streams_fails() {
    let (key, info_a, plain_a, a) = small_stream(Cipher::Aes256Gcm);
    let enc = encryptor(Cipher::Aes256Gcm, &key, CS);
    let (info_b, b) = seal(&enc, &plain_a, &[usize::MAX]);
    let mut a_header_b_chunks = a[..HEADER_BYTES].to_vec();
    a_header_b_chunks.extend_from_slice(&b[HEADER_BYTES..]);
    let e = assert_fails(&key, &info_a, &a_header_b_chunks, &plain_a);
    assert!(e.message().contains("at chunk 0"), "{e}");
    assert_fails(&key, &info_b, &a_header_b_chunks, &plain_a);
}

#[test]
fn swapping_dropping_or_duplicating_chunks_fails() {
    for cipher in Cipher::ALL {
        let (key, info, plain, stored) = small_stream(cipher);
        let chunk = |i: usize| &stored[HEADER_BYTES + i * STORED_CHUNK..][..STORED_CHUNK];
        let header = &stored[..HEADER_BYTES];
        for order in [
            vec![1, 0, 2],
            vec![0, 2, 1],
            vec![2, 1, 0],
            vec![0, 0, 1, 2],
            vec![0, 1, 1, 2],
            vec![0, 1, 2, 2],
            vec![0, 2],
            vec![1, 2],
            vec![2],
            vec![0, 1, 2, 0],
        ] {
            let mut bad = header.to_vec();
            for &i in &order {
                bad.extend_from_slice(chunk(i));
            }
            let e = assert_fails(&key, &info, &bad, &plain);
            assert_eq!(e.kind(), ErrorKind::Corrupt, "order {order:?}: {e}");
        }
    }
}

#[test]
fn splicing_chunks_from_another_stream_under_the_same_key_fails() {
    let (key, info, plain, a) = small_stream(Cipher::Aes256Gcm);
    let (_, b) = seal(
        &encryptor(Cipher::Aes256Gcm, &key, CS),
        &plain,
        &[usize::MAX],
    );
    let mut bad = a.clone();
    bad[HEADER_BYTES + STORED_CHUNK..][..STORED_CHUNK]
        .copy_from_slice(&b[HEADER_BYTES + STORED_CHUNK..][..STORED_CHUNK]);
    let e = assert_fails(&key, &info, &bad, &plain);
    assert!(e.message().contains("at chunk 1"), "{e}");
}

#[test]
fn header_with_wrong_magic_unknown_cipher_or_bad_chunk_size_is_corrupt() {
    let (key, info, plain, stored) = small_stream(Cipher::Aes256Gcm);
    let cases: [(usize, u8, &str); 5] = [
        (0, b'X', "magic"),
        (7, 2, "version"),
        (8, 9, "unknown cipher id"),
        (8, 2, "manifest says aes-256-gcm"),
        (9, 0x7f, "chunk size"),
    ];
    for (at, value, says) in cases {
        let mut bad = stored.clone();
        bad[at] = value;
        let e = assert_fails(&key, &info, &bad, &plain);
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.message().contains(says), "{e}");
    }
    // Chunk size below 1 KiB.
    let mut bad = stored.clone();
    bad[9..13].copy_from_slice(&1023u32.to_be_bytes());
    assert!(assert_fails(&key, &info, &bad, &plain)
        .message()
        .contains("chunk size"));
}

#[test]
fn chunk_size_outside_1_kib_to_16_mib_is_refused() {
    let key = MasterKey::generate().unwrap();
    for n in [0, 1023, 16 * 1024 * 1024 + 1] {
        let e = encryptor(Cipher::Aes256Gcm, &key, n)
            .encrypt_stream()
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }
    for n in [1024, 16 * 1024 * 1024] {
        encryptor(Cipher::Aes256Gcm, &key, n)
            .encrypt_stream()
            .unwrap();
    }
}

/// The pieces of one backup share its data key; each opens only as the piece it was
/// sealed as, so pieces swapped in storage fail instead of restoring one table's rows
/// into another.
#[test]
fn a_piece_opens_only_under_its_own_name() {
    use dr_core::Decryptor;
    for cipher in Cipher::ALL {
        let key = MasterKey::generate().unwrap();
        let enc = encryptor(cipher, &key, CS);
        let (info, sealer) = enc.encrypt_pieces().unwrap();
        let plain = bytes(3 * CS + 7, 9);
        let seal_as = |name: &str| {
            let mut t = sealer.seal(name).unwrap();
            let (r, stored) = run(t.as_mut(), &plain, &[usize::MAX]);
            r.unwrap();
            stored
        };
        let a = seal_as("3001.dat");
        let b = seal_as("3002.dat");
        assert_ne!(a, b, "same plaintext, different pieces, different bytes");
        let dec = dr_crypto::AeadDecryptor::new(vec![key.clone()]);
        let mut opener = dec.decrypt_piece(&info, "3001.dat").unwrap();
        let (r, opened) = run(opener.as_mut(), &a, &[usize::MAX]);
        r.unwrap();
        assert_eq!(opened, plain);
        let mut opener = dec.decrypt_piece(&info, "3001.dat").unwrap();
        let (r, opened) = run(opener.as_mut(), &b, &[usize::MAX]);
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.message().contains("another piece"), "{e}");
        assert!(opened.is_empty(), "nothing released from a swapped piece");
    }
}
