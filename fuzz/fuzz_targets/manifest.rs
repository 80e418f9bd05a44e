//! Manifest JSON as read from storage.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = dr_core::Manifest::from_json(data) {
        // A manifest that parsed serializes and parses again to the same value.
        let again = dr_core::Manifest::from_json(&m.to_json()).unwrap();
        assert_eq!(again, m);
        for w in &m.encryption.wrapped_keys {
            let _ = dr_crypto::check_wrapped_key(w);
        }
    }
});
