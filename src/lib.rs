//! dr: PostgreSQL disaster recovery as one streaming, verified system.
//!
//! This facade re-exports the workspace's crates and adds the few flows that join them
//! (opening a repository with a key, verifying a payload's contents with the plug-in that
//! wrote it, drills, the dr.toml runbook). The `drctl` command-line tool (feature `cli`) is
//! built only on this public API.
//!
//! ```no_run
//! # async fn run() -> dr::core::Result<()> {
//! use std::sync::Arc;
//! use dr::{core::BackupOptions, keys::KeySource};
//!
//! // A repository in a local directory, opened with its key file.
//! let storage = dr::storage::from_url("/srv/backups")?;
//! let repo = dr::core::Repository::open(storage).await?;
//! let key = KeySource::File("/etc/dr/repo.key".into()).unlock(repo.config())?;
//!
//! // Back up a database: pg_dump → zstd → AES-256-GCM → storage, all streaming.
//! let db: tokio_postgres::Config = "host=127.0.0.1 user=app dbname=app".parse().unwrap();
//! let dumper = dr::db::PgDumper::new(db);
//! let manifest = dr::core::backup(&repo, &dumper, &dr::keys::encryptor(&repo, key)?, &BackupOptions::default()).await?;
//! println!("backup {} stored {} bytes", manifest.id, manifest.stored_bytes);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use dr_core as core;
pub use dr_crypto as crypto;
pub use dr_db as db;
pub use dr_files as files;
pub use dr_storage as storage;

pub mod bench;
pub mod checks;
pub mod config;
pub mod drill;
pub mod file_backups;
pub mod jobs;
pub mod keys;
pub mod logical;
pub mod monitoring;
pub mod physical_drill;
pub mod pitr;
pub mod reconcile;
pub mod records;
pub mod report;
pub mod status;
pub mod verify;
mod wal_keys;
mod wal_receive_job;
pub mod wal_state;
pub mod writers;

#[cfg(test)]
mod architecture {
    /// The workspace's modules import each other one way: scripts/import_cycles.py finds no
    /// module of any crate that imports a module importing it back.
    #[test]
    fn no_import_cycles_between_modules() {
        let root = env!("CARGO_MANIFEST_DIR");
        let out = std::process::Command::new("python3")
            .arg(format!("{root}/scripts/import_cycles.py"))
            .arg(root)
            .output()
            .expect("python3 runs (scripts/prereqs.sh installs it)");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "import cycles:\n{report}");
        assert_eq!(report.matches("no cycles").count(), 7, "{report}");
    }
}
