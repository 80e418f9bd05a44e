//! Helpers shared by the integration tests.
#![allow(dead_code)]

use dr_core::{Decryptor, EncryptionInfo, Encryptor, Result, Transform};
use dr_crypto::{AeadDecryptor, AeadEncryptor, Cipher, MasterKey};

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Feed `input` to `t` in pieces of the sizes in `pieces` (cycled; 0 means an empty update),
/// then finish. Returns the result and everything the transform put out, even on error.
pub fn run(t: &mut dyn Transform, input: &[u8], pieces: &[usize]) -> (Result<()>, Vec<u8>) {
    let mut out = Vec::new();
    let mut rest = input;
    let only_empty = pieces.iter().all(|&p| p == 0);
    let mut sizes = pieces.iter().copied().cycle();
    while !rest.is_empty() {
        let n = match sizes.next() {
            Some(n) if !only_empty => n.min(rest.len()),
            _ => rest.len(),
        };
        let (piece, tail) = rest.split_at(n);
        if let Err(e) = t.update(piece, &mut out) {
            return (Err(e), out);
        }
        rest = tail;
    }
    let r = t.finish(&mut out);
    (r, out)
}

pub fn encryptor(cipher: Cipher, key: &MasterKey, chunk: usize) -> AeadEncryptor {
    AeadEncryptor::new(cipher, vec![key.clone()])
        .unwrap()
        .with_chunk_bytes(chunk)
}

pub fn seal(enc: &AeadEncryptor, plain: &[u8], pieces: &[usize]) -> (EncryptionInfo, Vec<u8>) {
    let (info, mut t) = enc.encrypt_stream().unwrap();
    let (r, out) = run(t.as_mut(), plain, pieces);
    r.unwrap();
    (info, out)
}

/// Decrypt `stored` in one piece.
pub fn open(key: &MasterKey, info: &EncryptionInfo, stored: &[u8]) -> (Result<()>, Vec<u8>) {
    open_with(
        &AeadDecryptor::new(vec![key.clone()]),
        info,
        stored,
        &[usize::MAX],
    )
}

pub fn open_with(
    dec: &AeadDecryptor,
    info: &EncryptionInfo,
    stored: &[u8],
    pieces: &[usize],
) -> (Result<()>, Vec<u8>) {
    match dec.decrypt_stream(info) {
        Ok(mut t) => run(t.as_mut(), stored, pieces),
        Err(e) => (Err(e), Vec::new()),
    }
}
