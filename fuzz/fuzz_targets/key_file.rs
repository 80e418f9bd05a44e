//! Key files and identity files of every kind (symmetric, X25519, age), and public
//! recipients. Must never panic; errors must not echo the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(identity) = dr_crypto::Identity::from_text(text) {
        // Whatever parsed must round-trip through its own file format.
        let again = dr_crypto::Identity::from_text(&identity.to_file_text()).unwrap();
        assert_eq!(again.key_id(), identity.key_id());
    }
    if let Ok(r) = dr_crypto::Recipient::parse(text) {
        if let Some(t) = r.public_text() {
            assert_eq!(
                dr_crypto::Recipient::parse(&t).unwrap().key_id(),
                r.key_id()
            );
        }
    }
});
