//! A [`Dumper`] of bytes already in memory: the pipeline's own cost without a database in
//! benchmarks, a source for tests and examples, and small payloads an application holds.

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
use crate::source::{Dump, DumpCompletion, DumpStats, Dumper, SourceInfo};
use crate::stage::once_bytes;

/// Dumps one buffer (kind `buffer`, format `bytes`), in 64 KiB chunks by default, announcing its
/// length as the dump's size unless told otherwise. It can be started any number of times.
///
/// ```
/// use dr_core::{BufferDumper, Dumper};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> dr_core::Result<()> {
/// let dump = BufferDumper::new("hello").named("greeting").start().await?;
/// assert_eq!(dump.source.name, "greeting");
/// assert_eq!(dr_core::stage::collect(dump.stream).await?, b"hello");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BufferDumper {
    bytes: Bytes,
    name: String,
    size_hint: Option<u64>,
    chunk_bytes: usize,
}

impl BufferDumper {
    /// Kind of the backups it makes (their series is `buffer:<name>`).
    pub const KIND: &'static str = "buffer";
    /// Their payload format: the bytes as given.
    pub const FORMAT: &'static str = "bytes";

    /// A dumper of `bytes`, named `buffer`.
    pub fn new(bytes: impl Into<Bytes>) -> BufferDumper {
        let bytes = bytes.into();
        BufferDumper {
            size_hint: Some(bytes.len() as u64),
            bytes,
            name: Self::KIND.into(),
            chunk_bytes: 64 << 10,
        }
    }

    /// Record `name` as the source's name.
    pub fn named(mut self, name: impl Into<String>) -> BufferDumper {
        self.name = name.into();
        self
    }

    /// Hand the payload on in chunks of `bytes` (a database dump arrives in pieces; a
    /// benchmark may want larger ones).
    pub fn chunk_bytes(mut self, bytes: usize) -> BufferDumper {
        self.chunk_bytes = bytes;
        self
    }

    /// Announce `hint` as the dump's size (`None`: a source that cannot tell in advance).
    pub fn size_hint(mut self, hint: Option<u64>) -> BufferDumper {
        self.size_hint = hint;
        self
    }
}

/// Nothing to wait for: the buffer was whole before the dump began.
struct Done;

#[async_trait]
impl DumpCompletion for Done {
    async fn finish(self: Box<Self>) -> Result<DumpStats> {
        Ok(DumpStats::default())
    }
}

#[async_trait]
impl Dumper for BufferDumper {
    async fn start(&self) -> Result<Dump> {
        Ok(Dump {
            source: SourceInfo {
                kind: Self::KIND.into(),
                format: Self::FORMAT.into(),
                name: self.name.clone(),
                ..Default::default()
            },
            stream: once_bytes(self.bytes.clone(), self.chunk_bytes),
            size_hint: self.size_hint,
            completion: Box::new(Done),
        })
    }
}
