//! Progress events that libraries subscribe to and `drctl` draws as a progress bar.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which part of a job an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading the source (dump, download).
    Read,
    /// Writing to the target (upload, restore).
    Write,
    /// Checking stored data.
    Verify,
}

/// A progress report: bytes so far on one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressEvent {
    /// The stage reporting.
    pub stage: Stage,
    /// Bytes processed so far at this stage (raw bytes for reads, stored bytes for writes).
    pub bytes: u64,
    /// Total expected, when known (restore and verify know it from the manifest).
    pub total: Option<u64>,
    /// Average rate since the stage began, bytes per second.
    pub bytes_per_sec: f64,
    /// Whether this is the stage's last event.
    pub done: bool,
}

/// Receives progress events. Cheap to clone; called from pipeline tasks, so keep it quick.
pub type ProgressSink = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

/// Counts bytes for one stage and reports at most every `interval`.
pub(crate) struct Meter {
    stage: Stage,
    total: Option<u64>,
    bytes: u64,
    started: Instant,
    last: Instant,
    sink: Option<ProgressSink>,
}

impl Meter {
    pub(crate) fn new(stage: Stage, total: Option<u64>, sink: Option<ProgressSink>) -> Self {
        let now = Instant::now();
        Meter {
            stage,
            total,
            bytes: 0,
            started: now,
            last: now,
            sink,
        }
    }

    pub(crate) fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        if self.sink.is_some() && self.last.elapsed() >= Duration::from_millis(100) {
            self.last = Instant::now();
            self.emit(false);
        }
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn done(&mut self) {
        self.emit(true);
    }

    fn emit(&self, done: bool) {
        if let Some(sink) = &self.sink {
            let secs = self.started.elapsed().as_secs_f64().max(1e-6);
            sink(&ProgressEvent {
                stage: self.stage,
                bytes: self.bytes,
                total: self.total,
                bytes_per_sec: self.bytes as f64 / secs,
                done,
            });
        }
    }
}
