//! dr-db: PostgreSQL support for dr.
//!
//! * [`PgDumper`] — a consistent logical dump: a `REPEATABLE READ` snapshot exported by a
//!   connection of our own, `pg_dump -Fc -Z0 --snapshot=…` streaming the archive, and an
//!   [`archive::ArchiveInspector`] reading the row counts from the very bytes that are stored.
//! * [`PgRestorer`] — a checked restore: refuses a non-empty database unless told to replace
//!   it, restores in one transaction (or into a scratch database that is swapped in only once
//!   it is complete), and compares the restored row counts with the dump's.
//! * [`checks::foreign_key_orphans`] and [`compare::compare_tables`] — what a drill or a
//!   demo asks of a restored database: no orphaned rows, the same rows as its source.
//! * `testing::TestCluster` (cargo feature `testing`) — a throwaway PostgreSQL cluster for
//!   tests, public so that embedders can test their own recovery jobs.
//!
//! Programs (`pg_dump`, `pg_restore`, `initdb`, `pg_ctl`) are found in, by order: the
//! directory given with `with_bin_dir`, `$DR_PG_BINDIR`, `pg_config --bindir`, the newest
//! `/usr/lib/postgresql/*/bin`, then `$PATH`. Connection parameters and credentials reach them
//! only through the environment (`PGHOST`, `PGPASSWORD`, …), never through their arguments.
//!
//! # Example: copy one database into a new one
//!
//! The identity pipeline, through memory; a real backup puts compression, encryption and
//! storage between the two halves (dr-core's pipelines), and a restore takes the expected
//! statistics from the backup's manifest.
//!
//! ```no_run
//! use dr_core::{Dumper, Restorer};
//! use dr_db::{PgDumper, PgRestorer};
//!
//! # async fn demo() -> dr_core::Result<()> {
//! let source: tokio_postgres::Config = "host=127.0.0.1 user=postgres dbname=app".parse().unwrap();
//! let target: tokio_postgres::Config = "host=127.0.0.1 user=postgres dbname=app_copy".parse().unwrap();
//!
//! let dump = PgDumper::new(source).start().await?;
//! println!("consistent at {:?}", dump.source.consistent_point);
//! let payload = dr_core::stage::collect(dump.stream).await?; // read to its end…
//! let stats = dump.completion.finish().await?; // …then pg_dump's status and the row counts
//!
//! let report = PgRestorer::new(target)
//!     .create(true)
//!     .restore(&dump.source, &stats, dr_core::stage::once_bytes(payload.into(), 1 << 20))
//!     .await?;
//! println!("{}: {} tables, {} rows checked", report.target, report.tables_checked, report.rows_checked);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod archive;
pub mod checks;
pub mod compare;
mod conn;
pub mod custom_archive;
pub mod diff;
pub mod directory;
mod dump;
mod dump_pieces;
mod fifo;
mod locale;
mod own_copy;
mod params;
pub mod physical;
pub mod physical_copy;
mod restore;
pub mod server;
mod spool;
pub mod tables;
pub mod tablespace_map;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod toc_file;
mod tools;
pub mod wal;

pub use dump::{PgDumper, SOURCE_KIND};
pub use params::config_from_url;
pub use physical::{PhysicalDumper, PhysicalRestorer, PHYSICAL_STAGES};
pub use physical_copy::{PhysicalCopyDumper, PHYSICAL_COPY_FORMAT};
pub use restore::PgRestorer;

/// `SourceInfo::format` of a PostgreSQL backup's payload: `pg_dump`'s custom-format archive,
/// uncompressed (`-Fc -Z0`), exactly as `pg_restore` reads it; [`archive::ArchiveInspector`]
/// re-counts it for `verify`.
pub const PAYLOAD_FORMAT: &str = "pg_dump-custom";
