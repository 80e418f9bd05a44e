//! `drctl run` watched from outside: a real Prometheus (Debian's) scrapes its `/metrics`,
//! and a local HTTP receiver takes its webhook notifications (generic JSON and Slack).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn program(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{name} is missing; install it with: sudo apt-get install -y prometheus (or run scripts/prereqs.sh)")
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP GET; the status code and body.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((code, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A webhook receiver: records (path, body) of every POST; answers 500 to the very first
/// request (so the sender must retry) and 200 afterwards.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let first = {
                    let mut seen = seen.lock().unwrap();
                    seen.push((
                        path,
                        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                    ));
                    seen.len() == 1
                };
                let status = if first {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Receiver { port, got }
    }

    fn bodies(&self, path: &str) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.starts_with(path))
            .map(|(_, b)| b.clone())
            .collect()
    }
}

/// Kills a child process (by its own id) when dropped, so a failed assertion leaves no
/// server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A PromQL instant query's first value.
fn query(prometheus: &str, promql: &str) -> Option<f64> {
    let q: String = url_encode(promql);
    let (code, body) = get(prometheus, &format!("/api/v1/query?query={q}"))?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_drctl_run_and_webhooks_hear_failures_and_breaches() {
    let repo = Repo::new();
    let uploads = repo.path().join("uploads");
    std::fs::create_dir(&uploads).unwrap();
    std::fs::write(uploads.join("a.txt"), "hello").unwrap();

    // A damaged backup whose verify failed: the repository is breached from the start.
    let damaged = repo.json(&["backup", "--dir", uploads.to_str().unwrap()]);
    let payload = repo.payload(damaged["id"].as_str().unwrap());
    let mut bytes = std::fs::read(&payload).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&payload, bytes).unwrap();
    assert!(!repo.run(&["verify"]).status.success());

    let receiver = Receiver::start();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let secret_path = "/slack/T000/B000/SECRETTOKEN";
    let config = repo.path().join("dr.toml");
    std::fs::write(
        &config,
        format!(
            r#"[repository]
url = "{repo}"
[key]
file = "{key}"
[objectives]
rpo = "1h"
[jobs.uploads]
kind = "backup"
dir = "{uploads}"
cron = "*/2 * * * * *"
[jobs.broken]
kind = "backup"
dir = "{missing}"
cron = "*/3 * * * * *"
[monitoring]
listen = "{metrics_addr}"
refresh = "2s"
[[monitoring.webhooks]]
url = "http://127.0.0.1:{port}/json"
[[monitoring.webhooks]]
url_env = "DR_TEST_SLACK_URL"
format = "slack"
"#,
            repo = repo.url,
            key = repo.key.display(),
            uploads = uploads.display(),
            missing = repo.path().join("no-such-dir").display(),
            port = receiver.port,
        ),
    )
    .unwrap();
    // The daemon runs as a backup host of this (signed) repository: it signs its manifests
    // with the test's administrative key and checks the state against the test's pin.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drctl"));
    common::admin_host_env(&mut cmd);
    let drctl = Running(
        cmd.args(["run", "--config", config.to_str().unwrap()])
            .env(
                "DR_TEST_SLACK_URL",
                format!("http://127.0.0.1:{}{secret_path}", receiver.port),
            )
            .env_remove("DR_REPO")
            .env_remove("DR_KEY_FILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    // /healthz and /metrics answer, and the exposition is valid.
    let (code, body) = wait_for("/healthz", Duration::from_secs(30), || {
        get(&metrics_addr, "/healthz")
    });
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (_, exposition) = wait_for("a backup run in /metrics", Duration::from_secs(30), || {
        get(&metrics_addr, "/metrics").filter(|(_, b)| {
            b.contains(
                "dr_job_runs_total{job_name=\"uploads\",kind=\"backup\",outcome=\"succeeded\"} 1",
            )
        })
    });
    let mut check = Command::new(program("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool: {}{}\n{exposition}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(get(&metrics_addr, "/nothing").unwrap().0, 404);

    // A real Prometheus scrapes it.
    let prom_dir = tempfile::tempdir().unwrap();
    let prom_config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: dr\n    static_configs:\n      - targets: ['{metrics_addr}']\n"
        ),
    )
    .unwrap();
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let _prometheus = Running(
        Command::new(program("prometheus"))
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let timeout = Duration::from_secs(60);
    let up = wait_for("Prometheus to scrape drctl", timeout, || {
        query(&prom_addr, "up{job=\"dr\"}").filter(|v| *v == 1.0)
    });
    assert_eq!(up, 1.0);
    let runs = wait_for("two successful runs in Prometheus", timeout, || {
        query(
            &prom_addr,
            "dr_job_runs_total{job_name=\"uploads\",outcome=\"succeeded\"}",
        )
        .filter(|v| *v >= 2.0)
    });
    assert!(runs >= 2.0);
    let failures = wait_for("failures in Prometheus", timeout, || {
        query(&prom_addr, "dr_job_failures_total{job_name=\"broken\"}").filter(|v| *v >= 1.0)
    });
    assert!(failures >= 1.0);
    let durations = query(
        &prom_addr,
        "dr_job_duration_seconds_count{job_name=\"uploads\"}",
    )
    .unwrap();
    assert!(durations >= 2.0);
    let bytes = query(&prom_addr, "dr_job_bytes_total{job_name=\"uploads\"}").unwrap();
    assert!(bytes > 0.0);
    assert_eq!(query(&prom_addr, "dr_objective_rpo_seconds"), Some(3600.0));
    let age = wait_for("the backup age gauge", timeout, || {
        query(&prom_addr, "dr_backup_age_seconds")
    });
    assert!((0.0..3600.0).contains(&age), "{age}");
    assert_eq!(
        query(&prom_addr, "dr_status"),
        Some(2.0),
        "breached by the failed verify"
    );

    // Webhooks: job failures (the first POST got a 500 and was retried), one breach
    // notice (not one per refresh), in both formats.
    let json = wait_for("job_failed notifications", timeout, || {
        let b = receiver.bodies("/json");
        b.iter().any(|b| b["event"] == "job_failed").then_some(b)
    });
    // Distinct notices (a retried POST repeats its notice's body, `at` included).
    let mut breaches: Vec<_> = json
        .iter()
        .filter(|b| b["event"] == "objective_breached")
        .collect();
    breaches.dedup();
    assert_eq!(breaches.len(), 1, "{json:?}");
    assert!(
        breaches[0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("the last verify"),
        "{json:?}"
    );
    let failed = json.iter().find(|b| b["event"] == "job_failed").unwrap();
    assert_eq!(failed["job"], "broken");
    let first = receiver.got.lock().unwrap()[0].1.clone();
    let posts_of_first = receiver
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, b)| *b == first)
        .count();
    assert!(posts_of_first >= 2, "the refused first POST was retried");
    let slack = receiver.bodies("/slack");
    assert!(
        slack.iter().any(|b| b["text"]
            .as_str()
            .is_some_and(|t| t.contains("job 'broken' (backup) failed"))),
        "{slack:?}"
    );

    // Stop drctl; its output never shows the webhook URL's secret path.
    let mut drctl = drctl;
    let _ = Command::new("kill")
        .args(["-TERM", &drctl.0.id().to_string()])
        .status();
    let mut out = String::new();
    let mut err = String::new();
    drctl
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    drctl
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        !out.contains("SECRETTOKEN") && !err.contains("SECRETTOKEN"),
        "no secrets in output: {err}"
    );
}
