//! The `wal-push` spool: what was pushed ahead of PostgreSQL, which process is pushing, and
//! what went wrong in the background.
//!
//! It is a directory of the database host (`pg_wal/dr_spool` by default; `pg_basebackup` and
//! copy-mode base backups leave the contents of `pg_wal` out) holding:
//!
//! - `<file>.ok`: `<file>` is stored and committed in the repository, with this SHA-256 and
//!   length. Written (through a rename) only after the file's record is committed, so a
//!   pusher killed at any moment claims nothing it has not stored;
//! - `pusher.lock`: the background pusher holds an exclusive `flock` on it while it runs (the
//!   kernel lets go when it dies) and writes its process id into it;
//! - `pusher.error`: the background pusher's failure, until a call reports it;
//! - `push-failure.stored`: the file whose failed push this host stored in the repository
//!   (`wal/<system id>/push-failure.json`), so the next successful call can remove it there
//!   without reading the repository on every push.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dr_core::wal::archive::sha256_hex;
use dr_core::{Error, ErrorKind, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// A file pushed ahead: where it is stored and the SHA-256 of what was stored.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    repository_id: String,
    sha256: String,
    bytes: u64,
}

/// The background pusher's failure, as the next `wal-push` call reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PusherFailure {
    /// The file it was pushing, when the failure was about one file.
    pub file: Option<String>,
    /// [`ErrorKind::as_str`] of the error, so the report keeps its kind (and exit code).
    pub kind: String,
    /// The error's report (no secrets: errors never carry them).
    pub message: String,
    /// When it failed.
    pub at: DateTime<Utc>,
    /// The pusher's process id.
    pub pid: u32,
}

impl PusherFailure {
    /// The error a `wal-push` call returns for it.
    pub fn to_error(&self) -> Error {
        let what = match &self.file {
            Some(f) => format!("pushing {f}"),
            None => "starting".to_string(),
        };
        Error::new(
            ErrorKind::from_name(&self.kind),
            format!(
                "the background WAL pusher (pid {}) failed at {} {what}: {} (reported once; \
                 PostgreSQL retries this file and a new pusher starts)",
                self.pid,
                self.at.format("%Y-%m-%d %H:%M:%S UTC"),
                self.message
            ),
        )
    }
}

/// Held by the running background pusher; dropping it (or the process dying) lets go.
#[derive(Debug)]
pub struct PusherLock {
    _lock: Flock<File>,
}

/// The spool directory of one data directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

const LOCK: &str = "pusher.lock";
const FAILURE: &str = "pusher.error";
const STORED_FAILURE: &str = "push-failure.stored";

/// A failed push this host stored in the repository ([`Spool::note_stored_failure`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFailure {
    /// The cluster whose archive holds it.
    pub system_identifier: u64,
    /// The file whose push failed.
    pub file: String,
}

impl Spool {
    /// The spool in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Spool {
        Spool { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn marker_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.ok"))
    }

    fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("cannot create the spool {}", self.dir.display()), e))
    }

    /// Write atomically (a temporary file renamed over `path`).
    fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.create()?;
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp.{}", std::process::id()));
        let io = |e| Error::io(format!("cannot write {}", path.display()), e);
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Record that `name` is stored and committed in repository `repository_id` with these
    /// bytes. Call only after the commit.
    pub fn mark_stored(&self, name: &str, repository_id: &str, data: &[u8]) -> Result<()> {
        let marker = Marker {
            repository_id: repository_id.to_string(),
            sha256: sha256_hex(data),
            bytes: data.len() as u64,
        };
        let json = serde_json::to_vec(&marker).expect("marker serializes");
        self.write_file(&format!("{name}.ok"), &json)
    }

    /// Whether `name` has a marker at all (whatever it says).
    pub fn has_marker(&self, name: &str) -> bool {
        self.marker_path(name).exists()
    }

    /// Whether `name` is marked stored in `repository_id` with exactly `data`. A marker
    /// that says otherwise (the file changed, another repository) is removed, so the file is
    /// pushed again.
    pub fn is_stored(&self, name: &str, repository_id: &str, data: &[u8]) -> bool {
        let path = self.marker_path(name);
        let Ok(bytes) = std::fs::read(&path) else {
            return false;
        };
        let hit = serde_json::from_slice::<Marker>(&bytes).is_ok_and(|m| {
            m.repository_id == repository_id
                && m.bytes == data.len() as u64
                && m.sha256 == sha256_hex(data)
        });
        if !hit {
            let _ = std::fs::remove_file(&path);
        }
        hit
    }

    /// Remove `name`'s marker (PostgreSQL is about to mark it done).
    pub fn forget(&self, name: &str) {
        let _ = std::fs::remove_file(self.marker_path(name));
    }

    /// Remove the markers of files PostgreSQL no longer waits for (no `<file>.ready` in
    /// `archive_status`).
    pub fn clear_stale(&self, archive_status: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let file_name = e.file_name();
            let Some(n) = file_name.to_str().and_then(|n| n.strip_suffix(".ok")) else {
                continue;
            };
            if !archive_status.join(format!("{n}.ready")).exists() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Record the background pusher's failure (replacing one not reported yet).
    pub fn record_failure(&self, file: Option<&str>, error: &Error) -> Result<()> {
        let failure = PusherFailure {
            file: file.map(str::to_string),
            kind: error.kind().as_str().to_string(),
            message: error.report(),
            at: Utc::now(),
            pid: std::process::id(),
        };
        let json = serde_json::to_vec(&failure).expect("failure serializes");
        self.write_file(FAILURE, &json)
    }

    /// The background pusher's failure, if one is recorded; taken, so exactly one caller
    /// reports it.
    pub fn take_failure(&self) -> Option<PusherFailure> {
        let path = self.dir.join(FAILURE);
        let taken = self
            .dir
            .join(format!("{FAILURE}.taken.{}", std::process::id()));
        std::fs::rename(&path, &taken).ok()?;
        let bytes = std::fs::read(&taken).ok();
        let _ = std::fs::remove_file(&taken);
        let failure = bytes.and_then(|b| serde_json::from_slice::<PusherFailure>(&b).ok());
        Some(failure.unwrap_or_else(|| PusherFailure {
            file: None,
            kind: ErrorKind::Other.as_str().to_string(),
            message: format!("its failure record {} is unreadable", path.display()),
            at: Utc::now(),
            pid: 0,
        }))
    }

    /// Remember that the failed push of `file` is stored in cluster `system_identifier`'s
    /// archive (replacing what was remembered).
    pub fn note_stored_failure(&self, system_identifier: u64, file: &str) -> Result<()> {
        let noted = StoredFailure {
            system_identifier,
            file: file.to_string(),
        };
        let json = serde_json::to_vec(&noted).expect("a stored failure serializes");
        self.write_file(STORED_FAILURE, &json)
    }

    /// The failed push this host stored in the repository, if it has not been removed.
    pub fn stored_failure(&self) -> Option<StoredFailure> {
        let bytes = std::fs::read(self.dir.join(STORED_FAILURE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Forget the stored failure (it was removed from the repository).
    pub fn forget_stored_failure(&self) {
        let _ = std::fs::remove_file(self.dir.join(STORED_FAILURE));
    }

    fn open_lock(&self) -> Result<File> {
        self.create()?;
        let path = self.dir.join(LOCK);
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))
    }

    /// Whether a background pusher is running. Takes a shared lock for an instant, which a
    /// starting pusher waits out ([`Spool::lock_pusher`]).
    pub fn pusher_running(&self) -> bool {
        let Ok(file) = File::open(self.dir.join(LOCK)) else {
            return false;
        };
        matches!(
            Flock::lock(file, FlockArg::LockSharedNonblock),
            Err((_, Errno::EWOULDBLOCK))
        )
    }

    /// Become the background pusher: `None` when another one runs. Retries for a moment,
    /// because [`Spool::pusher_running`] holds a shared lock for an instant.
    pub fn lock_pusher(&self) -> Result<Option<PusherLock>> {
        let mut file = self.open_lock()?;
        for _ in 0..40 {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut lock) => {
                    // The process id, for people and tests (the lock is the flock, not this).
                    let _ = lock.set_len(0);
                    let _ = lock.write_all(format!("{}\n", std::process::id()).as_bytes());
                    return Ok(Some(PusherLock { _lock: lock }));
                }
                Err((f, Errno::EWOULDBLOCK)) => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((_, e)) => {
                    return Err(Error::io(
                        "cannot lock the spool's pusher.lock",
                        std::io::Error::from(e),
                    ))
                }
            }
        }
        Ok(None)
    }

    /// The process id the running (or last) background pusher wrote into `pusher.lock`.
    pub fn pusher_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(LOCK))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_says_stored_only_for_the_same_bytes_and_repository() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool"));
        assert!(!spool.is_stored("A", "repo", b"data"));
        spool.mark_stored("A", "repo", b"data").unwrap();
        assert!(spool.is_stored("A", "repo", b"data"));
        assert!(!spool.is_stored("A", "other", b"data"));
        // The mismatch removed it.
        assert!(!spool.has_marker("A"));
        spool.mark_stored("A", "repo", b"data").unwrap();
        assert!(!spool.is_stored("A", "repo", b"datb"));
        assert!(!spool.has_marker("A"));
    }

    #[test]
    fn a_failure_is_reported_once_with_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        assert!(spool.take_failure().is_none());
        let e = Error::new(ErrorKind::Storage, "the bucket said no");
        spool
            .record_failure(Some("000000010000000000000003"), &e)
            .unwrap();
        let f = spool.take_failure().unwrap();
        let reported = f.to_error();
        assert_eq!(reported.kind(), ErrorKind::Storage);
        let text = reported.report();
        assert!(
            text.contains("background WAL pusher")
                && text.contains("000000010000000000000003")
                && text.contains("the bucket said no"),
            "{text}"
        );
        assert!(spool.take_failure().is_none());
    }

    #[test]
    fn a_stored_failure_is_remembered_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path().join("spool"));
        assert_eq!(spool.stored_failure(), None);
        spool
            .note_stored_failure(7, "000000010000000000000003")
            .unwrap();
        spool
            .note_stored_failure(7, "000000010000000000000004")
            .unwrap();
        let noted = spool.stored_failure().unwrap();
        assert_eq!(
            (noted.system_identifier, noted.file.as_str()),
            (7, "000000010000000000000004")
        );
        spool.forget_stored_failure();
        assert_eq!(spool.stored_failure(), None);
    }

    #[test]
    fn one_pusher_at_a_time_and_the_lock_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path());
        assert!(!spool.pusher_running());
        let lock = spool.lock_pusher().unwrap().expect("first pusher");
        assert!(spool.pusher_running());
        assert_eq!(spool.pusher_pid(), Some(std::process::id()));
        assert!(spool.lock_pusher().unwrap().is_none());
        drop(lock);
        assert!(!spool.pusher_running());
    }
}
