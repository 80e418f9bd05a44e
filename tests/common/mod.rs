//! Shared helpers for the end-to-end tests: run the real `drctl` binary against throwaway
//! PostgreSQL clusters and temporary repositories.
#![allow(dead_code, clippy::new_without_default)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dr::db::testing::TestCluster;

/// The demo's sample database, shared with drctl rather than exported by the library.
#[path = "../../src/bin/drctl/sample.rs"]
pub mod sample;

/// A temporary repository with a fresh key.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub key: PathBuf,
}

impl Repo {
    pub fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("repo").to_str().unwrap().to_string();
        let key = dir.path().join("repo.key");
        ok(&drctl(&["keygen", "--output", key.to_str().unwrap()], &[]));
        let r = Repo { dir, url, key };
        ok(&r.run(&["init"]));
        r
    }

    /// Run drctl with `--repo` and the key in the environment (never argv).
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--repo", &self.url]);
        drctl(&all, &[("DR_KEY_FILE", self.key.to_str().unwrap())])
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        ok(&out);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "drctl {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Take a backup (`drctl backup` with `args`: `--db URL`, `--dir PATH`, …) and return
    /// its id.
    pub fn backup(&self, args: &[&str]) -> String {
        let mut all = vec!["backup"];
        all.extend_from_slice(args);
        let out = self.json(&all);
        out["id"]
            .as_str()
            .unwrap_or_else(|| panic!("drctl backup printed no id: {out}"))
            .to_string()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The payload file of a backup.
    pub fn payload(&self, id: &str) -> PathBuf {
        Path::new(&self.url)
            .join("backups")
            .join(id)
            .join("payload-0000")
    }
}

pub fn drctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drctl"));
    cmd.args(args)
        .env_remove("DR_REPO")
        .env_remove("DR_KEY_FILE")
        .env_remove("DR_PASSPHRASE")
        .env_remove("DR_DB")
        .stdin(Stdio::null());
    admin_host_env(&mut cmd);
    for (k, v) in env {
        // An empty value means "not set" (clap would take it as an empty value).
        if v.is_empty() {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd.output().expect("drctl runs")
}

#[track_caller]
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "drctl failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The failure's stderr, asserting it is one line and the exit code is `code`.
#[track_caller]
pub fn fails(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panics: {stderr}");
    assert!(
        !stderr.contains("RUST_BACKTRACE"),
        "no backtraces: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "one-line cause: {stderr}"
    );
    stderr
}

pub async fn cluster_with_sample(scale: u32) -> TestCluster {
    let cluster = TestCluster::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    cluster.create_database("app").await.unwrap();
    cluster
        .execute_sql("app", &sample::sample_sql(scale))
        .await
        .unwrap();
    cluster
}

pub async fn database_exists(cluster: &TestCluster, name: &str) -> bool {
    let c = cluster.connect("postgres").await.unwrap();
    let row = c
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) == 1
}

pub async fn count(cluster: &TestCluster, db: &str, table: &str) -> i64 {
    let c = cluster.connect(db).await.unwrap();
    c.query_one(&format!("SELECT count(*) FROM \"{table}\""), &[])
        .await
        .unwrap()
        .get(0)
}

/// Row count and a digest of every row's text of `table`, order-independent.
pub async fn table_fingerprint(cluster: &TestCluster, db: &str, table: &str) -> (i64, String) {
    let c = cluster.connect(db).await.unwrap();
    let row = c
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '') \
                 FROM \"{table}\" t"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Assert that `restored` holds the same rows as `source` in every sample table.
pub async fn assert_same_sample(cluster: &TestCluster, source: &str, restored: &str) {
    for t in sample::SAMPLE_TABLES {
        let (want, got) = (
            table_fingerprint(cluster, source, t).await,
            table_fingerprint(cluster, restored, t).await,
        );
        assert!(want.0 > 0, "sample table {t} has rows");
        assert_eq!(
            want, got,
            "table {t}: rows and content of {restored} match {source}"
        );
    }
}

/// What every drctl a test runs gets unless the test says otherwise: this test process's own
/// pin directory (never the user's ~/.config) and one administrative signing key, so that
/// `init` signs and the commands act as an administrative host. A test of a host without a
/// signing key passes `("DR_SIGNING_KEY", "")`.
pub fn admin_host_env(cmd: &mut Command) {
    let (trust, admin) = admin_paths();
    cmd.env("DR_TRUST_DIR", trust).env("DR_SIGNING_KEY", admin);
}

/// The administrative signing key of the repositories `drctl init` makes in these tests, for
/// library calls on them that write (backups, manifests, prune).
pub fn admin_key() -> std::sync::Arc<dr::core::signing::SigningKey> {
    std::sync::Arc::new(dr::crypto::read_signing_key_file(&admin_paths().1).unwrap())
}

/// The pin directory and administrative key file shared by this test process.
pub fn admin_paths() -> (PathBuf, PathBuf) {
    static PATHS: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    PATHS
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap().keep();
            let admin = dir.join("admin.key");
            let out = Command::new(env!("CARGO_BIN_EXE_drctl"))
                .args(["keygen", "--signing", "--output", admin.to_str().unwrap()])
                .output()
                .expect("drctl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (dir.join("trust"), admin)
        })
        .clone()
}

/// The `promtool` of Debian's `prometheus` package.
pub fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("promtool is missing; install it with: sudo apt-get install -y prometheus (or run scripts/prereqs.sh)")
    })
}

/// Run `promtool check metrics` on `text`; panics with its complaints.
pub fn promtool_accepts(text: &str) {
    use std::io::Write;
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start a server on a restored data directory and wait (up to 120 s) until recovery has
/// ended and it accepts writes; `what` names the restore in the failure message.
pub async fn start_recovered(pgdata: &Path, what: &str) -> TestCluster {
    let restored = TestCluster::start_on(pgdata)
        .await
        .unwrap_or_else(|e| panic!("{what}: {}", e.report()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let c = restored.connect("app").await.unwrap();
        let in_recovery: bool = c
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .unwrap()
            .get(0);
        if !in_recovery {
            return restored;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: still in recovery after 120 s: {}",
            restored.log_tail()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A repository and key file for the WAL and physical tests, in a folder the server's user
/// can read and write (`root`); drctl commands get `--repo` and `--key-file`.
pub struct Archive {
    pub root: tempfile::TempDir,
    pub repo: String,
    pub key: String,
}

impl Archive {
    /// `args` followed by `--repo` and `--key-file`.
    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(["--repo", &self.repo, "--key-file", &self.key]);
        all
    }

    pub fn run(&self, args: &[&str]) -> Output {
        drctl(&self.args(args), &[])
    }

    pub fn json_list(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["--json", "list"]);
        ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }
}

/// `pgbench ARGS app` against `cluster` (output discarded, errors kept).
pub fn pgbench(cluster: &TestCluster, args: &[&str]) -> Command {
    let mut cmd = Command::new(cluster.bin_dir().join("pgbench"));
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &cluster.port().to_string(),
        "-U",
        "postgres",
    ])
    .args(args)
    .arg("app")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}
