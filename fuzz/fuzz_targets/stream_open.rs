//! The dr-aead-v1 stream reader: header parsing and chunk framing, fed in pieces whose sizes
//! come from the input. Must never panic, and must release no plaintext for input it did not
//! authenticate (here: any input, since the fuzzer cannot forge tags for a random key).
#![no_main]

use std::sync::OnceLock;

use dr_core::{Decryptor, EncryptionInfo, Encryptor};
use dr_crypto::{AeadDecryptor, AeadEncryptor, Cipher, MasterKey};
use libfuzzer_sys::fuzz_target;

fn setup() -> &'static (AeadDecryptor, [EncryptionInfo; 2]) {
    static S: OnceLock<(AeadDecryptor, [EncryptionInfo; 2])> = OnceLock::new();
    S.get_or_init(|| {
        let key = MasterKey::generate().unwrap();
        let info = |c| {
            AeadEncryptor::new(c, vec![key.clone()])
                .unwrap()
                .encrypt_stream()
                .unwrap()
                .0
        };
        let infos = [info(Cipher::Aes256Gcm), info(Cipher::ChaCha20Poly1305)];
        (AeadDecryptor::new(vec![key]), infos)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (dec, infos) = setup();
    let mut opener = dec
        .decrypt_stream(&infos[usize::from(selector & 1)])
        .unwrap();
    let piece = usize::from(selector >> 1) * 37 + 1;
    let mut out = Vec::new();
    for chunk in rest.chunks(piece) {
        if opener.update(chunk, &mut out).is_err() {
            assert!(out.is_empty());
            return;
        }
    }
    assert!(
        opener.finish(&mut out).is_err(),
        "a forged stream was accepted"
    );
    assert!(out.is_empty(), "released unauthenticated plaintext");
});
