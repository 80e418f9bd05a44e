//! Pushing ahead of PostgreSQL in a background process, as `pgbackrest archive-push
//! --archive-async` does.
//!
//! PostgreSQL waits for `archive_command` to exit, so nothing can go on pushing in the
//! process it started once that process has answered. Instead, a call for segment X
//! ([`WalPusher::push`] with [`WalPusher::background`] set):
//!
//! 1. reports (and clears) a failure the background pusher recorded in the spool: exit
//!    non-zero, PostgreSQL logs it and retries;
//! 2. returns at once if X is marked stored in the spool with X's exact bytes;
//! 3. otherwise makes sure a background pusher runs (starting a detached one when none holds
//!    the spool's lock) and waits until X is marked stored or a failure is recorded. A pusher
//!    that dies without either (killed) is replaced once; if that one also goes without a
//!    word, the call pushes X itself.
//!
//! The background pusher ([`WalPusher::run_pusher`]) holds the spool's lock (so at most one
//! runs), pushes the segments waiting in `archive_status` oldest first, `parallel` at once,
//! marks each one stored only after its record is committed, and exits after `pusher_idle`
//! without new segments. On a failure it records it in the spool, starts nothing new, lets
//! the pushes under way finish and exits. A killed pusher leaves no marker for what it had
//! not committed, and its lock goes with it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use dr_core::wal::WalArchive;
use dr_core::{Error, ErrorKind, Result};

use super::header::ControlFile;
use super::push::{read_file, PushReport, Pushed, WalPusher};

/// How a call starts a background pusher: a program and its arguments, run detached (its
/// own process group, no standard input or output) in the call's working directory.
#[derive(Debug, Clone)]
pub struct PusherCommand {
    /// The program (for drctl, drctl itself).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
}

/// What a background pusher did before it exited.
#[derive(Debug, Clone, Serialize)]
pub struct PusherReport {
    /// Segments it stored (or found archived already) and marked in the spool.
    pub pushed: usize,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// How often a waiting call looks at the spool, and a pusher at `archive_status`.
const POLL: Duration = Duration::from_millis(10);
const RESCAN: Duration = Duration::from_millis(50);
/// How long a call gives a pusher it started to take the lock.
const START_GRACE: Duration = Duration::from_secs(5);
/// Pushers a call starts before it pushes its file itself.
const STARTS: usize = 2;

impl WalPusher {
    /// Whether `path` is the segment `name` in this data directory's `pg_wal`, waiting to be
    /// archived (a `.ready` status): what a background pusher would push.
    pub(super) fn is_waiting(&self, path: &Path, name: &str) -> bool {
        use std::os::unix::fs::MetadataExt;
        if !is_segment_name(name) || !self.archive_status().join(format!("{name}.ready")).exists() {
            return false;
        }
        let in_pg_wal = self.pgdata.join("pg_wal").join(name);
        match (std::fs::metadata(path), std::fs::metadata(in_pg_wal)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// The call for a waiting segment when a background pusher does the pushing (see the
    /// comments at the top of `wal/background.rs`).
    pub(super) async fn push_behind(
        &self,
        path: &Path,
        name: &str,
        started: Instant,
    ) -> Result<PushReport> {
        let data = read_file(path).await?;
        let repository_id = self.repo.config().repository_id.clone();
        let mut starts = 0;
        let mut last_start: Option<Instant> = None;
        loop {
            if let Some(failure) = self.spool.take_failure() {
                return Err(failure.to_error().with_context("file", name));
            }
            if self.spool.is_stored(name, &repository_id, &data) {
                self.spool.forget(name);
                self.spool.clear_stale(&self.archive_status());
                // Keep a pusher working ahead while files wait that nobody is pushing.
                if !self.spool.pusher_running() && self.unmarked_waiting(name) {
                    let _ = self.start_pusher();
                }
                return Ok(PushReport {
                    name: name.to_string(),
                    outcome: Pushed::FromSpool,
                    stored_bytes: 0,
                    ahead: Vec::new(),
                    ahead_failed: Vec::new(),
                    duration_ms: started.elapsed().as_millis() as u64,
                });
            }
            if self.spool.pusher_running() {
                last_start = None;
            } else if last_start.is_some_and(|t| t.elapsed() < START_GRACE) {
                // Started, not yet holding the lock.
            } else if starts < STARTS {
                starts += 1;
                match self.start_pusher() {
                    Ok(()) => last_start = Some(Instant::now()),
                    Err(e) => {
                        tracing::warn!(error = %e.report(), "cannot start a background WAL pusher; pushing in this call");
                        starts = STARTS;
                    }
                }
            } else {
                return self.push_here(name, data, started).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Push `name` in this call, without pushing ahead.
    async fn push_here(
        &self,
        name: &str,
        data: bytes::Bytes,
        started: Instant,
    ) -> Result<PushReport> {
        let control = ControlFile::read(&self.pgdata)?;
        let archive = self.archive(&control, name, &data).await?;
        let file = archive.parse_name(name)?;
        let mut report = PushReport {
            name: name.to_string(),
            outcome: Pushed::Stored,
            stored_bytes: 0,
            ahead: Vec::new(),
            ahead_failed: Vec::new(),
            duration_ms: 0,
        };
        match self.push_one(&archive, &control, file, data).await? {
            dr_core::wal::PushOutcome::Stored { stored_bytes } => {
                report.stored_bytes = stored_bytes
            }
            dr_core::wal::PushOutcome::AlreadyArchived => report.outcome = Pushed::AlreadyArchived,
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Start a detached background pusher.
    fn start_pusher(&self) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let command = self
            .background
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Other, "no background pusher is configured"))?;
        std::process::Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Not in PostgreSQL's archiver's process group: its signals are not for us.
            .process_group(0)
            .spawn()
            .map(drop)
            .map_err(|e| Error::io(format!("cannot start {}", command.program.display()), e))
    }

    /// Whether a segment other than `name` waits in `archive_status` without a marker.
    fn unmarked_waiting(&self, name: &str) -> bool {
        self.waiting_segments()
            .iter()
            .any(|n| n != name && !self.spool.has_marker(n))
    }

    /// The segments waiting in `archive_status` (a `.ready` status), oldest first.
    fn waiting_segments(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.archive_status()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_str()?.strip_suffix(".ready")?.to_string();
                is_segment_name(&n).then_some(n)
            })
            .collect();
        names.sort();
        names
    }

    /// Be the background pusher (see the comments at the top of `wal/background.rs`): `None`
    /// when another one is running. A failure is recorded in the spool for the next call to
    /// report, and returned.
    pub async fn run_pusher(&self) -> Result<Option<PusherReport>> {
        let Some(_lock) = self.spool.lock_pusher()? else {
            return Ok(None);
        };
        match self.push_waiting().await {
            Ok(report) => Ok(Some(report)),
            Err((file, e)) => {
                if let Err(not_recorded) = self.spool.record_failure(file.as_deref(), &e) {
                    tracing::error!(error = %not_recorded.report(), "cannot record the pusher's failure");
                }
                Err(e)
            }
        }
    }

    /// Push waiting segments until none came for `pusher_idle`, or one failed.
    async fn push_waiting(&self) -> std::result::Result<PusherReport, (Option<String>, Error)> {
        let started = Instant::now();
        let control = ControlFile::read(&self.pgdata).map_err(|e| (None, e))?;
        let repository_id = self.repo.config().repository_id.clone();
        let mut archive: Option<WalArchive> = None;
        let mut running: JoinSet<(String, Result<()>)> = JoinSet::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut done: HashSet<String> = HashSet::new();
        let mut failed: Option<(Option<String>, Error)> = None;
        let mut idle_since = Instant::now();
        loop {
            if failed.is_none() && running.len() < self.parallel {
                for name in self.waiting_segments() {
                    if running.len() >= self.parallel {
                        break;
                    }
                    if busy.contains(&name) || done.contains(&name) || self.spool.has_marker(&name)
                    {
                        continue;
                    }
                    let path = self.pgdata.join("pg_wal").join(&name);
                    if archive.is_none() {
                        let first = async {
                            let data = read_file(&path).await?;
                            self.archive(&control, &name, &data).await
                        };
                        archive = Some(first.await.map_err(|e| (Some(name.clone()), e))?);
                    }
                    let archive = archive.clone().expect("opened above");
                    let this = self.clone();
                    let repository_id = repository_id.clone();
                    busy.insert(name.clone());
                    running.spawn(async move {
                        let r = async {
                            let data = read_file(&path).await?;
                            let file = archive.parse_name(&name)?;
                            this.push_one(&archive, &control, file, data.clone())
                                .await?;
                            this.spool.mark_stored(&name, &repository_id, &data)
                        }
                        .await;
                        (name, r)
                    });
                }
            }
            if running.is_empty() {
                if let Some(f) = failed {
                    return Err(f);
                }
                if idle_since.elapsed() >= self.pusher_idle {
                    return Ok(PusherReport {
                        pushed: done.len(),
                        duration_ms: started.elapsed().as_millis() as u64,
                    });
                }
                tokio::time::sleep(RESCAN).await;
                continue;
            }
            let rescan = running.len() < self.parallel && failed.is_none();
            tokio::select! {
                joined = running.join_next() => {
                    let (name, r) = match joined.expect("not empty") {
                        Ok(pair) => pair,
                        Err(e) => {
                            failed.get_or_insert((None, Error::new(ErrorKind::Other, "a push task panicked").with_source(e)));
                            continue;
                        }
                    };
                    busy.remove(&name);
                    match r {
                        Ok(()) => {
                            done.insert(name);
                            idle_since = Instant::now();
                        }
                        Err(e) => {
                            tracing::warn!(file = %name, error = %e.report(), "background push failed");
                            failed.get_or_insert((Some(name), e));
                        }
                    }
                }
                _ = tokio::time::sleep(RESCAN), if rescan => {}
            }
        }
    }
}

/// A complete segment's name: 24 hexadecimal digits.
fn is_segment_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}
