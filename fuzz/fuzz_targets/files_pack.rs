//! A pack index and the pack it describes, both untrusted: parsing the index must never
//! panic, and neither must reading its blobs out of arbitrary plaintext (the part after the
//! first 0xff byte stands in for a decrypted pack).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (index, plain) = match data.iter().position(|b| *b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(index) = dr_files::dedup::PackIndex::from_json(index) {
        let pack = dr_files::dedup::OpenPack::from_plaintext(plain.to_vec());
        for blob in &index.blobs {
            let _ = pack.chunk(blob, None);
        }
    }
    let _ = dr_files::dedup::DedupKey::from_file_text(&String::from_utf8_lossy(data));
});
