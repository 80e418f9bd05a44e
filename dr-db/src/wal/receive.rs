//! `drctl wal-receive`: streaming WAL as the server writes it, for an RPO of seconds.
//!
//! `archive_command` sees a segment only once it is complete (16 MiB, or `archive_timeout`),
//! so losing the primary loses up to a segment of committed work. [`WalReceiver`] runs
//! PostgreSQL's `pg_receivewal` on a physical replication slot (created if missing, so the
//! server keeps the WAL the receiver has not fetched yet) into a local spool directory, and
//! every few seconds stores from that spool:
//!
//! - each completed segment, exactly as `wal-push` would: the same header checks (this
//!   cluster, this segment size, the name's position), the same name and record, so a segment
//!   archived by both is stored once (the second push finds an identical record);
//! - timeline histories the stream brings;
//! - the segment still being written, as a *streamed partial copy* of the bytes that hold
//!   WAL so far ([`dr_core::wal::WalArchive::push_streamed`]), whenever it has grown.
//!
//! The local copy of a completed segment is removed once it is stored (the newest one stays,
//! for `pg_receivewal` to know where to resume). When the server goes away `pg_receivewal`
//! exits; the receiver stores what it received, waits and starts it again, until it is asked
//! to stop — then it interrupts `pg_receivewal`, lets it flush, and stores everything once
//! more before returning.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use dr_core::wal::{
    Lsn, PushOptions, PushOutcome, SegmentId, SegmentSize, WalArchive, WalCluster, WalFile,
};
use dr_core::{Encryptor, Error, ErrorKind, Repository, Result};
use serde::Serialize;
use tokio_postgres::Config;

use crate::conn::{apply_libpq_env, connect, db_error};
use crate::tools::{find_program, spawn_failed, spawn_stderr_tail, stderr_tail};
use crate::wal::header::SegmentHeader;
use crate::wal::push::check_file;
use crate::wal::records::scan_segment;

/// The slot used when none is named.
pub const DEFAULT_SLOT: &str = "dr_receive";

/// How long to wait before starting `pg_receivewal` again after it lost the server.
const RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// What a [`WalReceiver::run`] stored.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReceiveReport {
    /// The cluster (decimal text).
    pub system_identifier: String,
    /// The replication slot used.
    pub slot: String,
    /// Complete segments stored (or found already archived, e.g. by `wal-push`).
    pub segments: u64,
    /// Streamed partial copies stored.
    pub partial_copies: u64,
    /// Bytes stored (compressed and encrypted).
    pub stored_bytes: u64,
    /// How far the archive reaches after this run: the end of the newest segment or copy
    /// stored.
    pub reach: Option<Lsn>,
    /// When that newest data was stored.
    pub reach_stored_at: Option<DateTime<Utc>>,
    /// Times `pg_receivewal` was started again after losing the server.
    pub reconnects: u64,
}

impl std::fmt::Display for ReceiveReport {
    /// One line for people and job summaries.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "received {} segment(s) and {} partial copies of cluster {} (slot {}); the archive reaches {}",
            self.segments,
            self.partial_copies,
            self.system_identifier,
            self.slot,
            self.reach.map_or("nothing new".into(), |l| l.to_string())
        )
    }
}

/// Streams the WAL of one server into a repository's archive. How: the comments at the top of `wal/receive.rs`.
#[derive(Clone)]
pub struct WalReceiver {
    repo: Repository,
    encryptor: Arc<dyn Encryptor>,
    config: Config,
    spool: PathBuf,
    slot: String,
    interval: Duration,
    bin_dir: Option<PathBuf>,
    opts: PushOptions,
}

impl std::fmt::Debug for WalReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReceiver")
            .field("repository", &self.repo.storage().describe())
            .field("spool", &self.spool)
            .field("slot", &self.slot)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// What the server says about itself.
struct Server {
    system_identifier: u64,
    version: u32,
    segment_size: SegmentSize,
}

/// What the spool held at the last sweep.
#[derive(Default)]
struct SpoolState {
    /// Complete segments and histories stored.
    stored: BTreeSet<String>,
    /// Per segment being written: how far its last stored copy reached.
    copied: BTreeMap<SegmentId, u32>,
    /// The partial file's size and modification time at the last look.
    partial_seen: Option<(String, u64, SystemTime)>,
}

impl WalReceiver {
    /// A receiver for the server `config` connects to (a user with the REPLICATION
    /// attribute), spooling in `spool` (created if missing; keep it on the receiving host,
    /// not on the server's disks). Files are encrypted by `encryptor` (public recipients
    /// suffice). Slot [`DEFAULT_SLOT`], a copy of the growing segment every 2 seconds.
    pub fn new(
        repo: Repository,
        encryptor: Arc<dyn Encryptor>,
        config: Config,
        spool: impl Into<PathBuf>,
    ) -> Self {
        WalReceiver {
            repo,
            encryptor,
            config,
            spool: spool.into(),
            slot: DEFAULT_SLOT.to_string(),
            interval: Duration::from_secs(2),
            bin_dir: None,
            opts: PushOptions::default(),
        }
    }

    /// Use (and create if missing) the physical replication slot `name`.
    pub fn slot(mut self, name: impl Into<String>) -> Self {
        self.slot = name.into();
        self
    }

    /// Store the growing segment this often (the RPO, plus the server's WAL flush delay).
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every.max(Duration::from_millis(100));
        self
    }

    /// Run `pg_receivewal` from `dir`.
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Stream until `stop` completes, then store what was received and return. Fails when
    /// the server cannot be reached or `pg_receivewal` fails before anything was received
    /// (bad settings), and when a received file cannot be archived for a reason retrying
    /// does not fix (another cluster's WAL, a different segment under an archived name).
    pub async fn run(&self, stop: impl Future<Output = ()>) -> Result<ReceiveReport> {
        check_slot_name(&self.slot)?;
        let server = self.prepare_server().await?;
        let archive = self.archive(&server).await?;
        tokio::fs::create_dir_all(&self.spool)
            .await
            .map_err(|e| Error::io(format!("cannot create {}", self.spool.display()), e))?;
        let mut state = SpoolState::default();
        let mut report = ReceiveReport {
            system_identifier: server.system_identifier.to_string(),
            slot: self.slot.clone(),
            ..ReceiveReport::default()
        };
        tokio::pin!(stop);
        loop {
            let mut child = self.spawn_receiver()?;
            let stderr =
                spawn_stderr_tail(child.stderr.take().expect("piped stderr"), "pg_receivewal");
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let status = loop {
                tokio::select! {
                    _ = &mut stop => {
                        interrupt(&child).await;
                        let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
                        let _ = child.kill().await;
                        self.sweep(&archive, &server, &mut state, &mut report).await?;
                        return Ok(report);
                    }
                    status = child.wait() => break status,
                    _ = tick.tick() => {
                        if let Err(e) = self.sweep(&archive, &server, &mut state, &mut report).await {
                            if !e.is_temporary() {
                                let _ = child.kill().await;
                                return Err(e);
                            }
                            tracing::warn!(error = %e.report(), "storing received WAL failed; retrying");
                        }
                    }
                }
            };
            // pg_receivewal stopped on its own: the server went away or refused us.
            self.sweep(&archive, &server, &mut state, &mut report)
                .await?;
            let tail = stderr_tail(stderr).await;
            let status = status.map_err(|e| Error::io("waiting for pg_receivewal", e))?;
            if report.segments == 0 && report.partial_copies == 0 && report.reconnects == 0 {
                return Err(crate::tools::program_failed("pg_receivewal", status, &tail));
            }
            report.reconnects += 1;
            tracing::warn!(status = %status, stderr = %tail.trim(), "pg_receivewal stopped; starting it again in {} s", RECONNECT_DELAY.as_secs());
            tokio::select! {
                _ = &mut stop => {
                    self.sweep(&archive, &server, &mut state, &mut report).await?;
                    return Ok(report);
                }
                _ = tokio::time::sleep(RECONNECT_DELAY) => {}
            }
        }
    }

    /// Read the server's identity and segment size; create the slot if it is missing.
    async fn prepare_server(&self) -> Result<Server> {
        let conn = connect(&self.config, "WAL receive").await?;
        let row = conn
            .client
            .query_one(
                "SELECT system_identifier::text, current_setting('server_version_num')::int, \
                 current_setting('wal_segment_size')::text FROM pg_control_system()",
                &[],
            )
            .await
            .map_err(|e| db_error("cannot read the cluster's system identifier", e))?;
        let sysid: String = row.get(0);
        let version: i32 = row.get(1);
        let seg: String = row.get(2);
        conn.client
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&self.slot],
            )
            .await
            .map_err(|e| {
                db_error("cannot create the replication slot", e).with_context("slot", &self.slot)
            })?;
        let _ = conn.close().await;
        Ok(Server {
            system_identifier: sysid
                .parse()
                .map_err(|_| Error::corrupt(format!("system identifier '{sysid}'")))?,
            version: (version / 10000) as u32,
            segment_size: parse_segment_size(&seg)?,
        })
    }

    async fn archive(&self, server: &Server) -> Result<WalArchive> {
        match WalArchive::open(&self.repo, server.system_identifier).await {
            Ok(a) => Ok(a),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                WalArchive::register(
                    &self.repo,
                    WalCluster {
                        format: dr_core::wal::layout::WAL_FORMAT,
                        system_identifier: server.system_identifier,
                        segment_bytes: server.segment_size,
                        pg_version: server.version,
                        created_at: Utc::now(),
                    },
                )
                .await
            }
            Err(e) => Err(e),
        }
    }

    fn spawn_receiver(&self) -> Result<tokio::process::Child> {
        let program = find_program(
            self.bin_dir.as_deref(),
            "pg_receivewal",
            crate::tools::INSTALL_CLIENT,
        )?;
        let mut cmd = std::process::Command::new(&program);
        cmd.arg("--directory")
            .arg(&self.spool)
            .arg(format!("--slot={}", self.slot))
            .args(["--synchronous", "--no-loop", "--status-interval=1"]);
        let dbname = self.config.get_dbname().unwrap_or("postgres").to_string();
        apply_libpq_env(&mut cmd, &self.config, &dbname);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.spawn()
            .map_err(|e| spawn_failed("pg_receivewal", &program, e))
    }

    /// Store what the spool holds that is not stored yet. See the [module docs](self).
    async fn sweep(
        &self,
        archive: &WalArchive,
        server: &Server,
        state: &mut SpoolState,
        report: &mut ReceiveReport,
    ) -> Result<()> {
        let size = archive.segment_size();
        let mut complete: Vec<(WalFile, PathBuf)> = Vec::new();
        let mut growing: Option<(SegmentId, PathBuf)> = None;
        let entries = std::fs::read_dir(&self.spool)
            .map_err(|e| Error::io(format!("cannot list {}", self.spool.display()), e))?;
        for e in entries.filter_map(|e| e.ok()) {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match archive.parse_name(&name) {
                Ok(f @ (WalFile::Segment(_) | WalFile::History(_))) => complete.push((f, e.path())),
                Ok(WalFile::Partial(s)) if growing.as_ref().is_none_or(|(g, _)| s > *g) => {
                    growing = Some((s, e.path()))
                }
                _ => {}
            }
        }
        // Histories first, then segments in order: nothing newer is stored before older.
        complete.sort_by_key(|(f, _)| (!matches!(f, WalFile::History(_)), *f));
        for (file, path) in &complete {
            let name = file.name(size);
            if state.stored.contains(&name) {
                continue;
            }
            let data = read(path).await?;
            let contents = check_file(*file, &data, server.system_identifier, size)
                .map_err(|e| e.with_context("file", path.display()))?;
            let outcome = archive
                .push(*file, data, contents, self.encryptor.as_ref(), &self.opts)
                .await?;
            if let PushOutcome::Stored { stored_bytes } = outcome {
                report.stored_bytes += stored_bytes;
            }
            if let WalFile::Segment(s) = file {
                report.segments += 1;
                self.reached(report, Lsn(s.start(size).0 + size.bytes()));
            }
            state.stored.insert(name);
        }
        // Keep only the newest complete segment locally: where pg_receivewal resumes.
        let segments: Vec<&PathBuf> = complete
            .iter()
            .filter(|(f, _)| matches!(f, WalFile::Segment(_)))
            .map(|(_, p)| p)
            .collect();
        if let Some((_, older)) = segments.split_last() {
            for p in older {
                let _ = std::fs::remove_file(p);
            }
        }

        let Some((segment, path)) = growing else {
            return Ok(());
        };
        // pg_receivewal renames the file when the segment completes: the next sweep
        // stores it complete.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        let seen = (
            path.display().to_string(),
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        if state.partial_seen.as_ref() == Some(&seen) {
            return Ok(());
        }
        let data = match read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let header =
            SegmentHeader::parse(&data).map_err(|e| e.with_context("file", path.display()))?;
        check_file(
            WalFile::Partial(segment),
            &data,
            server.system_identifier,
            size,
        )
        .map_err(|e| e.with_context("file", path.display()))?;
        let contents = scan_segment(&data, &header);
        let start = segment.start(size).0;
        let end = contents
            .end_lsn
            .map_or(0, |l| l.0.saturating_sub(start).min(data.len() as u64))
            as u32;
        state.partial_seen = Some(seen);
        if end == 0 || state.copied.get(&segment).is_some_and(|c| *c >= end) {
            return Ok(());
        }
        let copy = data.slice(..end as usize);
        let outcome = archive
            .push_streamed(
                segment,
                copy,
                Some(contents),
                self.encryptor.as_ref(),
                &self.opts,
            )
            .await?;
        if let PushOutcome::Stored { stored_bytes } = outcome {
            report.stored_bytes += stored_bytes;
            report.partial_copies += 1;
        }
        state.copied.retain(|s, _| *s >= segment);
        state.copied.insert(segment, end);
        self.reached(report, Lsn(start + u64::from(end)));
        Ok(())
    }

    fn reached(&self, report: &mut ReceiveReport, lsn: Lsn) {
        if report.reach.is_none_or(|r| lsn > r) {
            report.reach = Some(lsn);
            report.reach_stored_at = Some(Utc::now());
        }
    }
}

/// Ask `pg_receivewal` to stop (SIGINT): it flushes what it received and exits.
async fn interrupt(child: &tokio::process::Child) {
    let Some(pid) = child.id() else { return };
    let _ = tokio::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

async fn read(path: &Path) -> Result<Bytes> {
    tokio::fs::read(path).await.map(Bytes::from).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        Error::new(kind, format!("cannot read {}", path.display())).with_source(e)
    })
}

/// Slot names are what PostgreSQL allows: lower-case letters, digits and underscores.
pub fn check_slot_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "'{name}' is not a replication slot name: use 1 to 63 lower-case letters, digits \
             and underscores"
        )))
    }
}

/// `wal_segment_size` as `SHOW` prints it (`16MB`, `1GB`).
fn parse_segment_size(text: &str) -> Result<SegmentSize> {
    let bad = || Error::corrupt(format!("the server reports wal_segment_size '{text}'"));
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = match unit {
        "" | "B" => n,
        "kB" => n << 10,
        "MB" => n << 20,
        "GB" => n << 30,
        _ => return Err(bad()),
    };
    SegmentSize::new(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sizes_and_slot_names_are_checked() {
        assert_eq!(parse_segment_size("16MB").unwrap(), SegmentSize::DEFAULT);
        assert_eq!(parse_segment_size("1GB").unwrap().bytes(), 1 << 30);
        assert!(parse_segment_size("16 parsecs").is_err());
        assert!(check_slot_name("dr_receive_1").is_ok());
        for bad in ["", "Upper", "has-dash", "x;drop"] {
            assert!(check_slot_name(bad).is_err(), "{bad}");
        }
    }
}
