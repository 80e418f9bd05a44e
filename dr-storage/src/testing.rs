//! Real servers for testing the cloud targets (feature `testing`): moto's S3 server and
//! Azurite (Azure Blob), each started on a free 127.0.0.1 port in its own process and stopped
//! when dropped. Nothing is mocked: the targets talk HTTP to them like to the real clouds.
//!
//! Where the servers come from: `scripts/prereqs.sh` installs them into fixed folders under
//! `$DR_TOOLS_DIR` (default `$HOME/.cache/dr`): moto into the virtualenv `moto-venv`, Azurite
//! with npm into `azurite`. `DR_MOTO_SERVER` / `DR_AZURITE_BLOB` name other binaries. A
//! missing server is an [`ErrorKind::MissingPrerequisite`] error whose message is the install
//! command; tests never skip.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dr_core::Result<()> {
//! use dr_storage::testing::MotoServer;
//! let s3 = MotoServer::start().await?;
//! s3.create_bucket("dr-test").await?;
//! let target = dr_storage::open("s3://dr-test/repo", &s3.options())?;
//! # Ok(()) }
//! ```
//!
//! GCS has no emulator here: gs:// is covered by URL and configuration tests only.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use dr_core::{Error, ErrorKind, Result};

/// The access key the harness gives moto (moto checks no signatures; any key works).
const MOTO_KEY_ID: &str = "dr-test-key";
const MOTO_SECRET: &str = "dr-test-secret";
/// Azurite's well-known development account and key (public, from Azure's documentation).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const AZURE_VERSION: &str = "2021-08-06";

/// A bucket or container name no other test in this process uses.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn tools_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DR_TOOLS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/dr")
}

fn missing(what: &str, path: &std::path::Path, install: &str) -> Error {
    Error::new(
        ErrorKind::MissingPrerequisite,
        format!(
            "{what} is not installed (looked for {}); install it with `bash scripts/prereqs.sh`, or: {install}",
            path.display()
        ),
    )
}

fn http_client() -> Result<reqwest::Client> {
    crate::url::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::new(ErrorKind::Other, "building an HTTP client").with_source(e))
}

fn ok_status(resp: &reqwest::Response, what: &str) -> Result<()> {
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Storage,
            format!("{what}: moto answered {}", resp.status()),
        ))
    }
}

/// A server process, killed on drop, with its log in a temporary folder.
struct Process {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Process {
    /// Start `cmd` (with `{port}` in `args` replaced by a free port) and wait until it
    /// answers HTTP on that port. Retries with another port if the first one was taken.
    async fn start(name: &'static str, program: &std::path::Path, args: &[&str]) -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            let dir = tempfile::tempdir().map_err(|e| Error::io("creating a temp dir", e))?;
            let log = std::fs::File::create(dir.path().join("server.log"))
                .map_err(|e| Error::io("creating the server log", e))?;
            let log2 = log
                .try_clone()
                .map_err(|e| Error::io("creating the server log", e))?;
            let port_text = port.to_string();
            // A small shell guard runs the server and stops it when our end of its stdin
            // closes: on drop, and also when the test process dies without dropping (a
            // killed `cargo test`), so no server outlives its test. The guard exits when the
            // server does, so an early crash is seen at once.
            let child = Command::new("sh")
                .arg("-c")
                .arg(GUARD)
                .arg(program)
                .args(args.iter().map(|a| {
                    if *a == "{port}" {
                        port_text.as_str()
                    } else {
                        *a
                    }
                }))
                .current_dir(dir.path())
                .stdin(Stdio::piped())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| {
                    Error::new(
                        ErrorKind::MissingPrerequisite,
                        format!("cannot start {name} ({})", program.display()),
                    )
                    .with_source(e)
                })?;
            let mut p = Process {
                child,
                port,
                dir,
                name,
            };
            match p.wait_ready().await {
                Ok(()) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once"))
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = http_client()?;
        let started = Instant::now();
        let url = format!("http://127.0.0.1:{}/", self.port);
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::new(
                    ErrorKind::Other,
                    format!(
                        "{} exited ({status}) before it was ready: {}",
                        self.name,
                        self.log_tail()
                    ),
                ));
            }
            if client.get(&url).send().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::new(
            ErrorKind::Other,
            format!(
                "{} did not answer on port {} within 30 s: {}",
                self.name,
                self.port,
                self.log_tail()
            ),
        ))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
    }
}

/// `sh -c GUARD PROGRAM ARGS…`: start the server, kill it when stdin reaches EOF, and exit
/// when it exits.
const GUARD: &str = r#"exec 3<&0
"$0" "$@" </dev/null &
pid=$!
( read -r _ <&3; kill "$pid" 2>/dev/null ) &
wait "$pid""#;

impl Drop for Process {
    fn drop(&mut self) {
        // Closing stdin makes the guard stop the server; then reap the guard.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free port", e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io("finding a free port", e))?
        .port())
}

/// moto's S3 server on 127.0.0.1, stopped on drop.
///
/// moto keeps everything in memory, supports multipart uploads, conditional puts and storage
/// classes, and refuses to read GLACIER / DEEP_ARCHIVE objects (`InvalidObjectState`) like
/// S3 does. It does not check request signatures.
pub struct MotoServer {
    process: Process,
}

impl MotoServer {
    /// The moto_server binary: `$DR_MOTO_SERVER`, or the virtualenv `prereqs.sh` makes.
    pub fn binary() -> PathBuf {
        match std::env::var_os("DR_MOTO_SERVER") {
            Some(p) => PathBuf::from(p),
            None => tools_dir().join("moto-venv/bin/moto_server"),
        }
    }

    /// Start a server (about a second).
    pub async fn start() -> Result<Self> {
        let bin = Self::binary();
        if !bin.is_file() {
            let venv = tools_dir().join("moto-venv");
            return Err(missing(
                "moto's S3 server",
                &bin,
                &format!(
                    "python3 -m venv {v} && {v}/bin/pip install 'moto[server]'",
                    v = venv.display()
                ),
            ));
        }
        let process =
            Process::start("moto_server", &bin, &["-H", "127.0.0.1", "-p", "{port}"]).await?;
        Ok(MotoServer { process })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// Storage options that point an `s3://` target at this server.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("endpoint", self.endpoint()),
            ("allow_http", "true".into()),
            ("region", "us-east-1".into()),
            ("access_key_id", MOTO_KEY_ID.into()),
            ("secret_access_key", MOTO_SECRET.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The same settings as the standard AWS environment variables, for a child process
    /// such as `drctl`.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", MOTO_KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", MOTO_SECRET.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn auth_header() -> String {
        // moto reads the access key from the header to pick the account; it checks no
        // signature.
        format!(
            "AWS4-HMAC-SHA256 Credential={MOTO_KEY_ID}/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"
        )
    }

    /// Create a bucket (names: 3 to 63 lowercase letters, digits, `-`).
    pub async fn create_bucket(&self, name: &str) -> Result<()> {
        let resp = http_client()?
            .put(format!("{}/{name}", self.endpoint()))
            .header("Authorization", Self::auth_header())
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Storage, "creating a bucket").with_source(e))?;
        if !resp.status().is_success() {
            return Err(Error::new(
                ErrorKind::Storage,
                format!("creating bucket {name}: moto answered {}", resp.status()),
            ));
        }
        Ok(())
    }

    /// The storage class S3 reports for `key` (a full key, prefix included), from a HEAD
    /// request's `x-amz-storage-class` header; `STANDARD` when the header is absent.
    pub async fn storage_class(&self, bucket: &str, key: &str) -> Result<String> {
        let resp = http_client()?
            .head(format!("{}/{bucket}/{key}", self.endpoint()))
            .header("Authorization", Self::auth_header())
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Storage, "HEAD of an object").with_source(e))?;
        if !resp.status().is_success() {
            return Err(Error::new(
                ErrorKind::Storage,
                format!("HEAD {bucket}/{key}: moto answered {}", resp.status()),
            ));
        }
        Ok(resp
            .headers()
            .get("x-amz-storage-class")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("STANDARD")
            .to_string())
    }

    /// Create a bucket with S3 Object Lock on (which turns versioning on) and a default
    /// retention of `days` in compliance mode: no version of an object can be deleted or
    /// overwritten by anyone until `days` after it was written.
    pub async fn create_locked_bucket(&self, name: &str, days: u32) -> Result<()> {
        let client = http_client()?;
        let fail = |what: &str, e: reqwest::Error| {
            Error::new(ErrorKind::Storage, format!("{what} of bucket {name}")).with_source(e)
        };
        let resp = client
            .put(format!("{}/{name}", self.endpoint()))
            .header("Authorization", Self::auth_header())
            .header("x-amz-bucket-object-lock-enabled", "true")
            .send()
            .await
            .map_err(|e| fail("creating", e))?;
        ok_status(&resp, &format!("creating locked bucket {name}"))?;
        let body = format!(
            "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention>\
             <Mode>COMPLIANCE</Mode><Days>{days}</Days></DefaultRetention></Rule>\
             </ObjectLockConfiguration>"
        );
        let resp = client
            .put(format!("{}/{name}?object-lock", self.endpoint()))
            .header("Authorization", Self::auth_header())
            .body(body)
            .send()
            .await
            .map_err(|e| fail("the lock configuration", e))?;
        ok_status(&resp, &format!("the lock configuration of bucket {name}"))
    }

    /// The Object Lock of `key`'s current version: (mode, retain-until date, version id),
    /// from a HEAD request; `None` when the object carries no lock.
    pub async fn object_lock(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(String, String, String)>> {
        let resp = http_client()?
            .head(format!("{}/{bucket}/{key}", self.endpoint()))
            .header("Authorization", Self::auth_header())
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Storage, "HEAD of an object").with_source(e))?;
        ok_status(&resp, &format!("HEAD {bucket}/{key}"))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Ok(header("x-amz-object-lock-mode").map(|mode| {
            (
                mode,
                header("x-amz-object-lock-retain-until-date").unwrap_or_default(),
                header("x-amz-version-id").unwrap_or_default(),
            )
        }))
    }

    /// Try to delete one version of an object for good (what ransomware with the bucket's
    /// credentials would do); returns the HTTP status moto answered.
    pub async fn delete_version(&self, bucket: &str, key: &str, version: &str) -> Result<u16> {
        let resp = http_client()?
            .delete(format!(
                "{}/{bucket}/{key}?versionId={version}",
                self.endpoint()
            ))
            .header("Authorization", Self::auth_header())
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Storage, "DELETE of a version").with_source(e))?;
        Ok(resp.status().as_u16())
    }

    /// Unfinished multipart uploads in `bucket` (object keys), from ListMultipartUploads.
    pub async fn pending_uploads(&self, bucket: &str) -> Result<Vec<String>> {
        let resp = http_client()?
            .get(format!("{}/{bucket}?uploads", self.endpoint()))
            .header("Authorization", Self::auth_header())
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Storage, "listing uploads").with_source(e))?;
        let body = resp
            .text()
            .await
            .map_err(|e| Error::new(ErrorKind::Storage, "listing uploads").with_source(e))?;
        let mut keys = Vec::new();
        let mut rest = body.as_str();
        while let Some(i) = rest.find("<Upload>") {
            rest = &rest[i + 8..];
            if let (Some(a), Some(b)) = (rest.find("<Key>"), rest.find("</Key>")) {
                keys.push(rest[a + 5..b].to_string());
            }
        }
        Ok(keys)
    }
}

/// Azurite's Blob service on 127.0.0.1 (in-memory), stopped on drop.
pub struct AzuriteServer {
    process: Process,
}

impl AzuriteServer {
    /// The azurite-blob binary: `$DR_AZURITE_BLOB`, or the npm folder `prereqs.sh` makes.
    pub fn binary() -> PathBuf {
        match std::env::var_os("DR_AZURITE_BLOB") {
            Some(p) => PathBuf::from(p),
            None => tools_dir().join("azurite/node_modules/.bin/azurite-blob"),
        }
    }

    /// Start a server (a second or two).
    pub async fn start() -> Result<Self> {
        let bin = Self::binary();
        if !bin.is_file() {
            let dir = tools_dir().join("azurite");
            return Err(missing(
                "Azurite",
                &bin,
                &format!(
                    "mkdir -p {d} && cd {d} && npm install azurite",
                    d = dir.display()
                ),
            ));
        }
        let process = Process::start(
            "azurite-blob",
            &bin,
            &[
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "{port}",
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ],
        )
        .await?;
        Ok(AzuriteServer { process })
    }

    /// The account's blob endpoint, `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.process.port)
    }

    /// Storage options that point an `az://` target at this server.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("endpoint", self.endpoint()),
            ("allow_http", "true".into()),
            ("account_name", AZURITE_ACCOUNT.into()),
            ("access_key", AZURITE_KEY.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// A request signed with the development account's shared key.
    fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::RequestBuilder> {
        let date = httpdate(std::time::SystemTime::now());
        let mut resource = format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{path}");
        let mut sorted = query.to_vec();
        sorted.sort();
        for (k, v) in &sorted {
            resource.push_str(&format!("\n{}:{v}", k.to_ascii_lowercase()));
        }
        let to_sign = format!(
            "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{AZURE_VERSION}\n{resource}"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(AZURITE_KEY)
            .expect("the development key is base64");
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            to_sign.as_bytes(),
        );
        let sig = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
        let query_string: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let url = if query.is_empty() {
            format!("{}/{path}", self.endpoint())
        } else {
            format!("{}/{path}?{}", self.endpoint(), query_string.join("&"))
        };
        Ok(http_client()?
            .request(method, url)
            .header("x-ms-date", date)
            .header("x-ms-version", AZURE_VERSION)
            .header(
                "Authorization",
                format!("SharedKey {AZURITE_ACCOUNT}:{sig}"),
            ))
    }

    /// Create a container (3 to 63 lowercase letters, digits, `-`).
    pub async fn create_container(&self, name: &str) -> Result<()> {
        let resp = self
            .signed(reqwest::Method::PUT, name, &[("restype", "container")])?
            .header("Content-Length", "0")
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Storage, "creating a container").with_source(e))?;
        if !resp.status().is_success() {
            return Err(Error::new(
                ErrorKind::Storage,
                format!(
                    "creating container {name}: Azurite answered {}",
                    resp.status()
                ),
            ));
        }
        Ok(())
    }

    /// The access tier Azure reports for a blob (`x-ms-access-tier`).
    pub async fn access_tier(&self, container: &str, blob: &str) -> Result<Option<String>> {
        let resp = self
            .signed(reqwest::Method::HEAD, &format!("{container}/{blob}"), &[])?
            .send()
            .await
            .map_err(|e| Error::new(ErrorKind::Storage, "HEAD of a blob").with_source(e))?;
        if !resp.status().is_success() {
            return Err(Error::new(
                ErrorKind::Storage,
                format!(
                    "HEAD {container}/{blob}: Azurite answered {}",
                    resp.status()
                ),
            ));
        }
        Ok(resp
            .headers()
            .get("x-ms-access-tier")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }
}

/// An RFC 7231 date (`Tue, 15 Nov 1994 08:12:31 GMT`), as Azure's `x-ms-date` wants.
fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{weekday}, {d:02} {mon} {year} {h:02}:{m:02}:{s:02} GMT")
}

/// An HTTP/1.1 shim on 127.0.0.1 that forwards every byte to a server and adds one header
/// to every request. Not a mock: it exists for one gap between two real parts. S3 requires
/// `Content-MD5` or an `x-amz-checksum-*` header on a PUT into a bucket with default Object
/// Lock retention; object_store 0.14 sends `x-amz-checksum-sha256` (with
/// `checksum_algorithm = sha256`), which S3 accepts, but moto only accepts `Content-MD5` or
/// the `x-amz-sdk-checksum-algorithm` header AWS's SDKs add. The shim adds the latter.
/// Threads end with the process (tests only).
pub struct HeaderShim {
    port: u16,
}

impl HeaderShim {
    /// Forward 127.0.0.1:<new port> to `upstream` (`http://127.0.0.1:PORT`), adding
    /// `name: value` to each request's head.
    pub fn start(upstream: &str, name: &str, value: &str) -> Result<HeaderShim> {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::io("cannot bind the header shim", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the header shim's port", e))?
            .port();
        let line = format!("{name}: {value}\r\n").into_bytes();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, line) = (upstream.clone(), line.clone());
                std::thread::spawn(move || {
                    let _ = shim_connection(client, &upstream, &line);
                });
            }
        });
        Ok(HeaderShim { port })
    }

    /// `http://127.0.0.1:PORT`: use it as the endpoint instead of the server's.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// One client connection: responses are copied back as they come; requests are read head by
/// head (bodies by `Content-Length`; object_store sends no chunked bodies), each head getting
/// the extra header line after its request line.
fn shim_connection(
    mut client: std::net::TcpStream,
    upstream: &str,
    line: &[u8],
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut server = std::net::TcpStream::connect(upstream)?;
    let (mut from_server, mut to_client) = (server.try_clone()?, client.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Both);
    });
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        // The head of the next request.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = client.read(&mut chunk)?;
            if n == 0 {
                return server.shutdown(std::net::Shutdown::Write);
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head: Vec<u8> = buf.drain(..end).collect();
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if text.contains("\r\ntransfer-encoding: chunked") {
            return Err(std::io::Error::other("the shim forwards no chunked bodies"));
        }
        let length: usize = text
            .split("\r\n")
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let first_line = head.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        server.write_all(&head[..first_line])?;
        server.write_all(line)?;
        server.write_all(&head[first_line..])?;
        // Its body.
        let mut left = length;
        let take = left.min(buf.len());
        server.write_all(&buf[..take])?;
        buf.drain(..take);
        left -= take;
        while left > 0 {
            let n = client.read(&mut chunk[..left.min(64 * 1024)])?;
            if n == 0 {
                return Ok(());
            }
            server.write_all(&chunk[..n])?;
            left -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn httpdate_formats_rfc7231() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_887_151);
        assert_eq!(super::httpdate(t), "Tue, 15 Nov 1994 08:12:31 GMT");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_651_200);
        assert_eq!(super::httpdate(t), "Thu, 26 Nov 2026 00:00:00 GMT");
    }
}
