//! The snapshot tree of a deduplicated file backup (JSON lines): parsing must never panic,
//! and every path it accepts must be one a restore may write under its target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = dr_files::dedup::Tree::from_json_lines(data) {
        for e in &tree.entries {
            assert!(dr_files::dedup::check_relative_path(&e.path).is_ok());
            assert!(!e.path.split('/').any(|c| c == ".." || c.is_empty()));
        }
    }
});
