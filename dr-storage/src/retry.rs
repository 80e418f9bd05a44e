//! [`RetryingTarget`]: retries transient storage errors with exponential backoff and full
//! jitter, and resumes interrupted reads from where they stopped.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dr_core::Result<()> {
//! use std::sync::Arc;
//! use dr_core::{StorageExt, StorageTarget};
//! use dr_storage::retry::{RetryPolicy, RetryingTarget};
//!
//! let inner = dr_storage::from_url("memory://")?;
//! let target: Arc<dyn StorageTarget> = Arc::new(RetryingTarget::new(inner, RetryPolicy::default()));
//! assert!(!target.exists("nothing-here").await?);
//! # Ok(()) }
//! ```
//!
//! # What is retried
//!
//! Only errors marked [`dr_core::Error::is_temporary`]: timeouts, connection resets, HTTP
//! 5xx and throttling (429, `SlowDown`). Never NotFound, AlreadyExists, permission or
//! authentication errors, invalid input, or corrupt data: retrying those cannot help, and a
//! retried 404 only hides a bug. Attempts are bounded by [`RetryPolicy::max_attempts`] and
//! the time spent retrying one failure by [`RetryPolicy::max_elapsed`]; the last error is
//! returned with the number of attempts in its context.
//!
//! - `head`, `list`, `delete`, `copy`, and starting a `get` or a `put_stream` are retried
//!   as a whole (they are idempotent).
//! - `get` returns a stream that, when it fails mid-way with a transient error, requests the
//!   rest of the object (or range) from the last byte received and carries on; the consumer
//!   sees one uninterrupted stream. The pieces are not re-checked against each other here:
//!   dr checks every object's SHA-256 and every chunk's authentication tag on the way, so
//!   an object replaced between two requests fails those checks instead of restoring
//!   mixed data.
//! - `put_if_absent` is retried; if a retry finds the object present with exactly the bytes
//!   we were writing, an earlier attempt reached the store before its response was lost, and
//!   the call succeeds. (dr's conditional objects, manifests and leases, always carry
//!   unique content, so equal bytes mean our write.)
//! - Streaming writes (`ObjectWriter::write`/`finish`) are **not** retried here: a stream
//!   cannot be replayed. object_store already retries each part's request internally
//!   (S3/GCS/Azure clients, with their own backoff); when a part still fails, the writer
//!   returns the error, the pipeline aborts the multipart upload (no orphaned parts), no
//!   manifest is written, and the backup is not listed. Run it again.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use dr_core::{
    ByteStream, Error, ErrorKind, ObjectMeta, ObjectWriter, PutOptions, Result, StorageExt,
    StorageTarget,
};

/// How hard to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retries).
    pub max_attempts: u32,
    /// The backoff before the first retry is drawn from `0..=base_delay`, then the bound
    /// doubles with each retry (full jitter).
    pub base_delay: Duration,
    /// The largest bound a backoff is drawn from.
    pub max_delay: Duration,
    /// The longest time spent on one failure's retries, from its first error to giving up.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, 200 ms doubling up to 10 s, at most 2 minutes per failure.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The backoff before retry number `retry` (1 for the first retry): uniform in
    /// `0..=min(max_delay, base_delay × 2^(retry-1))`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let bound = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let nanos = bound.as_nanos().min(u64::MAX as u128) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random_u64() % (nanos + 1))
    }
}

/// A [`StorageTarget`] decorator that retries transient errors. See the module docs.
pub struct RetryingTarget<T: ?Sized> {
    inner: Arc<T>,
    policy: RetryPolicy,
}

impl<T: ?Sized> Clone for RetryingTarget<T> {
    fn clone(&self) -> Self {
        RetryingTarget {
            inner: self.inner.clone(),
            policy: self.policy,
        }
    }
}

impl<T: StorageTarget + ?Sized> std::fmt::Debug for RetryingTarget<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryingTarget")
            .field("inner", &self.inner.describe())
            .field("policy", &self.policy)
            .finish()
    }
}

impl<T: StorageTarget + ?Sized + 'static> RetryingTarget<T> {
    /// Wrap `inner`.
    pub fn new(inner: Arc<T>, policy: RetryPolicy) -> Self {
        RetryingTarget { inner, policy }
    }

    /// The wrapped target.
    pub fn inner(&self) -> &Arc<T> {
        &self.inner
    }

    /// The policy in force.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }
}

/// Tracks one failure's retries: attempts made and time since the first error.
struct Attempts {
    policy: RetryPolicy,
    made: u32,
    first_failure: Option<tokio::time::Instant>,
}

impl Attempts {
    fn new(policy: RetryPolicy) -> Self {
        Attempts {
            policy,
            made: 1,
            first_failure: None,
        }
    }

    /// After error `e`: wait and return `Ok(())` to try again, or return the error to give up.
    async fn after(&mut self, e: Error, op: &'static str) -> Result<()> {
        let first = *self
            .first_failure
            .get_or_insert_with(tokio::time::Instant::now);
        if !e.is_temporary() || self.made >= self.policy.max_attempts {
            return Err(self.give_up(e));
        }
        let delay = self.policy.backoff(self.made);
        if first.elapsed() + delay > self.policy.max_elapsed {
            return Err(self.give_up(e));
        }
        tracing::debug!(op, attempt = self.made, delay_ms = delay.as_millis() as u64, error = %e, "transient storage error; retrying");
        // Sleep in a task of its own: when the runtime is shutting down (a command that
        // failed and is exiting while a pipeline thread still reads), the task is cancelled
        // instead of a timer panicking, and the error is returned as is.
        if tokio::spawn(tokio::time::sleep(delay)).await.is_err() {
            return Err(self.give_up(e));
        }
        self.made += 1;
        Ok(())
    }

    fn give_up(&self, e: Error) -> Error {
        if self.made > 1 {
            e.with_context("attempts", self.made)
        } else {
            e
        }
    }

    /// Progress was made: the next failure starts a fresh count.
    fn reset(&mut self) {
        self.made = 1;
        self.first_failure = None;
    }
}

macro_rules! retry {
    ($self:ident, $op:literal, $call:expr) => {{
        let mut attempts = Attempts::new($self.policy);
        loop {
            match $call.await {
                Ok(v) => break Ok(v),
                Err(e) => attempts.after(e, $op).await?,
            }
        }
    }};
}

#[async_trait]
impl<T: StorageTarget + ?Sized + 'static> StorageTarget for RetryingTarget<T> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put_stream(&self, path: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>> {
        retry!(
            self,
            "put_stream",
            self.inner.put_stream(path, opts.clone())
        )
    }

    async fn put_if_absent(&self, path: &str, bytes: Bytes, opts: PutOptions) -> Result<()> {
        let mut attempts = Attempts::new(self.policy);
        let mut retried = false;
        loop {
            match self
                .inner
                .put_if_absent(path, bytes.clone(), opts.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if retried && e.kind() == ErrorKind::AlreadyExists => {
                    // Did an earlier attempt land before its response was lost?
                    match self.inner.get_bytes(path).await {
                        Ok(stored) if stored == bytes => return Ok(()),
                        _ => return Err(e),
                    }
                }
                Err(e) => {
                    attempts.after(e, "put_if_absent").await?;
                    retried = true;
                }
            }
        }
    }

    async fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let first = retry!(self, "get", self.inner.get(path, range.clone()))?;
        let state = Resume {
            inner: self.inner.clone(),
            path: path.to_string(),
            range,
            offset: 0,
            stream: Some(first),
            attempts: Attempts::new(self.policy),
            done: false,
        };
        Ok(futures::stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        })
        .boxed())
    }

    async fn head(&self, path: &str) -> Result<ObjectMeta> {
        retry!(self, "head", self.inner.head(path))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        retry!(self, "list", self.inner.list(prefix))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        retry!(self, "delete", self.inner.delete(path))
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        retry!(self, "copy", self.inner.copy(from, to))
    }
}

/// The state of a resumable read.
struct Resume<T: ?Sized> {
    inner: Arc<T>,
    path: String,
    range: Option<Range<u64>>,
    /// Bytes delivered so far.
    offset: u64,
    stream: Option<ByteStream>,
    attempts: Attempts,
    done: bool,
}

impl<T: StorageTarget + ?Sized> Resume<T> {
    async fn next(&mut self) -> Option<Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            if let Some(s) = self.stream.as_mut() {
                match s.next().await {
                    Some(Ok(chunk)) => {
                        if !chunk.is_empty() {
                            self.attempts.reset();
                        }
                        self.offset += chunk.len() as u64;
                        return Some(Ok(chunk));
                    }
                    None => {
                        self.done = true;
                        return None;
                    }
                    Some(Err(e)) => {
                        self.stream = None;
                        if let Err(e) = self.attempts.after(e, "get").await {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
            }
            // Interrupted: ask for what is left, from the last byte delivered.
            match reopen(
                self.inner.as_ref(),
                &self.path,
                self.range.clone(),
                self.offset,
            )
            .await
            {
                Ok(Some(s)) => self.stream = Some(s),
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    if let Err(e) = self.attempts.after(e, "get").await {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
        }
    }
}

/// Request what is left of a read after `offset` bytes; `None` when nothing is. A free
/// function so that its future does not borrow the (non-`Sync`) stream being replaced.
async fn reopen<T: StorageTarget + ?Sized>(
    inner: &T,
    path: &str,
    range: Option<Range<u64>>,
    offset: u64,
) -> Result<Option<ByteStream>> {
    let (start, end) = match range {
        Some(r) => (r.start + offset, r.end),
        None => (offset, inner.head(path).await?.size),
    };
    if start >= end {
        return Ok(None);
    }
    tracing::debug!(object = %path, from = start, "resuming an interrupted read");
    inner.get(path, Some(start..end)).await.map(Some)
}

/// A random number for jitter, without a dependency: std's per-process random hash keys,
/// mixed with a counter.
fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_by_the_doubling_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_elapsed: Duration::from_secs(60),
        };
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(100));
            assert!(p.backoff(3) <= Duration::from_millis(400));
            assert!(p.backoff(20) <= Duration::from_secs(1));
        }
        // Full jitter: draws spread over the range rather than sitting at the cap.
        let draws: Vec<Duration> = (0..200).map(|_| p.backoff(4)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(400)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(400)));
    }
}
