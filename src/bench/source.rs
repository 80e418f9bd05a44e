//! A [`Dumper`] over bytes already in memory, so a benchmark's backups read no database.

use async_trait::async_trait;
use bytes::Bytes;
use dr_core::{stage::once_bytes, Dump, DumpCompletion, DumpStats, Dumper, Result, SourceInfo};

/// Yields its buffer in `chunk_bytes` pieces (slices, no copy) as a `bytes` payload.
#[derive(Debug, Clone)]
pub struct MemoryDumper {
    data: Bytes,
    chunk_bytes: usize,
}

impl MemoryDumper {
    /// A dumper of `data`, cut in 1 MiB pieces like a pipeline stage's chunks.
    pub fn new(data: Bytes) -> Self {
        MemoryDumper {
            data,
            chunk_bytes: 1 << 20,
        }
    }
}

struct Done;

#[async_trait]
impl DumpCompletion for Done {
    async fn finish(self: Box<Self>) -> Result<DumpStats> {
        Ok(DumpStats::default())
    }
}

#[async_trait]
impl Dumper for MemoryDumper {
    async fn start(&self) -> Result<Dump> {
        Ok(Dump {
            source: SourceInfo {
                kind: "buffer".into(),
                format: "bytes".into(),
                name: "bench".into(),
                ..Default::default()
            },
            stream: once_bytes(self.data.clone(), self.chunk_bytes),
            size_hint: Some(self.data.len() as u64),
            completion: Box::new(Done),
        })
    }
}
