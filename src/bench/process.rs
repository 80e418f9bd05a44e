//! What the measuring process itself costs: CPU seconds of all its threads and its peak
//! resident memory, read from Linux's `/proc/self` (no unsafe code, no extra crate).
//!
//! On other systems, or where `/proc` is not mounted, the figures are `None` and the
//! benchmark reports them as unknown rather than as zero.

/// Linux reports `utime`/`stime` in `USER_HZ` ticks, which is 100 on every architecture
/// Linux supports (the value is part of the user-space ABI).
const USER_HZ: f64 = 100.0;

/// User plus system CPU seconds of this process so far (all threads, including finished ones).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`, …; reported there in kB).
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The resident memory of this process now.
pub fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS")
}

/// Measures the peak memory a piece of work adds to the process: the kernel's high-water
/// mark is reset to the current size when the window starts (`/proc/self/clear_refs` = 5),
/// read when it ends, and the size at the start is subtracted.
pub struct PeakWindow {
    start_rss: Option<u64>,
    reset: bool,
}

impl PeakWindow {
    /// Start a window.
    pub fn start() -> Self {
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        PeakWindow {
            start_rss: rss_bytes(),
            reset,
        }
    }

    /// The most memory the process held above its size at [`start`](Self::start), or
    /// `None` if the high-water mark could not be reset (it would include older peaks).
    pub fn added_bytes(&self) -> Option<u64> {
        if !self.reset {
            return None;
        }
        Some(status_bytes("VmHWM")?.saturating_sub(self.start_rss?))
    }

    /// The process's peak resident memory since the window started (or since it began, if
    /// the mark could not be reset).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        status_bytes("VmHWM")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        // Busy work until the counter moves by 50 ms; on a loaded machine that takes more
        // wall time, but a counter that does not follow CPU use never gets there.
        let before = cpu_seconds().expect("/proc/self/stat is readable on Linux");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after - before < 0.05 && start.elapsed().as_secs() < 30 {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            after = cpu_seconds().unwrap();
        }
        std::hint::black_box(x);
        assert!(after - before >= 0.05, "{before} -> {after}");
    }

    #[test]
    fn peak_window_sees_a_temporary_allocation() {
        let window = PeakWindow::start();
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        drop(big);
        if let Some(added) = window.added_bytes() {
            assert!(added >= 60 << 20, "{added}");
        }
        assert!(window.peak_rss_bytes().unwrap() >= 64 << 20);
    }
}
