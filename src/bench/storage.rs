//! The storage benchmark: how fast a repository's target takes and gives back a large
//! object (through the same streaming upload a backup uses, so with the configured part
//! size and parts in flight), and how long small requests take.
//!
//! Everything is written under `bench/<random>/`, outside the repository's backups, and
//! deleted at the end, whether the measurement succeeded or not.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dr_core::{stage::drain, Error, PutOptions, Result, StorageExt, StorageTarget};
use serde::Serialize;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct StorageBenchOptions {
    /// Size of the large object, uploaded and downloaded once.
    pub object_bytes: u64,
    /// Small-object round trips per request kind for the latency figures.
    pub small_requests: usize,
}

impl Default for StorageBenchOptions {
    fn default() -> Self {
        StorageBenchOptions {
            object_bytes: 256 << 20,
            small_requests: 20,
        }
    }
}

/// Latency of one request kind, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// `put`, `get`, `head` or `delete` of a 1 KiB object.
    pub request: String,
    /// Median.
    pub median_ms: f64,
    /// 95th percentile (nearest rank).
    pub p95_ms: f64,
}

/// The measurements of one target.
#[derive(Debug, Clone, Serialize)]
pub struct StorageResult {
    /// The target, without secrets.
    pub target: String,
    /// Bytes of the large object.
    pub object_bytes: u64,
    /// Streaming upload of the large object, MB (10^6 bytes) per second.
    pub upload_mb_per_s: f64,
    /// Streaming download of it.
    pub download_mb_per_s: f64,
    /// Small-request latencies.
    pub latency: Vec<Latency>,
}

/// Measure `target`. The object's bytes are incompressible, so a store or proxy that
/// compresses cannot flatter the figures.
pub async fn measure_storage(
    target: Arc<dyn StorageTarget>,
    opts: StorageBenchOptions,
) -> Result<StorageResult> {
    if opts.object_bytes == 0 || opts.small_requests == 0 {
        return Err(Error::invalid(
            "the storage benchmark needs a non-empty object and at least one request",
        ));
    }
    let prefix = format!("bench/{}/", scratch_suffix()?);
    let measured = measure_under(&target, &prefix, opts).await;
    let cleaned = target.delete_prefix(&prefix).await;
    let result = measured?;
    cleaned.map_err(|e| e.with_context("cleanup", format!("objects under {prefix} remain")))?;
    Ok(result)
}

async fn measure_under(
    target: &Arc<dyn StorageTarget>,
    prefix: &str,
    opts: StorageBenchOptions,
) -> Result<StorageResult> {
    let chunk = 1usize << 20;
    let data = incompressible(chunk);
    let big = format!("{prefix}object");

    let start = Instant::now();
    let mut writer = target
        .put_stream(
            &big,
            PutOptions {
                expected_size: Some(opts.object_bytes),
                ..Default::default()
            },
        )
        .await?;
    let mut left = opts.object_bytes;
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        if let Err(e) = writer.write(data.slice(..n)).await {
            let _ = writer.abort().await;
            return Err(e);
        }
        left -= n as u64;
    }
    writer.finish().await?;
    let upload_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let read = drain(target.get(&big, None).await?).await?;
    let download_s = start.elapsed().as_secs_f64();
    if read != opts.object_bytes {
        return Err(Error::corrupt(format!(
            "the store returned {read} bytes of a {}-byte object",
            opts.object_bytes
        )));
    }

    let small = data.slice(..1024);
    let mut times: [Vec<f64>; 4] = Default::default();
    for i in 0..opts.small_requests {
        let path = format!("{prefix}small-{i}");
        let t = Instant::now();
        target
            .put_bytes(&path, small.clone(), PutOptions::default())
            .await?;
        times[0].push(ms(t));
        let t = Instant::now();
        target.get_bytes(&path).await?;
        times[1].push(ms(t));
        let t = Instant::now();
        target.head(&path).await?;
        times[2].push(ms(t));
        let t = Instant::now();
        target.delete(&path).await?;
        times[3].push(ms(t));
    }
    let latency = ["put", "get", "head", "delete"]
        .iter()
        .zip(times.iter_mut())
        .map(|(name, t)| {
            t.sort_by(f64::total_cmp);
            Latency {
                request: (*name).into(),
                median_ms: percentile(t, 50),
                p95_ms: percentile(t, 95),
            }
        })
        .collect();
    let mb = opts.object_bytes as f64 / 1e6;
    Ok(StorageResult {
        target: target.describe(),
        object_bytes: opts.object_bytes,
        upload_mb_per_s: mb / upload_s.max(1e-9),
        download_mb_per_s: mb / download_s.max(1e-9),
        latency,
    })
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Nearest-rank percentile of sorted, non-empty `values`.
fn percentile(sorted: &[f64], p: usize) -> f64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// `len` pseudo-random bytes (xorshift; random enough that no compressor shrinks them).
fn incompressible(len: usize) -> Bytes {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn scratch_suffix() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 6];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::new(dr_core::ErrorKind::Other, "no system randomness"))?;
    Ok(hex_lower(&b))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50), 10.0);
        assert_eq!(percentile(&v, 95), 19.0);
        assert_eq!(percentile(&[3.0], 95), 3.0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn measures_and_leaves_nothing_behind() {
        let target = dr_storage::from_url("memory://").unwrap();
        let r = measure_storage(
            target.clone(),
            StorageBenchOptions {
                object_bytes: 3 << 20,
                small_requests: 3,
            },
        )
        .await
        .unwrap();
        assert!(r.upload_mb_per_s > 0.0 && r.download_mb_per_s > 0.0);
        assert_eq!(r.latency.len(), 4);
        assert!(target.list("").await.unwrap().is_empty());
    }
}
