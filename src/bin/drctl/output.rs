//! How drctl talks: JSON or text on stdout ([`Output`]), progress bars and logs on stderr,
//! exit codes.

use std::io::IsTerminal;
use std::sync::Arc;

use dr::core::{Error, ErrorKind, ProgressEvent, ProgressSink, Stage};
use indicatif::{ProgressBar, ProgressStyle};

/// Exit codes, stable for scripts.
pub fn exit_code(e: &Error) -> i32 {
    match e.kind() {
        ErrorKind::InvalidInput => 2,
        ErrorKind::NotFound => 3,
        ErrorKind::WrongKey => 4,
        ErrorKind::Corrupt => 5,
        ErrorKind::NotEmpty | ErrorKind::AlreadyExists => 6,
        ErrorKind::Locked => 7,
        ErrorKind::MissingPrerequisite => 8,
        ErrorKind::Archived => 9,
        _ => 1,
    }
}

/// Logs go to stderr, coloured only where a person reads them ([`colour_logs`]); `RUST_LOG`
/// overrides the level chosen by `-v`.
pub fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactedLine(Vec::new()))
        .with_ansi(colour_logs())
        .with_target(false)
        .init();
}

/// ANSI colour in logs only when stderr is a terminal and `NO_COLOR` (<https://no-color.org>)
/// is unset or empty: files, pipes, journald and cron mail get plain text.
fn colour_logs() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// One log line, written to stderr when dropped with URL credentials that a dependency
/// logged (`http://user:secret@host`) replaced by `***`.
struct RedactedLine(Vec<u8>);

impl std::io::Write for RedactedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        let text = dr::core::redact::redact_url_credentials(&String::from_utf8_lossy(&self.0));
        let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
    }
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serializes")
    );
}

/// How drctl prints a command's result, chosen once in `main` from `--json` and handed to
/// every command: one JSON document on stdout for scripts, or text (and progress bars on a
/// terminal) for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Text for people.
    Human,
    /// One JSON document on stdout, nothing else.
    Json,
}

impl Output {
    /// The output `--json` asks for.
    pub fn from_flag(json: bool) -> Output {
        if json {
            Output::Json
        } else {
            Output::Human
        }
    }

    /// Whether results are printed as JSON.
    pub fn is_json(self) -> bool {
        self == Output::Json
    }

    /// A line of narration for people; nothing in JSON output, which stays one document.
    pub fn say(self, line: impl std::fmt::Display) {
        if self == Output::Human {
            println!("{line}");
        }
    }

    /// A result: `value` as JSON, or printed as text by `human`.
    pub fn result<T: serde::Serialize + ?Sized>(self, value: &T, human: impl FnOnce(&T)) {
        match self {
            Output::Json => print_json(value),
            Output::Human => human(value),
        }
    }

    /// A progress bar on stderr when it is a terminal and output is for people.
    pub fn progress_bar(self, what: &str) -> Option<(ProgressBar, ProgressSink)> {
        if self.is_json() || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg}").expect("valid template"),
        );
        bar.set_prefix(what.to_string());
        let sink_bar = bar.clone();
        let sink: ProgressSink = Arc::new(move |e: &ProgressEvent| {
            let stage = match e.stage {
                Stage::Read => "read",
                Stage::Write => "stored",
                Stage::Verify => "checked",
            };
            let total = e
                .total
                .map(|t| format!(" of {}", human_bytes(t)))
                .unwrap_or_default();
            sink_bar.set_message(format!(
                "{stage} {}{total} at {}/s",
                human_bytes(e.bytes),
                human_bytes(e.bytes_per_sec as u64)
            ));
            sink_bar.tick();
        });
        Some((bar, sink))
    }
}

/// Bytes for people: 1.5 GB, 320 MB (powers of 1000).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A backup as `list` and `backup --json` show it.
pub fn manifest_summary(m: &dr::core::Manifest) -> serde_json::Value {
    serde_json::json!({
        "id": m.id,
        "kind": m.kind,
        "started_at": m.started_at,
        "finished_at": m.finished_at,
        "duration_ms": m.duration_ms(),
        "labels": m.labels,
        "pinned": m.pinned,
        "raw_bytes": m.raw_bytes,
        "stored_bytes": m.stored_bytes,
        "codec": m.codec,
        "cipher": m.encryption.cipher,
        "key_ids": m.encryption.key_ids(),
        "series": m.series,
        "source": m.source,
        "tables": m.stats.tables,
    })
}

/// `drctl wal list | grep -m1 …` closes stdout before drctl is done: end like other Unix tools,
/// quietly with status 141 (as if killed by SIGPIPE), instead of a panic from `println!`.
/// SIGPIPE itself stays ignored, so a child that dies (pg_restore reading our pipe) is an
/// error drctl reports and cleans up after, not a kill.
pub fn end_quietly_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
