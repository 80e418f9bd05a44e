//! Wrapped key bodies of both methods, unwrapped with real keys whose ids match, so the
//! fuzzer reaches base64 decoding, length checks and the AEAD open.
#![no_main]

use std::sync::OnceLock;

use dr_core::{Decryptor, EncryptionInfo, WrappedKey};
use dr_crypto::{
    AeadDecryptor, Identity, MasterKey, X25519Identity, SCHEME, WRAP_METHOD, X25519_WRAP_METHOD,
};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static (AeadDecryptor, [String; 2]) {
    static K: OnceLock<(AeadDecryptor, [String; 2])> = OnceLock::new();
    K.get_or_init(|| {
        let sym: Identity = MasterKey::generate().unwrap().into();
        let x: Identity = X25519Identity::generate().unwrap().into();
        let ids = [sym.key_id(), x.key_id()];
        (AeadDecryptor::with_identities(vec![sym, x]), ids)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(body) = std::str::from_utf8(rest) else {
        return;
    };
    let (dec, ids) = keys();
    let which = usize::from(selector & 1);
    let method = if selector & 2 == 0 {
        WRAP_METHOD
    } else {
        X25519_WRAP_METHOD
    };
    let wrapped = WrappedKey {
        key_id: ids[which].clone(),
        method: method.to_owned(),
        body: body.to_owned(),
    };
    let _ = dr_crypto::check_wrapped_key(&wrapped);
    let info = EncryptionInfo {
        scheme: SCHEME.to_owned(),
        cipher: if selector & 4 == 0 {
            "aes-256-gcm"
        } else {
            "chacha20-poly1305"
        }
        .to_owned(),
        wrapped_keys: vec![wrapped],
    };
    // Forging a wrapped key is infeasible: anything the fuzzer builds must fail.
    assert!(dec.decrypt_stream(&info).is_err());
});
