//! Throwaway PostgreSQL clusters for tests (cargo feature `testing`).
//!
//! [`TestCluster::start`] runs `initdb` into a fresh temporary directory and starts a server
//! on a free port of 127.0.0.1 with trust authentication for the user `postgres`, in about a
//! second; dropping the cluster stops the server (`pg_ctl stop -m immediate`) and removes the
//! directory. Every cluster has its own directory and port, so tests run in parallel freely.
//!
//! The server programs come from `$DR_PG_BINDIR`, else `pg_config --bindir`, else the newest
//! `/usr/lib/postgresql/*/bin`. When they are missing, `start` fails with
//! [`ErrorKind::MissingPrerequisite`] and the command that installs them: a test that needs
//! PostgreSQL fails loudly instead of skipping. `initdb` refuses to run as root; as root the
//! programs run through `runuser -u postgres --` on a directory owned by `postgres`.
//!
//! # Example: test your own recovery job
//!
//! ```
//! use dr_core::{Dumper, Restorer};
//! use dr_db::testing::TestCluster;
//! use dr_db::{PgDumper, PgRestorer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> dr_core::Result<()> {
//! let cluster = TestCluster::start().await?;
//! cluster.create_database("shop").await?;
//! cluster
//!     .execute_sql("shop", "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1), (2)")
//!     .await?;
//!
//! // Your job: dump `shop` and restore it as `shop_drill`.
//! let dump = PgDumper::new(cluster.config("shop")).start().await?;
//! let payload = dr_core::stage::collect(dump.stream).await?;
//! let stats = dump.completion.finish().await?;
//! let report = PgRestorer::new(cluster.config("shop_drill"))
//!     .create(true)
//!     .restore(&dump.source, &stats, dr_core::stage::once_bytes(payload.into(), 1 << 20))
//!     .await?;
//! assert_eq!(report.tables_checked, 1);
//!
//! let client = cluster.connect("shop_drill").await?;
//! let n: i64 = client.query_one("SELECT count(*) FROM orders", &[]).await.unwrap().get(0);
//! assert_eq!(n, 2);
//! # Ok(())
//! # }
//! ```
//!
//! A test process killed outright (SIGKILL) cannot run `Drop`: its servers keep running and
//! their directories stay in the temporary directory (`dr-pg-*`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use dr_core::{Error, ErrorKind, Result};
use tempfile::TempDir;
use tokio_postgres::Config;

use crate::conn::{connect, db_error, quote_ident};
use crate::server::{effective_uid_is_root, free_port, server_bin_dir, tail, user_ids};

/// How many ports `start` tries when another process takes the one it picked.
const PORT_ATTEMPTS: usize = 8;

/// A PostgreSQL server in a temporary directory, stopped and removed on drop.
///
/// User `postgres`, trust authentication, listening on 127.0.0.1 only, `fsync=off`.
pub struct TestCluster {
    dir: Option<TempDir>,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `Some("postgres")` when the programs run through `runuser` (we are root).
    run_as: Option<String>,
    /// Whether the server accepts TCP connections over TLS only.
    tls: bool,
}

impl fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCluster")
            .field("port", &self.port)
            .field("data", &self.data)
            .field("bin", &self.bin)
            .field("run_as", &self.run_as)
            .field("tls", &self.tls)
            .finish()
    }
}

impl TestCluster {
    /// Create and start a new cluster. Fails with [`ErrorKind::MissingPrerequisite`] (and
    /// the install command) when the server programs or, as root, the `postgres` user are
    /// missing.
    pub async fn start() -> Result<TestCluster> {
        TestCluster::create(None).await
    }

    /// Like [`TestCluster::start`], with `settings` (lines of `postgresql.conf`, e.g.
    /// `archive_mode = on`) in force from the first start.
    pub async fn start_with_settings(settings: &str) -> Result<TestCluster> {
        let mut cluster = TestCluster::prepare().await?;
        cluster.initdb().await?;
        cluster.append_conf(settings)?;
        cluster.start_server().await?;
        Ok(cluster)
    }

    /// Start a server on an existing data directory `data` (a restored one), which is given
    /// to the server's user and mode 0700 first. Its parent directories must be traversable
    /// by that user. The directory is not removed on drop; the server is stopped.
    pub async fn start_on(data: &Path) -> Result<TestCluster> {
        use std::os::unix::fs::PermissionsExt;
        let mut cluster = TestCluster::prepare().await?;
        cluster.data = data.to_path_buf();
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io("cannot set the data directory's mode", e))?;
        cluster.give_to_server(data).await?;
        cluster.start_server().await?;
        Ok(cluster)
    }

    /// Give `path` (recursively) to the user the server runs as, when that is not us (as
    /// root): a repository the server archives into, a key file its `archive_command` reads.
    pub async fn give_to_server(&self, path: &Path) -> Result<()> {
        let Some(user) = &self.run_as else {
            return Ok(());
        };
        let out = tokio::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{user}:"))
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::io("cannot run chown", e))?;
        if !out.status.success() {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "chown {} failed: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(())
    }

    /// Stop the server at once (`pg_ctl stop -m immediate`), as a crash would.
    pub fn stop_immediately(&mut self) {
        self.stop();
    }

    /// The server's log so far (its last ~2 KB).
    pub fn log_tail(&self) -> String {
        let log = self.dir.as_ref().map(|d| d.path().join("server.log"));
        tail(
            &log.and_then(|l| std::fs::read_to_string(l).ok())
                .unwrap_or_default(),
        )
    }

    fn append_conf(&self, settings: &str) -> Result<()> {
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .map_err(|e| Error::io("cannot read the test cluster's configuration", e))?;
        text.push('\n');
        text.push_str(settings);
        text.push('\n');
        std::fs::write(&conf, text)
            .map_err(|e| Error::io("cannot write the test cluster's configuration", e))
    }

    /// A cluster value with its temporary directory (given to the server's user), not yet
    /// initialised or started.
    async fn prepare() -> Result<TestCluster> {
        let bin = server_bin_dir()?;
        let run_as = if effective_uid_is_root() {
            Some("postgres".to_string())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("dr-pg-")
            .tempdir()
            .map_err(|e| Error::io("cannot create a temporary directory", e))?;
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user).await?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| Error::io("cannot give the cluster directory to postgres", e))?;
        }
        Ok(TestCluster {
            data: dir.path().join("data"),
            dir: Some(dir),
            bin,
            port: 0,
            run_as,
            tls: false,
        })
    }

    /// Like [`TestCluster::start`], but the server accepts TCP connections over TLS only,
    /// with the certificate chain `cert_pem` and its private key `key_pem` (PEM). The
    /// cluster's [`config`](Self::config) and [`url`](Self::url) ask for
    /// `sslmode=require`.
    pub async fn start_with_tls(cert_pem: &str, key_pem: &str) -> Result<TestCluster> {
        TestCluster::create(Some((cert_pem, key_pem))).await
    }

    async fn create(tls: Option<(&str, &str)>) -> Result<TestCluster> {
        let bin = server_bin_dir()?;
        let run_as = if effective_uid_is_root() {
            Some("postgres".to_string())
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("dr-pg-")
            .tempdir()
            .map_err(|e| Error::io("cannot create a temporary directory", e))?;
        let owner = match &run_as {
            Some(user) => Some(user_ids(user).await?),
            None => None,
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| Error::io("cannot give the cluster directory to postgres", e))?;
        }
        let mut cluster = TestCluster {
            data: dir.path().join("data"),
            dir: Some(dir),
            bin,
            port: 0,
            run_as,
            tls: tls.is_some(),
        };
        cluster.initdb().await?;
        if let Some((cert_pem, key_pem)) = tls {
            cluster.require_tls(cert_pem, key_pem, owner)?;
        }
        cluster.start_server().await?;
        Ok(cluster)
    }

    /// Install the server certificate and key, turn `ssl` on, and refuse TCP connections
    /// without TLS.
    fn require_tls(&self, cert_pem: &str, key_pem: &str, owner: Option<(u32, u32)>) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let write = |name: &str, text: &str, mode: u32| -> Result<()> {
            let path = self.data.join(name);
            let io = |e| Error::io("cannot write the test cluster's TLS files", e);
            std::fs::write(&path, text).map_err(io)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(io)?;
            }
            Ok(())
        };
        write("server.crt", cert_pem, 0o644)?;
        // The server refuses a key that others can read.
        write("server.key", key_pem, 0o600)?;
        write(
            "pg_hba.conf",
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
            0o600,
        )?;
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .map_err(|e| Error::io("cannot read the test cluster's configuration", e))?;
        text.push_str("\nssl = on\n");
        std::fs::write(&conf, text)
            .map_err(|e| Error::io("cannot write the test cluster's configuration", e))?;
        Ok(())
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server programs in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// A connection configuration for database `dbname` as user `postgres`.
    pub fn config(&self, dbname: &str) -> Config {
        let mut c = Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(dbname)
            .application_name("dr-test");
        if self.tls {
            c.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        c
    }

    /// `postgres://postgres@127.0.0.1:PORT/dbname` (the name percent-encoded).
    pub fn url(&self, dbname: &str) -> String {
        let mut encoded = String::new();
        for b in dbname.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        let tls = if self.tls { "?sslmode=require" } else { "" };
        format!("postgres://postgres@127.0.0.1:{}/{encoded}{tls}", self.port)
    }

    /// A client connected to `dbname`; its connection runs on a spawned task that logs its
    /// error (through `tracing`) if it fails.
    pub async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client> {
        let conn = connect(&self.config(dbname), "test")
            .await
            .map_err(|e| e.with_context("cluster", "test cluster"))?;
        Ok(conn.client)
    }

    /// `CREATE DATABASE "name"`.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        self.execute_sql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(name)),
        )
        .await
    }

    /// Run `sql` (one or more statements, no parameters) in database `dbname`.
    pub async fn execute_sql(&self, dbname: &str, sql: &str) -> Result<()> {
        let conn = connect(&self.config(dbname), "test").await?;
        let r = conn
            .client
            .batch_execute(sql)
            .await
            .map_err(|e| db_error("test SQL failed", e).with_context("database", dbname));
        let _ = conn.close().await;
        r
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let path = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = tokio::process::Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(path);
                c
            }
            None => tokio::process::Command::new(path),
        };
        if let Some(dir) = &self.dir {
            // As another user, our own working directory may be unreadable.
            cmd.current_dir(dir.path());
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    async fn run(&self, what: &'static str, mut cmd: tokio::process::Command) -> Result<()> {
        let out = cmd.output().await.map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::MissingPrerequisite
            } else {
                ErrorKind::Io
            };
            Error::new(kind, format!("cannot run {what}")).with_source(e)
        })?;
        if out.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        Err(Error::new(ErrorKind::Database, format!("{what} failed"))
            .with_context("status", out.status)
            .with_context("output", tail(&text)))
    }

    async fn initdb(&self) -> Result<()> {
        let mut last = None;
        for locale in ["C.UTF-8", "C"] {
            let mut cmd = self.command("initdb");
            cmd.arg("-D")
                .arg(&self.data)
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
                .arg(format!("--locale={locale}"));
            match self.run("initdb", cmd).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    let _ = std::fs::remove_dir_all(&self.data);
                }
            }
        }
        Err(last.expect("initdb was tried"))
    }

    async fn start_server(&mut self) -> Result<()> {
        let dir = self
            .dir
            .as_ref()
            .expect("cluster directory")
            .path()
            .to_path_buf();
        let log = dir.join("server.log");
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let mut cmd = self.command("pg_ctl");
            cmd.arg("-D")
                .arg(&self.data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -p {port} -k '{}' -c fsync=off -c full_page_writes=off -c synchronous_commit=off",
                    dir.display()
                ))
                .arg("start")
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            match self.run("pg_ctl start", cmd).await {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) => {
                    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
                    let port_taken = server_log.contains("could not bind")
                        || server_log.contains("Address already in use")
                        || server_log.contains("could not create any TCP/IP sockets");
                    last = Some(e.with_context("server log", tail(&server_log)));
                    if !port_taken {
                        break;
                    }
                    // Someone took the port between our probe and the server's bind.
                    let _ = std::fs::write(&log, b"");
                }
            }
        }
        Err(last.expect("the server start was tried"))
    }

    /// Stop the server now (also done on drop).
    fn stop(&mut self) {
        if self.port == 0 {
            return;
        }
        self.port = 0;
        let program = self.bin.join("pg_ctl");
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&program);
                c
            }
            None => std::process::Command::new(&program),
        };
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir.path());
        }
        let stopped = cmd
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !stopped {
            // Last resort: the postmaster's pid, from its pid file.
            if let Ok(pidfile) = std::fs::read_to_string(self.data.join("postmaster.pid")) {
                if let Some(pid) = pidfile.lines().next().map(str::trim) {
                    if pid.parse::<u32>().is_ok() {
                        let _ = std::process::Command::new("kill")
                            .args(["-KILL", pid])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                }
            }
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}
