//! dr-repo.json as read from storage, and what dr derives from it: public recipients and
//! passphrase KDF parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = serde_json::from_slice::<dr_core::RepoConfig>(data) else {
        return;
    };
    for k in &config.keys {
        if let Some(r) = &k.recipient {
            let _ = dr_crypto::Recipient::parse(r);
        }
        if let Some(kdf) = &k.kdf {
            if let Ok(mut params) = serde_json::from_value::<dr_crypto::KdfParams>(kdf.clone()) {
                // Derive with at most a few iterations: the parameters are checked, not timed.
                params.iterations = params.iterations.min(2);
                let _ = dr_crypto::MasterKey::from_passphrase(
                    &dr_crypto::Passphrase::new("fuzz".into()),
                    &params,
                );
            }
        }
    }
    let _ = config.defaults.cipher.parse::<dr_crypto::Cipher>();
});
