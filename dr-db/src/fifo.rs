//! Streaming pieces into a program that reads files: `pg_restore -Fd -j N` gets a folder
//! whose data files are FIFOs, and each piece is streamed into its FIFO when pg_restore
//! opens it, in whatever order and as many at once as pg_restore's workers ask for. Nothing
//! of the payload but the small `*.toc` files touches the disk, and memory is bounded by
//! the pieces being read at once.
//!
//! A piece that fails (damaged, truncated, a wrong key) makes the program and its workers be
//! killed *before* the FIFO's write end is closed, so that no reader ever sees a clean end
//! of a piece that did not check out.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dr_core::pieces::PieceSource;
use dr_core::{ByteStream, Error, ErrorKind, Result};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::tools;

/// How often unopened FIFOs are tried for a reader.
const POLL: Duration = Duration::from_millis(5);
/// The pipe buffer asked for (Linux's default is 64 KiB): fewer wake-ups of reader and
/// writer per MiB. A refusal (above `/proc/sys/fs/pipe-max-size`) keeps the default.
const PIPE_BYTES: i32 = 1 << 20;

/// A program and the worker processes it forks (`pg_dump -j`, `pg_restore -j`), to be
/// stopped all at once. They stay in dr's process group, so that a Ctrl-C in a terminal
/// reaches them too.
pub(crate) struct ProcessGroup {
    leader: Option<Pid>,
}

impl ProcessGroup {
    /// `child` and the processes it starts.
    pub(crate) fn of(child: &Child) -> ProcessGroup {
        ProcessGroup {
            leader: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        }
    }

    /// Kill the program's descendants, then the program (processes already gone are fine).
    pub(crate) fn kill(&self) {
        let Some(leader) = self.leader else {
            return;
        };
        for pid in descendants(leader.as_raw()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = kill(leader, Signal::SIGKILL);
    }
}

/// Every live descendant of process `root`, from `/proc/*/stat`'s parent ids.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid …": comm may hold spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parent_of
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Make a FIFO for each of `names` in `dir` (mode 0600).
pub(crate) fn make_fifos(dir: &Path, names: &[String]) -> Result<()> {
    for name in names {
        let path = dir.join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| Error::io(format!("cannot make the FIFO {}", path.display()), e.into()))?;
    }
    Ok(())
}

/// Why a piece's stream into its FIFO stopped.
enum Stop {
    /// The piece failed its checks.
    Payload(Error),
    /// The reader went away.
    Write(Error),
}

/// A program started to read the FIFOs: its name for messages, the child, the process
/// group it leads, and the task collecting the tail of its stderr.
pub(crate) struct Reader<'a> {
    pub(crate) program: &'static str,
    pub(crate) child: &'a mut Child,
    pub(crate) group: &'a ProcessGroup,
    pub(crate) stderr: JoinHandle<String>,
}

/// Serve the FIFOs `fifos` of `dir` from `pieces` while the reader runs, and return once it
/// has exited successfully with every piece streamed.
///
/// `all_read`: every FIFO must have been read (a whole restore); otherwise pieces the
/// program never opened are not read (a restore of some tables).
pub(crate) async fn serve(
    reader: Reader<'_>,
    dir: &Path,
    fifos: Vec<String>,
    pieces: &dyn PieceSource,
    all_read: bool,
) -> Result<()> {
    let Reader {
        program,
        child,
        group,
        stderr,
    } = reader;
    let mut pending: BTreeSet<String> = fifos.into_iter().collect();
    let held = Arc::new(Mutex::new(Vec::<pipe::Sender>::new()));
    let mut writers = FuturesUnordered::new();
    let mut tick = tokio::time::interval(POLL);
    let failure: Error = loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map_err(|e| Error::io(format!("waiting for {program}"), e))?;
                if !status.success() {
                    group.kill();
                    let tail = tools::stderr_tail(stderr).await;
                    return Err(tools::program_failed(program, status, &tail));
                }
                // Exited successfully: whatever is still streaming has been read to its end.
                while let Some(r) = writers.next().await {
                    match r {
                        Ok(()) => {}
                        Err(Stop::Payload(e)) | Err(Stop::Write(e)) => return Err(e),
                    }
                }
                stderr.abort();
                if all_read {
                    if let Some(name) = pending.iter().next() {
                        return Err(Error::new(
                            ErrorKind::Other,
                            format!("{program} ended without reading the piece '{name}'"),
                        ));
                    }
                }
                return Ok(());
            }
            Some(r) = writers.next(), if !writers.is_empty() => {
                match r {
                    Ok(()) => {}
                    Err(Stop::Payload(e)) => break e,
                    Err(Stop::Write(e)) => {
                        // The reader went away: the program's own failure explains it best.
                        if let Ok(Ok(status)) =
                            tokio::time::timeout(Duration::from_secs(5), child.wait()).await
                        {
                            if !status.success() {
                                let tail = tools::stderr_tail(stderr).await;
                                return Err(tools::program_failed(program, status, &tail));
                            }
                        }
                        break e;
                    }
                }
            }
            _ = tick.tick() => {
                let mut opened = Vec::new();
                let mut failed = None;
                for name in &pending {
                    match pipe::OpenOptions::new().open_sender(dir.join(name)) {
                        Ok(sender) => {
                            let _ = nix::fcntl::fcntl(&sender, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
                            opened.push((name.clone(), sender));
                        }
                        // No reader yet.
                        Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENXIO as i32) => {}
                        Err(e) => {
                            failed = Some(Error::io(format!("cannot open the FIFO of piece '{name}'"), e));
                            break;
                        }
                    }
                }
                for (name, sender) in opened {
                    pending.remove(&name);
                    match pieces.open(&name).await {
                        Ok(stream) => writers.push(stream_into(sender, stream, name, held.clone())),
                        Err(e) => {
                            held.lock().unwrap_or_else(|p| p.into_inner()).push(sender);
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    break e;
                }
            }
        }
    };
    // Kill first, then let the write ends go: no reader sees the end of a failed piece.
    group.kill();
    let _ = child.wait().await;
    drop(writers);
    held.lock().unwrap_or_else(|p| p.into_inner()).clear();
    stderr.abort();
    Err(failure.with_context(
        "restore",
        format!("stopped; {program} was killed before reading further"),
    ))
}

/// Stream one piece into its FIFO; on a failed piece the write end is kept open in `held`.
async fn stream_into(
    mut sender: pipe::Sender,
    mut stream: ByteStream,
    name: String,
    held: Arc<Mutex<Vec<pipe::Sender>>>,
) -> std::result::Result<(), Stop> {
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => sender.write_all(&chunk).await.map_err(|e| {
                Stop::Write(Error::io(
                    format!("the reader of piece '{name}' stopped reading"),
                    e,
                ))
            })?,
            Err(e) => {
                held.lock().unwrap_or_else(|p| p.into_inner()).push(sender);
                return Err(Stop::Payload(e));
            }
        }
    }
    Ok(())
}
