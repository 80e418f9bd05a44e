//! glibc's allocator setting for drctl, set once before anything else runs.
//!
//! Why: dr's pipelines hand 0.5–1 MiB buffers from thread to thread. glibc serves a block
//! that large with its own mapping only until the first such mapping is freed; from then on
//! its "dynamic mmap threshold" has risen past that size and such blocks come from the
//! per-thread arenas, which keep freed blocks resident. A base backup's peak RSS then grew
//! with the number of threads that ever held a buffer, not with the data alive at the time.
//! A fixed threshold keeps large buffers in their own mappings, returned to the kernel when
//! freed: copy-mode base backups 45 → 32 MiB, pg_basebackup mode 27 → 26 MiB, for about 2 s
//! more system CPU per 1.5 GB (the kernel zeroes each new mapping's pages; BENCHMARKS.md,
//! "glibc's malloc settings").
//!
//! Only the drctl binary does this: a program that embeds the library owns its allocator.
//! glibc's own environment settings (`GLIBC_TUNABLES`, `MALLOC_*`) win over this one, so an
//! operator can still tune or undo it.
#![allow(unsafe_code)]

/// Largest block glibc may serve from an arena; larger ones get their own mapping (glibc's
/// default starts at 128 KiB and rises without bound up to 32 MiB).
const MMAP_THRESHOLD_BYTES: i32 = 256 * 1024;

/// Applies the setting unless the environment already tunes glibc's allocator.
pub fn tune() {
    if !operator_tunes_malloc(std::env::vars_os().map(|(name, _)| name)) {
        set_mmap_threshold(MMAP_THRESHOLD_BYTES);
    }
}

/// Whether one of these environment variables is one glibc's allocator reads at start-up.
fn operator_tunes_malloc(mut names: impl Iterator<Item = std::ffi::OsString>) -> bool {
    names.any(|name| {
        let name = name.to_string_lossy();
        name == "GLIBC_TUNABLES" || name.starts_with("MALLOC_")
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold(bytes: i32) {
    // SAFETY: `mallopt` only changes a parameter of glibc's allocator, under its own lock; it
    // takes plain integers and touches no memory of ours. A refused value (return 0) leaves
    // glibc's default in place, which is safe, so the result is not checked.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
    }
}

/// Other C libraries (musl, the BSDs, macOS) have no such setting or need none.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: i32) {}

#[cfg(test)]
mod tests {
    use super::operator_tunes_malloc;

    fn names(list: &[&str]) -> impl Iterator<Item = std::ffi::OsString> {
        list.iter()
            .map(|n| std::ffi::OsString::from(*n))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn glibc_settings_in_the_environment_win_over_drctls() {
        assert!(operator_tunes_malloc(names(&["PATH", "GLIBC_TUNABLES"])));
        assert!(operator_tunes_malloc(names(&["MALLOC_ARENA_MAX"])));
        assert!(operator_tunes_malloc(names(&["MALLOC_MMAP_THRESHOLD_"])));
        assert!(!operator_tunes_malloc(names(&["PATH", "HOME", "DR_KEY"])));
        assert!(!operator_tunes_malloc(names(&[])));
    }
}
