//! glibc's allocator, set for drctl's buffers: blocks of 512 KiB or more are always mapped.
//!
//! drctl's pipelines pass 0.5–1 MiB buffers from one stage thread to the next. glibc maps
//! each block above its mmap threshold on its own and unmaps it when freed, but it raises the
//! threshold to the size of every larger mapped block that is freed (up to 32 MiB): after one
//! 2–4 MiB buffer is freed (a pack index read whole, a decompressed chunk), every later
//! pipeline buffer comes from the threads' arenas, which keep what is freed. With the
//! threshold fixed, a restore of 200,000 files peaks at 39 MiB instead of 61, a second backup
//! of them at 25 instead of 44, a copy-mode base backup at 31 instead of 39, and file backups'
//! peaks no longer grow with the number of files (BENCHMARKS.md, "glibc's mmap threshold
//! fixed at 512 KiB"). A fixed threshold turns that adjustment off.
//!
//! Why 512 KiB: the physical pipeline's 576 KiB stage buffers and the 1 MiB ones stay mapped,
//! while pg_basebackup's 256 KiB reads and smaller buffers come from the arenas as before (at
//! 256 KiB every one of them became a fresh mapping, and base backups paid 1.2–1.7x their wall
//! time in page faults).
//!
//! The operator's own settings win: with `GLIBC_TUNABLES` or any `MALLOC_*` in the
//! environment, glibc has applied them and this does nothing.

/// Blocks of at least this many bytes are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD_BYTES: i32 = 512 << 10;

/// Fix glibc's mmap threshold unless the environment sets malloc's parameters itself. Call
/// it first thing in `main`, before any thread starts.
pub fn fix_mmap_threshold() {
    if !operator_tuned(std::env::vars_os().map(|(name, _)| name)) {
        set_mmap_threshold(MMAP_THRESHOLD_BYTES);
    }
}

/// Whether one of the environment's variable `names` already tunes glibc's malloc.
fn operator_tuned(names: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    names.into_iter().any(|name| {
        let name = name.to_string_lossy();
        name == "GLIBC_TUNABLES" || name.starts_with("MALLOC_")
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold(bytes: i32) {
    // SAFETY: `mallopt` sets one of glibc's allocator parameters under the allocator's own
    // lock and touches no memory of ours; M_MMAP_THRESHOLD below 32 MiB is documented in
    // mallopt(3). A refused value (return 0) leaves glibc's default, which costs only memory,
    // so the result is not checked. Called before any other thread exists.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
    }
}

/// Other C libraries (musl, the BSDs, macOS) have no such setting or need none.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<std::ffi::OsString> {
        list.iter().map(Into::into).collect()
    }

    #[test]
    fn the_operators_malloc_settings_win() {
        assert!(!operator_tuned(names(&["PATH", "HOME", "DR_REPO"])));
        assert!(operator_tuned(names(&["PATH", "GLIBC_TUNABLES"])));
        assert!(operator_tuned(names(&["MALLOC_ARENA_MAX"])));
        assert!(operator_tuned(names(&["MALLOC_MMAP_THRESHOLD_"])));
        assert!(!operator_tuned(names(&["MY_MALLOC_NOTES"])));
    }
}
