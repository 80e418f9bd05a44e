//! The spool folder of a dump taken as pieces, and what a killed dump leaves behind.
//!
//! A backup that is killed (SIGKILL, power loss) runs no destructor: its spool folder stays.
//! Each spool therefore holds a lock file, locked (`flock`) for as long as its backup runs;
//! the kernel drops the lock when the process dies, however it dies. Every new spool first
//! removes the `dr-dump-*` folders beside it whose lock nobody holds.
//!
//! ```text
//! <root>/dr-dump-XXXXXX/lock     locked while the backup runs
//! <root>/dr-dump-XXXXXX/dump/    pg_dump's directory archive (pg_dump wants it empty)
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use dr_core::{Error, Result};
use nix::fcntl::{Flock, FlockArg};

/// Prefix of every spool folder's name.
const PREFIX: &str = "dr-dump-";
/// The lock file inside a spool folder.
const LOCK: &str = "lock";
/// pg_dump's folder inside a spool folder.
const DUMP: &str = "dump";

/// A spool folder in use: removed when dropped, reclaimed by the next spool if its owner is
/// killed.
pub(crate) struct Spool {
    dir: tempfile::TempDir,
    /// Declared after `dir`, so dropped after it: held until the folder is gone.
    _lock: Flock<File>,
}

impl Spool {
    /// Reclaim the abandoned spools under `root`, then make a new one there.
    pub(crate) fn create(root: &Path) -> Result<Spool> {
        reclaim_abandoned(root);
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(root)
            .map_err(|e| {
                Error::io(
                    format!("cannot create a spool folder in {}", root.display()),
                    e,
                )
            })?;
        let lock_path = dir.path().join(LOCK);
        let file = File::create(&lock_path)
            .map_err(|e| Error::io(format!("cannot create {}", lock_path.display()), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            Error::io(format!("cannot lock {}", lock_path.display()), e.into())
        })?;
        let dump = dir.path().join(DUMP);
        std::fs::create_dir(&dump)
            .map_err(|e| Error::io(format!("cannot create {}", dump.display()), e))?;
        Ok(Spool { dir, _lock: lock })
    }

    /// The (empty) folder pg_dump writes its archive into.
    pub(crate) fn dump_dir(&self) -> PathBuf {
        self.dir.path().join(DUMP)
    }
}

/// Remove every `dr-dump-*` folder under `root` whose lock file is not locked: its backup
/// was killed. A folder without a lock file (an older dr's, or one being created this very
/// moment) is left alone. Failures are logged, never fatal: they cost disk, not a backup.
fn reclaim_abandoned(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(path.join(LOCK)) else {
            continue;
        };
        // Locked by someone else: its backup is running.
        if let Ok(_held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(spool = %path.display(), "removed the spool of a killed backup")
                }
                Err(e) => {
                    tracing::warn!(spool = %path.display(), error = %e, "cannot remove the spool of a killed backup")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spool_whose_owner_is_gone_is_reclaimed_and_a_live_one_is_not() {
        let root = tempfile::tempdir().unwrap();
        let live = Spool::create(root.path()).unwrap();
        // An abandoned spool: its lock file exists, nobody holds the lock.
        let dead = root.path().join("dr-dump-dead");
        std::fs::create_dir_all(dead.join(DUMP)).unwrap();
        std::fs::write(dead.join(LOCK), b"").unwrap();
        std::fs::write(dead.join(DUMP).join("3342.dat"), b"rows").unwrap();
        // Not a spool of ours.
        let other = root.path().join("other");
        std::fs::create_dir(&other).unwrap();

        let second = Spool::create(root.path()).unwrap();
        assert!(!dead.exists(), "the abandoned spool is removed");
        assert!(live.dump_dir().is_dir(), "a running backup's spool stays");
        assert!(second.dump_dir().is_dir());
        assert!(other.is_dir());

        let live_dir = live.dir.path().to_owned();
        drop(live);
        assert!(!live_dir.exists(), "a spool is removed when dropped");
    }
}
