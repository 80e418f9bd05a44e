//! The age-format reader (header, stanzas, MAC, payload framing) behind dr's age decryptor.
#![no_main]

use std::sync::OnceLock;

use dr_core::{Decryptor, EncryptionInfo, WrappedKey};
use dr_crypto::{AgeDecryptor, AgeIdentity, AGE_SCHEME, AGE_STANZA_METHOD};
use libfuzzer_sys::fuzz_target;

fn setup() -> &'static (AgeDecryptor, EncryptionInfo) {
    static S: OnceLock<(AgeDecryptor, EncryptionInfo)> = OnceLock::new();
    S.get_or_init(|| {
        let identity = AgeIdentity::generate();
        let info = EncryptionInfo {
            scheme: AGE_SCHEME.into(),
            cipher: "chacha20-poly1305".into(),
            wrapped_keys: vec![WrappedKey {
                key_id: identity.key_id(),
                method: AGE_STANZA_METHOD.into(),
                body: identity.recipient().to_string(),
            }],
        };
        (AgeDecryptor::new(vec![identity]), info)
    })
}

fuzz_target!(|data: &[u8]| {
    let (dec, info) = setup();
    let mut opener = dec.decrypt_stream(info).unwrap();
    let mut out = Vec::new();
    for chunk in data.chunks(4096) {
        if opener.update(chunk, &mut out).is_err() {
            break;
        }
    }
    let _ = opener.finish(&mut out);
    assert!(
        out.is_empty(),
        "released plaintext the fuzzer cannot have encrypted"
    );
});
