//! The pg_dump custom-format archive inspector that re-counts rows during verify, fed in
//! pieces whose sizes come from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut inspector = dr_db::archive::ArchiveInspector::new();
    let piece = usize::from(selector) * 13 + 1;
    for chunk in rest.chunks(piece) {
        if inspector.feed(chunk).is_err() {
            return;
        }
    }
    let _ = inspector.finish();
});
