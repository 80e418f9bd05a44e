//! The tar counter that re-counts a directory backup's files and bytes during verify, fed in
//! pieces whose sizes come from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut counter = dr_files::TarCounter::new();
    let piece = usize::from(selector) * 13 + 1;
    for chunk in rest.chunks(piece) {
        if counter.feed(chunk).is_err() {
            return;
        }
    }
    let _ = counter.finish();
});
