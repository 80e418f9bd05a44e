//! Physical base backups of a whole cluster, streamed by `pg_basebackup`, and their restore
//! into an empty data directory.
//!
//! [`PhysicalDumper`] runs `pg_basebackup -D - -Ft -Xnone` over a replication connection:
//! the server's single tar archive of the data directory streams straight into dr's
//! pipeline (compress → encrypt → store), never landing on local disk. The WAL needed to make
//! the copy consistent is not included (`-Xnone`): it comes from the cluster's WAL archive
//! (`drctl wal-push`), which a point-in-time restore reads anyway. The server sends
//! `backup_label` first; the dumper reads it from the stream, and records the start and stop
//! positions, the timeline and the system identifier in the manifest
//! ([`dr_core::wal::base`]). A cluster with tablespaces is refused by `pg_basebackup` in
//! this mode (one archive on stdout): a limit of this version.
//!
//! [`PhysicalRestorer`] unpacks such a payload into a data directory that must be missing or
//! empty, in-process ([`unpack`]), and removes what it wrote if the payload fails its checks
//! on the way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use dr_core::stage::{ByteStream, StageOptions};
use dr_core::wal::base::{
    PHYSICAL_KIND, PHYSICAL_NAME, PROP_BACKUP_LABEL, PROP_START_LSN, PROP_START_TIME,
    PROP_STOP_LSN, PROP_STOP_TIME, PROP_SYSTEM_ID, PROP_TIMELINE,
};
use dr_core::wal::Lsn;
use dr_core::{
    Dump, DumpCompletion, DumpStats, Dumper, Error, ErrorKind, RestoreReport, Restorer, Result,
    SourceInfo,
};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio_postgres::Config;

use crate::conn::{apply_libpq_env, connect, db_error};
pub use crate::tablespace_map::prepare_empty_pgdata;
use crate::tools::{find_program, program_failed, spawn_failed, spawn_stderr_tail, stderr_tail};

pub mod unpack;

/// The payload format: one tar archive of the data directory, as `pg_basebackup -Ft` writes.
pub const PHYSICAL_FORMAT: &str = "pg_basebackup-tar";

/// How much of the stream's start is kept to find `backup_label` (the first member).
const LABEL_WINDOW: usize = 64 * 1024;

/// The pipeline's chunk size and depth for physical base backups, at most. A base backup is
/// one long stream through two stages that keep pace with each other; four 1 MiB chunks
/// queued per stage (the default) bought no speed, but when the upload stalled they filled
/// up and took the heap from 14 to 37 MB (BENCHMARKS.md, issue 11).
pub const PHYSICAL_STAGES: StageOptions = StageOptions {
    chunk_bytes: 512 << 10,
    depth: 1,
};

/// Takes physical base backups of the cluster `config` connects to.
#[derive(Debug, Clone)]
pub struct PhysicalDumper {
    config: Config,
    bin_dir: Option<PathBuf>,
}

impl PhysicalDumper {
    /// A dumper for the cluster at `config` (a user with the REPLICATION attribute; the
    /// server must allow a replication connection from here in `pg_hba.conf`).
    pub fn new(config: Config) -> Self {
        PhysicalDumper {
            config,
            bin_dir: None,
        }
    }

    /// Run `pg_basebackup` from `dir`.
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }
}

/// What the server says about itself before the backup starts.
struct Cluster {
    system_identifier: String,
    version: String,
}

async fn describe(config: &Config) -> Result<Cluster> {
    let conn = connect(config, "physical backup").await?;
    let row = conn
        .client
        .query_one(
            "SELECT system_identifier::text, current_setting('server_version') \
             FROM pg_control_system()",
            &[],
        )
        .await
        .map_err(|e| db_error("cannot read the cluster's system identifier", e))?;
    let cluster = Cluster {
        system_identifier: row.get(0),
        version: row.get(1),
    };
    let _ = conn.close().await;
    Ok(cluster)
}

#[async_trait]
impl Dumper for PhysicalDumper {
    fn stage_options(&self, requested: StageOptions) -> StageOptions {
        requested.at_most(PHYSICAL_STAGES)
    }

    async fn start(&self) -> Result<Dump> {
        let cluster = describe(&self.config).await?;
        let program = find_program(
            self.bin_dir.as_deref(),
            "pg_basebackup",
            crate::tools::INSTALL_CLIENT,
        )?;
        let mut cmd = std::process::Command::new(&program);
        cmd.args([
            "-D",
            "-",
            "--format=tar",
            "--wal-method=none",
            "--checkpoint=fast",
            "--no-manifest",
            "--verbose",
        ]);
        let dbname = self.config.get_dbname().unwrap_or("postgres").to_string();
        apply_libpq_env(&mut cmd, &self.config, &dbname);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started_at = Utc::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_failed("pg_basebackup", &program, e))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = spawn_stderr_tail(child.stderr.take().expect("piped stderr"), "pg_basebackup");

        let head = Arc::new(Mutex::new(Vec::with_capacity(LABEL_WINDOW)));
        let tap = head.clone();
        let stream: ByteStream = futures::stream::unfold(stdout, |mut out| async move {
            let mut buf = vec![0u8; 256 * 1024];
            match out.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), out))
                }
                Err(e) => Some((Err(Error::io("reading pg_basebackup's output", e)), out)),
            }
        })
        .map(move |chunk| {
            if let Ok(c) = &chunk {
                let mut h = tap.lock().unwrap();
                let room = LABEL_WINDOW.saturating_sub(h.len());
                h.extend_from_slice(&c[..room.min(c.len())]);
            }
            chunk
        })
        .boxed();

        let mut properties = BTreeMap::new();
        properties.insert(
            PROP_SYSTEM_ID.to_string(),
            cluster.system_identifier.clone(),
        );
        Ok(Dump {
            source: SourceInfo {
                kind: PHYSICAL_KIND.into(),
                format: PHYSICAL_FORMAT.into(),
                name: PHYSICAL_NAME.into(),
                origin: Some(cluster.system_identifier.clone()),
                server_version: Some(cluster.version),
                consistent_point: None,
                properties,
            },
            stream,
            size_hint: None,
            completion: Box::new(Completion {
                child,
                stderr,
                head,
                started_at,
                system_identifier: cluster.system_identifier,
                config: self.config.clone(),
            }),
        })
    }
}

struct Completion {
    child: tokio::process::Child,
    stderr: tokio::task::JoinHandle<String>,
    head: Arc<Mutex<Vec<u8>>>,
    started_at: DateTime<Utc>,
    system_identifier: String,
    config: Config,
}

/// The server's WAL position now. `pg_basebackup` reports the backup's stop position only
/// when it fetches WAL itself, so the position read right after the backup completed stands
/// in for it: at or after the true stop position, so the backup is never taken for
/// consistent earlier than it is (at worst a few records later).
async fn position_after(config: &Config) -> Result<Lsn> {
    let conn = connect(config, "physical backup").await?;
    let text: String = conn
        .client
        .query_one(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
             ELSE pg_current_wal_lsn() END)::text",
            &[],
        )
        .await
        .map_err(|e| db_error("cannot read the WAL position after the backup", e))?
        .get(0);
    let _ = conn.close().await;
    text.parse()
}

#[async_trait]
impl DumpCompletion for Completion {
    async fn finish(mut self: Box<Self>) -> Result<DumpStats> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| Error::io("waiting for pg_basebackup", e))?;
        let stderr = stderr_tail(self.stderr).await;
        if !status.success() {
            return Err(program_failed("pg_basebackup", status, &stderr));
        }
        let head = std::mem::take(&mut *self.head.lock().unwrap());
        let label_text = first_member(&head, "backup_label").ok_or_else(|| {
            Error::corrupt("pg_basebackup's archive does not start with backup_label")
        })?;
        let label = BackupLabel::parse(&label_text)?;
        let stop_time = Utc::now();
        let stop_lsn = match stop_position(&stderr) {
            Some(l) => l,
            None => position_after(&self.config).await?,
        };
        let mut p = BTreeMap::new();
        p.insert(PROP_SYSTEM_ID.into(), self.system_identifier);
        p.insert(PROP_TIMELINE.into(), label.timeline.to_string());
        p.insert(PROP_START_LSN.into(), label.start_lsn.to_string());
        p.insert(PROP_STOP_LSN.into(), stop_lsn.to_string());
        p.insert(
            PROP_START_TIME.into(),
            label.start_time.unwrap_or(self.started_at).to_rfc3339(),
        );
        p.insert(PROP_STOP_TIME.into(), stop_time.to_rfc3339());
        p.insert(PROP_BACKUP_LABEL.into(), label_text);
        Ok(DumpStats {
            tables: Vec::new(),
            properties: p,
        })
    }
}

/// The contents of the first member of a tar archive, if it is named `name`.
fn first_member(tar: &[u8], name: &str) -> Option<String> {
    let header = tar.get(..512)?;
    let end = header[..100].iter().position(|b| *b == 0).unwrap_or(100);
    if &header[..end] != name.as_bytes() {
        return None;
    }
    let size_field = std::str::from_utf8(&header[124..136]).ok()?;
    let size = usize::from_str_radix(size_field.trim_matches(|c| c == '\0' || c == ' '), 8).ok()?;
    let body = tar.get(512..512 + size)?;
    String::from_utf8(body.to_vec()).ok()
}

/// `pg_basebackup: write-ahead log end point: 0/2000100` in its verbose output.
fn stop_position(stderr: &str) -> Option<Lsn> {
    stderr.lines().find_map(|l| {
        let rest = l.split("write-ahead log end point:").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// What a `backup_label` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupLabel {
    /// `START WAL LOCATION`.
    pub start_lsn: Lsn,
    /// `START TIMELINE`.
    pub timeline: u32,
    /// `START TIME`.
    pub start_time: Option<DateTime<Utc>>,
}

impl BackupLabel {
    /// Parse a `backup_label` file.
    pub fn parse(text: &str) -> Result<BackupLabel> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
        };
        let bad = |what: &str| Error::corrupt(format!("backup_label has no valid {what}"));
        let start_lsn = field("START WAL LOCATION:")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| bad("START WAL LOCATION"))?;
        let timeline = field("START TIMELINE:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("START TIMELINE"))?;
        // "2026-12-01 01:50:00 UTC": the server's time zone; UTC in practice for dr's use.
        let start_time = field("START TIME:").and_then(|v| {
            let (t, zone) = v.rsplit_once(' ')?;
            let t = NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok()?;
            (zone == "UTC" || zone == "GMT").then(|| t.and_utc())
        });
        Ok(BackupLabel {
            start_lsn,
            timeline,
            start_time,
        })
    }
}

/// Restores a physical base backup into a data directory.
#[derive(Debug, Clone)]
pub struct PhysicalRestorer {
    pgdata: PathBuf,
    tablespaces: Vec<(PathBuf, PathBuf)>,
}

impl PhysicalRestorer {
    /// Restore into `pgdata`, which must be missing or empty. Tablespaces go beside it
    /// (see [`crate::tablespace_map`]).
    pub fn new(pgdata: impl Into<PathBuf>) -> Self {
        PhysicalRestorer {
            pgdata: pgdata.into(),
            tablespaces: Vec::new(),
        }
    }

    /// Restore the tablespace that was at `original` into `target` instead.
    pub fn relocate_tablespace(
        mut self,
        original: impl Into<PathBuf>,
        target: impl Into<PathBuf>,
    ) -> Self {
        self.tablespaces.push((original.into(), target.into()));
        self
    }
}

#[async_trait]
impl Restorer for PhysicalRestorer {
    async fn restore(
        &self,
        source: &SourceInfo,
        expected: &DumpStats,
        payload: ByteStream,
    ) -> Result<RestoreReport> {
        if source.format != PHYSICAL_FORMAT && source.format != crate::PHYSICAL_COPY_FORMAT {
            return Err(Error::invalid(format!(
                "a {} payload cannot be restored into a data directory",
                source.format
            )));
        }
        prepare_empty_pgdata(&self.pgdata)?;
        let map = expected
            .properties
            .get(dr_core::wal::base::PROP_TABLESPACE_MAP)
            .map_or("", String::as_str);
        let relocations = crate::tablespace_map::plan(&self.pgdata, map, &self.tablespaces)?;
        let unpacked = unpack_payload(payload, &self.pgdata).await.and_then(|_| {
            if self.pgdata.join("backup_label").is_file() {
                Ok(())
            } else {
                Err(Error::corrupt(
                    "the restored data directory has no backup_label",
                ))
            }
        });
        let unpacked =
            unpacked.and_then(|()| crate::tablespace_map::apply(&self.pgdata, &relocations));
        if let Err(e) = unpacked {
            clear_dir(&self.pgdata);
            for r in &relocations {
                clear_dir(&r.target);
            }
            return Err(e);
        }
        Ok(RestoreReport {
            target: self.pgdata.display().to_string(),
            tables_checked: 0,
            rows_checked: 0,
            replaced: false,
        })
    }
}

/// Unpack the tar stream `payload` into `pgdata` on a blocking thread of its own (see
/// [`unpack`]); an error of the stream (a failed check) ends it.
async fn unpack_payload(mut payload: ByteStream, pgdata: &Path) -> Result<unpack::Unpacked> {
    let handle = tokio::runtime::Handle::current();
    let mut unpacker = unpack::Unpacker::new(pgdata)?;
    tokio::task::spawn_blocking(move || {
        while let Some(chunk) = handle.block_on(payload.next()) {
            unpacker.feed(&chunk?)?;
        }
        unpacker.finish()
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Other, "unpacking the base backup failed").with_source(e))?
}

/// Remove everything inside `dir` (a failed restore leaves no half-written cluster).
fn clear_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_label_gives_its_start() {
        let text = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
                    CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n\
                    BACKUP FROM: primary\nSTART TIME: 2026-12-01 01:50:07 UTC\n\
                    LABEL: pg_basebackup base backup\nSTART TIMELINE: 1\n";
        let l = BackupLabel::parse(text).unwrap();
        assert_eq!(l.start_lsn.to_string(), "0/2000028");
        assert_eq!(l.timeline, 1);
        assert_eq!(
            l.start_time.unwrap().to_rfc3339(),
            "2026-12-01T01:50:07+00:00"
        );
        assert!(BackupLabel::parse("START TIMELINE: 1\n").is_err());
    }

    #[test]
    fn the_stop_position_comes_from_verbose_output() {
        let err = "pg_basebackup: initiating base backup, waiting for checkpoint to complete\n\
                   pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1\n\
                   pg_basebackup: write-ahead log end point: 0/2000100\n\
                   pg_basebackup: base backup completed\n";
        assert_eq!(stop_position(err).unwrap().to_string(), "0/2000100");
        assert_eq!(stop_position("nothing"), None);
    }
}
