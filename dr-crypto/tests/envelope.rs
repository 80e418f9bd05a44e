//! Wrapping data keys for master keys, and choosing the key that opens a stream.

mod common;

use common::*;
use dr_core::{Decryptor, Encryptor, ErrorKind};
use dr_crypto::{AeadDecryptor, AeadEncryptor, Cipher, MasterKey, SCHEME, WRAP_METHOD};

#[test]
fn encryption_info_names_scheme_cipher_and_every_key() {
    let a = MasterKey::generate().unwrap();
    let b = MasterKey::generate().unwrap();
    let enc = AeadEncryptor::new(
        Cipher::ChaCha20Poly1305,
        vec![a.clone(), b.clone(), a.clone()],
    )
    .unwrap();
    let (info, _) = enc.encrypt_stream().unwrap();
    assert_eq!(info.scheme, SCHEME);
    assert_eq!(info.cipher, "chacha20-poly1305");
    assert_eq!(info.key_ids(), vec![a.key_id(), b.key_id()]);
    for w in &info.wrapped_keys {
        assert_eq!(w.method, WRAP_METHOD);
        assert_eq!(w.body.len(), 80, "base64 of 12 + 32 + 16 bytes");
    }
}

#[test]
fn encryptor_needs_at_least_one_key() {
    let e = AeadEncryptor::new(Cipher::Aes256Gcm, vec![]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn stream_wrapped_for_two_keys_opens_with_either() {
    let a = MasterKey::generate().unwrap();
    let b = MasterKey::generate().unwrap();
    let enc = AeadEncryptor::new(Cipher::Aes256Gcm, vec![a.clone(), b.clone()])
        .unwrap()
        .with_chunk_bytes(1024);
    let plain = bytes(4000, 9);
    let (info, stored) = seal(&enc, &plain, &[usize::MAX]);
    for keys in [
        vec![a.clone()],
        vec![b.clone()],
        vec![MasterKey::generate().unwrap(), b],
    ] {
        let (r, out) = open_with(&AeadDecryptor::new(keys), &info, &stored, &[333]);
        r.unwrap();
        assert!(out == plain);
    }
}

#[test]
fn wrong_key_fails_with_wrong_key_naming_the_needed_key_id() {
    let right = MasterKey::generate().unwrap();
    let wrong = MasterKey::generate().unwrap();
    let (info, _) = encryptor(Cipher::Aes256Gcm, &right, 1024)
        .encrypt_stream()
        .unwrap();
    let e = AeadDecryptor::new(vec![wrong.clone()])
        .decrypt_stream(&info)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::WrongKey);
    assert!(e.message().contains(&right.key_id()), "{e}");
    assert!(e.message().contains(&wrong.key_id()), "{e}");
    let e = AeadDecryptor::new(vec![])
        .decrypt_stream(&info)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::WrongKey);
}

#[test]
fn a_key_claiming_the_right_id_but_different_bytes_fails_to_unwrap() {
    let right = MasterKey::generate().unwrap();
    let other = MasterKey::generate().unwrap();
    let (mut info, _) = encryptor(Cipher::Aes256Gcm, &right, 1024)
        .encrypt_stream()
        .unwrap();
    info.wrapped_keys[0].key_id = other.key_id();
    let e = AeadDecryptor::new(vec![other.clone()])
        .decrypt_stream(&info)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::WrongKey);
    assert_eq!(
        e.message(),
        format!(
            "key {} failed to unwrap the data key: wrong key or tampered manifest",
            other.key_id()
        )
    );
}

#[test]
fn tampered_wrapped_key_or_manifest_cipher_fails_as_wrong_key() {
    let key = MasterKey::generate().unwrap();
    let (info, _) = encryptor(Cipher::Aes256Gcm, &key, 1024)
        .encrypt_stream()
        .unwrap();
    let dec = AeadDecryptor::new(vec![key]);

    let mut bad = info.clone();
    let mut body: Vec<char> = bad.wrapped_keys[0].body.chars().collect();
    body[20] = if body[20] == 'A' { 'B' } else { 'A' };
    bad.wrapped_keys[0].body = body.into_iter().collect();
    assert_eq!(
        dec.decrypt_stream(&bad).err().unwrap().kind(),
        ErrorKind::WrongKey
    );

    // The cipher name is bound to the wrapped key.
    let mut bad = info.clone();
    bad.cipher = "chacha20-poly1305".into();
    assert_eq!(
        dec.decrypt_stream(&bad).err().unwrap().kind(),
        ErrorKind::WrongKey
    );

    let mut bad = info.clone();
    bad.wrapped_keys[0].body.truncate(40);
    assert_eq!(
        dec.decrypt_stream(&bad).err().unwrap().kind(),
        ErrorKind::Corrupt
    );

    let mut bad = info.clone();
    bad.wrapped_keys[0].method = "rot13".into();
    assert_eq!(
        dec.decrypt_stream(&bad).err().unwrap().kind(),
        ErrorKind::Unsupported
    );
}

#[test]
fn unknown_scheme_or_cipher_is_unsupported() {
    let key = MasterKey::generate().unwrap();
    let (info, _) = encryptor(Cipher::Aes256Gcm, &key, 1024)
        .encrypt_stream()
        .unwrap();
    let dec = AeadDecryptor::new(vec![key]);
    for (scheme, cipher) in [
        ("dr-aead-v2", "aes-256-gcm"),
        ("none", ""),
        (SCHEME, "aes-128-gcm"),
    ] {
        let mut bad = info.clone();
        bad.scheme = scheme.into();
        bad.cipher = cipher.into();
        assert_eq!(
            dec.decrypt_stream(&bad).err().unwrap().kind(),
            ErrorKind::Unsupported
        );
    }
}

#[test]
fn debug_of_encryptor_and_decryptor_shows_key_ids_only() {
    let key = MasterKey::generate().unwrap();
    let secret = key_hex(&key);
    let enc = AeadEncryptor::new(Cipher::Aes256Gcm, vec![key.clone()]).unwrap();
    let dec = AeadDecryptor::new(vec![key.clone()]);
    for text in [format!("{enc:?}"), format!("{dec:?}"), format!("{key:?}")] {
        assert!(text.contains(&key.key_id()), "{text}");
        assert!(!text.contains(&secret));
    }
}

/// The key's bytes as hex, recovered from its key file text.
fn key_hex(key: &MasterKey) -> String {
    use base64::Engine;
    let text = key.to_key_file();
    let line = text.lines().find(|l| l.starts_with("DR-KEY-V1-")).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&line["DR-KEY-V1-".len()..])
        .unwrap();
    hex::encode(raw)
}
