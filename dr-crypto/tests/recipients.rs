//! Public-key recipients, mixed recipient kinds, re-wrapping, and the age backend.

mod common;

use common::*;
use dr_core::{Decryptor, Encryptor, ErrorKind, Transform};
use dr_crypto::{
    rewrap, AeadDecryptor, AeadEncryptor, AgeDecryptor, AgeEncryptor, AgeIdentity, Cipher,
    Identity, MasterKey, Recipient, X25519Identity,
};

fn seal_with(enc: &dyn Encryptor, plain: &[u8]) -> (dr_core::EncryptionInfo, Vec<u8>) {
    let (info, mut t) = enc.encrypt_stream().unwrap();
    let (r, out) = run(t.as_mut(), plain, &[7000]);
    r.unwrap();
    (info, out)
}

fn open_all(
    dec: &dyn Decryptor,
    info: &dr_core::EncryptionInfo,
    stored: &[u8],
) -> dr_core::Result<Vec<u8>> {
    let mut t: Box<dyn Transform> = dec.decrypt_stream(info)?;
    let (r, out) = run(t.as_mut(), stored, &[4096]);
    r.map(|()| out)
}

#[test]
fn x25519_and_symmetric_recipients_each_open_the_stream() {
    let sym = MasterKey::generate().unwrap();
    let x = X25519Identity::generate().unwrap();
    let enc = AeadEncryptor::to_recipients(
        Cipher::ChaCha20Poly1305,
        vec![
            Recipient::Symmetric(sym.clone()),
            Recipient::X25519(x.recipient().clone()),
            Recipient::X25519(x.recipient().clone()),
        ],
    )
    .unwrap();
    let plain = bytes(100_000, 3);
    let (info, stored) = seal_with(&enc, &plain);
    assert_eq!(info.wrapped_keys.len(), 2, "duplicates are wrapped once");
    for id in [Identity::from(sym), Identity::from(x)] {
        let dec = AeadDecryptor::with_identities(vec![id]);
        assert_eq!(open_all(&dec, &info, &stored).unwrap(), plain);
    }
    let stranger = AeadDecryptor::with_identities(vec![X25519Identity::generate().unwrap().into()]);
    assert_eq!(
        open_all(&stranger, &info, &stored).unwrap_err().kind(),
        ErrorKind::WrongKey
    );
}

#[test]
fn dr_format_refuses_age_recipients() {
    let r = Recipient::Age(AgeIdentity::generate().recipient());
    let e = AeadEncryptor::to_recipients(Cipher::Aes256Gcm, vec![r]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

#[test]
fn rewrap_adds_and_removes_wraps_without_changing_the_stream() {
    let old = X25519Identity::generate().unwrap();
    let new = X25519Identity::generate().unwrap();
    let enc = AeadEncryptor::to_recipients(
        Cipher::Aes256Gcm,
        vec![Recipient::X25519(old.recipient().clone())],
    )
    .unwrap();
    let plain = bytes(5000, 4);
    let (info, stored) = seal_with(&enc, &plain);
    let old_id: Identity = old.clone().into();
    let new_id: Identity = new.clone().into();
    // Adding needs a key that opens the stream.
    let e = rewrap(&info, &[], &[new_id.to_recipient()], &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey);
    let e = rewrap(
        &info,
        std::slice::from_ref(&new_id),
        &[new_id.to_recipient()],
        &[],
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey);
    let both = rewrap(
        &info,
        std::slice::from_ref(&old_id),
        &[new_id.to_recipient()],
        &[],
    )
    .unwrap();
    assert_eq!(both.wrapped_keys.len(), 2);
    assert_eq!(
        both.wrapped_keys[0], info.wrapped_keys[0],
        "existing wraps are kept as they are"
    );
    // Adding again is a no-op; removing needs no key.
    assert_eq!(
        rewrap(&both, &[], &[new_id.to_recipient()], &[]).unwrap(),
        both
    );
    let only_new = rewrap(&both, &[], &[], &[old.key_id()]).unwrap();
    assert_eq!(only_new.key_ids(), vec![new.key_id().as_str()]);
    let dec = AeadDecryptor::with_identities(vec![new_id]);
    assert_eq!(open_all(&dec, &only_new, &stored).unwrap(), plain);
    let dec = AeadDecryptor::with_identities(vec![old_id]);
    assert_eq!(
        open_all(&dec, &only_new, &stored).unwrap_err().kind(),
        ErrorKind::WrongKey
    );
    // Removing the last wrap is refused.
    let e = rewrap(&only_new, &[], &[], &[new.key_id()]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn age_stream_round_trips_and_detects_tampering_and_truncation() {
    let id = AgeIdentity::generate();
    let enc = AgeEncryptor::new(vec![id.recipient()]).unwrap();
    let plain = bytes(200_000, 5);
    let (info, stored) = seal_with(&enc, &plain);
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    assert_eq!(info.scheme, "age");
    assert_eq!(info.key_ids(), vec![id.key_id().as_str()]);
    let dec = AgeDecryptor::new(vec![id.clone()]);
    assert_eq!(open_all(&dec, &info, &stored).unwrap(), plain);
    // Truncation at a few places, and a flipped byte in the header and in the payload.
    for cut in [0, 10, stored.len() / 2, stored.len() - 1] {
        let e = open_all(&dec, &info, &stored[..cut]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "cut at {cut}: {e}");
    }
    for at in [30, stored.len() / 2, stored.len() - 3] {
        let mut bad = stored.clone();
        bad[at] ^= 0x01;
        let e = open_all(&dec, &info, &bad).unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::WrongKey),
            "flip at {at}: {e}"
        );
    }
    // Another identity: wrong key, naming the one needed.
    let other = AgeDecryptor::new(vec![AgeIdentity::generate()]);
    let e = open_all(&other, &info, &stored).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey);
    assert!(e.message().contains(&id.key_id()), "{e}");
}

#[test]
fn debug_output_of_identities_and_recipients_shows_ids_only() {
    let x = X25519Identity::generate().unwrap();
    let a = AgeIdentity::generate();
    for (debug, file) in [
        (
            format!("{:?}", Identity::from(x.clone())),
            x.to_identity_file(),
        ),
        (
            format!("{:?}", Identity::from(a.clone())),
            a.to_identity_file(),
        ),
    ] {
        let secret = file.lines().find(|l| !l.starts_with('#')).unwrap();
        assert!(!debug.contains(&secret[secret.len() - 16..]), "{debug}");
    }
}
