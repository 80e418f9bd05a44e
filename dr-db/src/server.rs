//! A PostgreSQL server that dr starts on a restored data directory, for a physical drill:
//! started, waited for until recovery has ended, stopped, and nothing else.
//!
//! [`ScratchServer::start`] runs `pg_ctl start` on `<dir>/pgdata` with settings that keep the
//! copy apart from production whatever its `postgresql.conf` says: no TCP listener at all
//! (`listen_addresses = ''`), one Unix socket in the private directory `<dir>/socket` (mode
//! 0700), an `hba_file` of its own that trusts that socket only (the restored `pg_hba.conf`
//! may demand passwords dr does not have), `archive_mode = off`, `ssl = off` (the
//! production certificate paths need not exist here). The port, free when chosen, only names
//! the socket. As root the server runs as `postgres` (PostgreSQL refuses root): the directory
//! is given to that user, which must then be able to read the repository and key its
//! `restore_command` uses.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dr_core::{Error, ErrorKind, Result};
use tokio_postgres::Config;

use crate::conn::{connect, db_error};
use crate::tools;

/// The longest Unix socket path the kernel accepts (`sun_path`, less the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How long a just-started postmaster may take to write its pid file.
const STARTUP_GRACE: Duration = Duration::from_secs(5);

/// What a recovered server holds ([`ScratchServer::recovered`]).
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The commit time of the newest transaction recovery replayed (`None`: none replayed).
    pub replayed_to: Option<DateTime<Utc>>,
    /// The databases that accept connections (templates left out).
    pub databases: Vec<String>,
}

/// A server running on a restored data directory; stopped (immediately) on drop if
/// [`ScratchServer::stop`] was not called.
#[derive(Debug)]
pub struct ScratchServer {
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<String>,
    running: bool,
}

impl ScratchServer {
    /// Start a server on `dir/pgdata` (a restored data directory), logging to
    /// `dir/server.log`. Returns once the postmaster runs; recovery goes on behind it (see
    /// [`ScratchServer::wait_until_promoted`]).
    pub async fn start(dir: &Path) -> Result<ScratchServer> {
        use std::os::unix::fs::PermissionsExt;
        let io = |what: &str, e| Error::io(format!("cannot {what} in {}", dir.display()), e);
        let data = dir.join("pgdata");
        let socket = dir.join("socket");
        std::fs::create_dir_all(&socket).map_err(|e| io("create the socket directory", e))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("set the socket directory's mode", e))?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("set the data directory's mode", e))?;
        // A data directory whose configuration lived elsewhere (Debian's /etc/postgresql)
        // has none; the server refuses to start without one.
        let conf = data.join("postgresql.conf");
        if !conf.exists() {
            std::fs::write(
                &conf,
                b"# Written by dr: the backup held no postgresql.conf.\n",
            )
            .map_err(|e| io("write postgresql.conf", e))?;
        }
        let hba = dir.join("pg_hba.conf");
        std::fs::write(
            &hba,
            b"# Written by dr for a drill: only the private socket, no TCP.\nlocal all all trust\n",
        )
        .map_err(|e| io("write pg_hba.conf", e))?;
        let port = free_port()?;
        if socket.join(format!(".s.PGSQL.{port}")).as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::invalid(format!(
                "the scratch directory {} is too deep for a Unix socket path (at most {MAX_SOCKET_PATH} bytes): choose a shorter one",
                dir.display()
            )));
        }
        let run_as = effective_uid_is_root().then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user).await?;
            chown_tree(dir, uid, gid)?;
        }
        let server = ScratchServer {
            dir: dir.to_path_buf(),
            data,
            bin: server_bin_dir()?,
            port,
            run_as,
            running: false,
        };
        let mut cmd = server.command("pg_ctl");
        cmd.arg("-D")
            .arg(&server.data)
            .arg("-l")
            .arg(server.log_path())
            .arg("-W")
            .arg("-o")
            .arg(format!(
                "-c listen_addresses='' -p {port} -k '{}' -c hba_file='{}' -c archive_mode=off -c ssl=off",
                socket.display(),
                hba.display()
            ))
            .arg("start");
        let out = cmd
            .output()
            .await
            .map_err(|e| Error::io("cannot run pg_ctl start", e))?;
        if !out.status.success() {
            return Err(Error::new(
                ErrorKind::Database,
                format!(
                    "pg_ctl start failed on {}: {}",
                    server.data.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            )
            .with_context("server log", server.log_tail()));
        }
        let mut server = server;
        server.running = true;
        Ok(server)
    }

    /// The (Unix socket) port the server was given.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection to `dbname` as `user` over the private socket.
    pub fn config(&self, user: &str, dbname: &str) -> Config {
        let mut c = Config::new();
        c.host_path(self.dir.join("socket"))
            .port(self.port)
            .user(user)
            .dbname(dbname)
            .application_name("dr-drill")
            .connect_timeout(Duration::from_secs(5));
        c
    }

    /// Wait until the server accepts queries as `user` and has left recovery (it reached
    /// its target and promoted). Fails when the server stops on the way (recovery could not
    /// continue: a gap, a damaged segment, an unreachable target), naming the log's tail, or
    /// after `timeout`.
    pub async fn wait_until_promoted(&self, user: &str, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let deadline = started + timeout;
        let config = self.config(user, "postgres");
        loop {
            let state = match connect(&config, "drill").await {
                Ok(conn) => {
                    let r = conn
                        .client
                        .query_one("SELECT pg_is_in_recovery()", &[])
                        .await
                        .map(|row| row.get::<_, bool>(0));
                    let _ = conn.close().await;
                    r.ok()
                }
                Err(_) => None,
            };
            if state == Some(false) {
                return Ok(());
            }
            // pg_ctl status says "not running" until the postmaster has written its pid file.
            if state.is_none() && started.elapsed() > STARTUP_GRACE && !self.is_running().await {
                return Err(Error::new(
                    ErrorKind::Database,
                    "the restored server stopped before recovery ended",
                )
                .with_context("server log", self.log_tail()));
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Database,
                    format!(
                        "the restored server was still {} after {} s",
                        if state.is_some() {
                            "in recovery"
                        } else {
                            "not accepting connections"
                        },
                        timeout.as_secs()
                    ),
                )
                .with_context("server log", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the promoted server recovered: its newest replayed commit and its databases.
    pub async fn recovered(&self, user: &str) -> Result<Recovered> {
        let conn = connect(&self.config(user, "postgres"), "drill").await?;
        let result = async {
            let epoch: Option<f64> = conn
                .client
                .query_one(
                    "SELECT extract(epoch FROM pg_last_xact_replay_timestamp())::float8",
                    &[],
                )
                .await
                .map_err(|e| db_error("cannot read the recovered point", e))?
                .get(0);
            let databases = conn
                .client
                .query(
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                    &[],
                )
                .await
                .map_err(|e| db_error("cannot list the recovered databases", e))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok(Recovered {
                replayed_to: epoch.and_then(|e| {
                    DateTime::<Utc>::from_timestamp_micros((e * 1_000_000.0).round() as i64)
                }),
                databases,
            })
        }
        .await;
        let _ = conn.close().await;
        result
    }

    /// Stop the server (`pg_ctl stop -m fast`: sessions ended, a shutdown checkpoint).
    pub async fn stop(mut self) -> Result<()> {
        self.running = false;
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        let out = cmd
            .output()
            .await
            .map_err(|e| Error::io("cannot run pg_ctl stop", e))?;
        if !out.status.success() {
            return Err(Error::new(
                ErrorKind::Database,
                format!(
                    "pg_ctl stop failed on {}: {}",
                    self.data.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(())
    }

    /// The last ~2 KB of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(self.log_path()).unwrap_or_default())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Whether the postmaster still runs (`pg_ctl status`).
    async fn is_running(&self) -> bool {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(&self.data).arg("status");
        matches!(cmd.output().await, Ok(out) if out.status.success())
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = run_as_command(&self.bin.join(program), self.run_as.as_deref());
        // As another user, our own working directory may be unreadable.
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        let mut cmd = std::process::Command::new(match &self.run_as {
            Some(_) => PathBuf::from("runuser"),
            None => self.bin.join("pg_ctl"),
        });
        if let Some(user) = &self.run_as {
            cmd.arg("-u")
                .arg(user)
                .arg("--")
                .arg(self.bin.join("pg_ctl"));
        }
        let _ = cmd
            .current_dir(&self.dir)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `program`, run as `user` through `runuser` when one is given.
pub(crate) fn run_as_command(program: &Path, user: Option<&str>) -> tokio::process::Command {
    match user {
        Some(user) => {
            let mut c = tokio::process::Command::new("runuser");
            c.arg("-u").arg(user).arg("--").arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    }
}

/// Give `dir` and everything under it to `uid:gid`.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    let io = |p: &Path, e| {
        Error::io(
            format!("cannot give {} to the server's user", p.display()),
            e,
        )
    };
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(|e| io(dir, e))?;
    if std::fs::symlink_metadata(dir)
        .map_err(|e| io(dir, e))?
        .is_dir()
    {
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let entry = entry.map_err(|e| io(dir, e))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// The directory holding `initdb` and `pg_ctl`.
pub(crate) fn server_bin_dir() -> Result<PathBuf> {
    let candidates = tools::candidate_bin_dirs();
    for dir in &candidates {
        if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            return Ok(dir.clone());
        }
    }
    Err(Error::new(
        ErrorKind::MissingPrerequisite,
        format!(
            "the PostgreSQL server programs (initdb, pg_ctl) are not installed; install them with `{}` (or set DR_PG_BINDIR to their directory)",
            tools::INSTALL_SERVER
        ),
    )
    .with_context(
        "searched",
        candidates
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ))
}

/// Whether we run as root, read from the owner of `/proc/self` (else `id -u`).
pub(crate) fn effective_uid_is_root() -> bool {
    if let Ok(meta) = std::fs::metadata("/proc/self") {
        return meta.uid() == 0;
    }
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The uid and gid of `user`, from `id`.
pub(crate) async fn user_ids(user: &str) -> Result<(u32, u32)> {
    let missing = || {
        Error::new(
            ErrorKind::MissingPrerequisite,
            format!(
                "PostgreSQL refuses to run as root and there is no `{user}` user to run it as; create it with `useradd --system {user}` or install PostgreSQL (`{}`)",
                tools::INSTALL_SERVER
            ),
        )
    };
    let id = |flag: &'static str| {
        let user = user.to_string();
        async move {
            let out = tokio::process::Command::new("id")
                .arg(flag)
                .arg(&user)
                .stdin(Stdio::null())
                .output()
                .await
                .ok()?;
            if !out.status.success() {
                return None;
            }
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u32>()
                .ok()
        }
    };
    let uid = id("-u").await.ok_or_else(missing)?;
    let gid = id("-g").await.ok_or_else(missing)?;
    Ok((uid, gid))
}

/// A port that was free a moment ago on 127.0.0.1.
pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("cannot find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("cannot find a free port", e))?
        .port();
    Ok(port)
}

/// The last ~2 KB of `text`, on a character boundary.
pub(crate) fn tail(text: &str) -> String {
    let text = text.trim();
    let mut start = text.len().saturating_sub(2048);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}
