//! The names dr writes into object paths and records, and where they come from: the checks
//! that backup ids, job names and lease names are plain path segments, the host name that
//! leases and job records carry, and random ids.

use crate::error::{Error, ErrorKind, Result};

/// Backup ids are plain path segments: letters, digits, `-`, `_`, `.`; no traversal.
pub fn check_backup_id(id: &str) -> Result<()> {
    check_path_segment(id, 128, "backup id")
}

/// Job names are plain path segments (they name leases and records).
pub fn check_job_name(name: &str) -> Result<()> {
    check_path_segment(name, 100, "job name")
}

/// Lease names (`exclusive`, `job-<name>`) are plain path segments.
pub(crate) fn check_lease_name(name: &str) -> Result<()> {
    check_path_segment(name, 100, "lease or job name")
}

/// A piece name (one table's data in a backup taken as pieces, [`crate::pieces`]) is a
/// plain file name of at most 200 characters. It is read from manifests, so a bad one is
/// [`ErrorKind::Corrupt`].
pub fn check_piece_name(name: &str) -> Result<()> {
    check_path_segment(name, 200, "piece name (a plain file name)")
        .map_err(|e| Error::corrupt(e.message().to_string()))
}

/// Fail unless `name` can be one segment of an object path as is: 1 to `max_len` letters,
/// digits, `-`, `_` and `.`, not starting with `.` (no `..`, no hidden names). `what` names
/// the kind of name in the error.
fn check_path_segment(name: &str, max_len: usize, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= max_len
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "'{name}' is not a valid {what} (letters, digits, '-', '_', '.')"
        )))
    }
}

/// This machine's name, for the records that say who holds a lease or ran a job.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// `bytes` bytes from the system's random generator as lowercase hex (twice as many
/// characters): repository ids, backup id suffixes, lease tokens.
pub(crate) fn random_hex(bytes: usize) -> Result<String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::new(ErrorKind::Other, "the system random generator failed"))?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_path_segments() {
        assert!(check_lease_name("job-nightly.v2").is_ok());
        assert!(check_job_name("nightly_2").is_ok());
        assert!(check_backup_id("20261125T020000Z-pg-7f3a").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "sp ace", "tab\t"] {
            for check in [check_lease_name, check_job_name, check_backup_id] {
                assert_eq!(
                    check(bad).unwrap_err().kind(),
                    ErrorKind::InvalidInput,
                    "{bad}"
                );
            }
        }
        assert!(check_job_name(&"j".repeat(100)).is_ok());
        assert!(check_job_name(&"j".repeat(101)).is_err());
        assert!(check_backup_id(&"b".repeat(128)).is_ok());
        assert!(check_backup_id(&"b".repeat(129)).is_err());
        let e = check_backup_id("a/b").unwrap_err();
        assert!(
            e.message().contains("'a/b' is not a valid backup id"),
            "{e}"
        );
    }

    #[test]
    fn random_ids_are_hex_of_the_asked_length_and_differ() {
        let a = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, random_hex(16).unwrap());
    }

    #[test]
    fn the_host_name_is_never_empty() {
        assert!(!host_name().trim().is_empty());
    }
}
