//! Finding and running the PostgreSQL programs: bin directories, versions, stderr tails.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use dr_core::{Error, ErrorKind, Result};
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;

/// How much of a child's stderr is kept for error messages.
pub(crate) const STDERR_TAIL_BYTES: usize = 4096;

/// The install command named when a client program (`pg_dump`, `pg_restore`) is missing.
pub(crate) const INSTALL_CLIENT: &str = "apt-get install -y postgresql-client";
/// The install command named when a server program (`initdb`, `pg_ctl`) is missing.
pub(crate) const INSTALL_SERVER: &str = "apt-get install -y postgresql";

/// Candidate bin directories, best first: `$DR_PG_BINDIR`, `pg_config --bindir`, the newest
/// `/usr/lib/postgresql/*/bin`.
pub(crate) fn candidate_bin_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("DR_PG_BINDIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !dir.is_empty() {
                dirs.push(PathBuf::from(dir));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versioned: Vec<(Vec<u32>, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let version: Vec<u32> = name
                    .split('.')
                    .map(|p| p.parse().ok())
                    .collect::<Option<_>>()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, bin)| bin.is_dir())
            .collect();
        versioned.sort();
        if let Some((_, newest)) = versioned.pop() {
            dirs.push(newest);
        }
    }
    let mut unique = Vec::new();
    for d in dirs {
        if !unique.contains(&d) {
            unique.push(d);
        }
    }
    unique
}

/// Locate `program`: in `explicit` only, if given; else in the candidate bin directories,
/// then on `$PATH`. A missing program is [`ErrorKind::MissingPrerequisite`] naming
/// `install` (the command that provides it).
pub(crate) fn find_program(
    explicit: Option<&Path>,
    program: &str,
    install: &str,
) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        let path = dir.join(program);
        if path.is_file() {
            return Ok(path);
        }
        return Err(Error::new(
            ErrorKind::MissingPrerequisite,
            format!(
                "{program} not found in the configured bin directory; install it with `{install}` or point the bin directory at a PostgreSQL installation"
            ),
        )
        .with_context("dir", dir.display()));
    }
    let mut searched: Vec<PathBuf> = candidate_bin_dirs();
    if let Some(path) = std::env::var_os("PATH") {
        searched.extend(std::env::split_paths(&path));
    }
    for dir in &searched {
        let path = dir.join(program);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(Error::new(
        ErrorKind::MissingPrerequisite,
        format!(
            "{program} not found (searched $DR_PG_BINDIR, pg_config --bindir, /usr/lib/postgresql/*/bin and $PATH); install it with `{install}`"
        ),
    ))
}

/// The major version printed by `<program> --version`, e.g. 15 for
/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
pub(crate) async fn program_major_version(program: &Path) -> Result<u32> {
    let out = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| {
            Error::io("running --version", e).with_context("program", program.display())
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_major_version(&text).ok_or_else(|| {
        Error::new(
            ErrorKind::MissingPrerequisite,
            "cannot read the version of a PostgreSQL program",
        )
        .with_context("program", program.display())
        .with_context("output", text.trim())
    })
}

/// Parse the major version out of a `--version` line (`… (PostgreSQL) 15.18 …`, `9.6.24`).
pub(crate) fn parse_major_version(text: &str) -> Option<u32> {
    let after = match text.find(')') {
        Some(i) => &text[i + 1..],
        None => text,
    };
    let token = after
        .split_whitespace()
        .find(|t| t.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = token.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// The major version of a server from `server_version_num` (150018 → 15, 90624 → 9).
pub(crate) fn server_major(version_num: i32) -> u32 {
    // Since 10 the major is the first two digits; before, 90624 is 9.6 and we keep the 9.
    version_num.max(0) as u32 / 10_000
}

/// Read a child's stderr to its end on a task, keeping the last [`STDERR_TAIL_BYTES`].
/// The error for a client program (`pg_dump`, `pg_restore`) that could not be started:
/// a missing binary is a missing prerequisite, anything else an I/O failure.
pub(crate) fn spawn_failed(name: &'static str, program: &Path, e: std::io::Error) -> Error {
    let kind = if e.kind() == std::io::ErrorKind::NotFound {
        ErrorKind::MissingPrerequisite
    } else {
        ErrorKind::Io
    };
    Error::new(kind, format!("cannot start {name}"))
        .with_context("program", program.display())
        .with_source(e)
}

pub(crate) fn spawn_stderr_tail<R>(mut stderr: R, program: &'static str) -> JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut tail: VecDeque<u8> = VecDeque::with_capacity(STDERR_TAIL_BYTES);
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    tracing::debug!(program, "{}", String::from_utf8_lossy(&buf[..n]).trim_end());
                    tail.extend(&buf[..n]);
                    while tail.len() > STDERR_TAIL_BYTES {
                        tail.pop_front();
                    }
                }
            }
        }
        let bytes: Vec<u8> = tail.into_iter().collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    })
}

/// Await a stderr task; an aborted or panicked task leaves an empty tail.
pub(crate) async fn stderr_tail(task: JoinHandle<String>) -> String {
    task.await.unwrap_or_default()
}

/// The error for a client program that exited unsuccessfully, with its stderr tail.
pub(crate) fn program_failed(
    program: &'static str,
    status: std::process::ExitStatus,
    stderr: &str,
) -> Error {
    let mut e =
        Error::new(ErrorKind::Database, format!("{program} failed")).with_context("status", status);
    if !stderr.is_empty() {
        e = e.with_context("stderr", stderr);
    }
    e
}

/// Eight random bytes as hex, for scratch names. Not cryptographic; unique enough.
pub(crate) fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    format!("{:016x}", h.finish())
}

/// `program` and `args` run so that the program is killed (SIGKILL) when dr dies, however it
/// dies: through util-linux's `setpriv --pdeathsig KILL`, which sets the parent-death signal
/// and then executes the program in its own place. Without `setpriv` (or for a path that is
/// not UTF-8) the program runs as it is: a killed dr may then leave it running.
///
/// The signal is sent when the *thread* that started the program ends; dr starts programs
/// from the Tokio runtime's worker threads, which live as long as the runtime. A program's
/// own children (pg_dump's `-j` workers) do not inherit the setting; they stop when they
/// next hear from the program, which is gone.
pub(crate) fn dying_with_parent(program: &Path, args: Vec<String>) -> (PathBuf, Vec<String>) {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file());
    match (setpriv, program.to_str()) {
        (Some(setpriv), Some(program_str)) => {
            let mut wrapped = vec![
                "--pdeathsig".to_owned(),
                "KILL".to_owned(),
                "--".to_owned(),
                program_str.to_owned(),
            ];
            wrapped.extend(args);
            (setpriv.to_owned(), wrapped)
        }
        _ => (program.to_owned(), args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_major_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major_version("pg_dump (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(
            parse_major_version("pg_restore (PostgreSQL) 17beta1"),
            Some(17)
        );
        assert_eq!(parse_major_version("nonsense"), None);
        assert_eq!(server_major(150018), 15);
        assert_eq!(server_major(90624), 9);
    }

    #[test]
    fn random_hex_differs() {
        assert_ne!(random_hex(), random_hex());
        assert_eq!(random_hex().len(), 16);
    }
}
