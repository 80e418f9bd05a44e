//! [`FaultyTarget`]: a **test tool** that injects storage faults, to prove that code built
//! on a [`StorageTarget`] survives them (or fails cleanly).
//!
//! It wraps any target and, per operation kind, fails, delays, or cuts off the Nth request,
//! every request, or a fraction of requests drawn from a seeded random generator, so a
//! failing run can be replayed exactly with the same seed. It is public so that embedders
//! can test their own jobs the way dr tests its pipelines. Never use it in production.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dr_core::Result<()> {
//! use dr_core::{ErrorKind, PutOptions, StorageExt, StorageTarget};
//! use dr_storage::faults::{Fault, FaultyTarget, Op, Trigger};
//!
//! let target = FaultyTarget::new(dr_storage::from_url("memory://")?, 42)
//!     .inject(Op::Get, Trigger::Nth(1), Fault::transient())
//!     .inject(Op::Get, Trigger::Fraction(0.25), Fault::CutOff { after_bytes: 1000 });
//! target.put_bytes("x", vec![7u8; 5000].into(), PutOptions::default()).await?;
//! let e = target.get_bytes("x").await.unwrap_err();
//! assert!(e.is_temporary());
//! assert_eq!(target.injected(), 1);
//! # Ok(()) }
//! ```
//!
//! What each [`Fault`] does to each [`Op`]:
//!
//! | fault | `Get` | `Put` (streaming write) | other operations |
//! |---|---|---|---|
//! | `Fail` | the request fails | starting the upload fails | the request fails |
//! | `Delay(d)` | waits `d`, then proceeds | waits `d` before starting | waits `d`, then proceeds |
//! | `CutOff { after_bytes }` | the stream yields `after_bytes` bytes, then a transient error | `write` fails (transient) once more than `after_bytes` bytes were written; the upload is aborted | like `Fail` (transient) |
//! | `LoseResponse` | like `Fail` (transient) | `finish` commits the object, then reports a transient error | the request is carried out, then a transient error is reported (a timeout after the store acted) |

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use dr_core::{
    ByteStream, Error, ErrorKind, ObjectMeta, ObjectWriter, PutOptions, Result, StorageTarget,
};

/// An operation kind that a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `put_stream` and the writer it returns.
    Put,
    /// `put_if_absent`.
    PutIfAbsent,
    /// `get`, and the stream it returns.
    Get,
    /// `head`.
    Head,
    /// `list`.
    List,
    /// `delete`.
    Delete,
    /// `copy`.
    Copy,
}

impl Op {
    const ALL: [Op; 7] = [
        Op::Put,
        Op::PutIfAbsent,
        Op::Get,
        Op::Head,
        Op::List,
        Op::Delete,
        Op::Copy,
    ];

    fn index(self) -> usize {
        Op::ALL.iter().position(|o| *o == self).unwrap()
    }

    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::PutIfAbsent => "put_if_absent",
            Op::Get => "get",
            Op::Head => "head",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Copy => "copy",
        }
    }
}

/// Which of the matching requests a rule fires on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    /// Only the Nth matching request (counting from 1).
    Nth(u64),
    /// Every matching request from the Nth on (counting from 1).
    FromNth(u64),
    /// Each matching request with this probability, from the target's seeded generator.
    Fraction(f64),
    /// Every matching request.
    Always,
}

/// What happens to a request a rule fires on. See the table in the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Fail with an error of `kind`, marked temporary or not.
    Fail {
        /// The error's kind.
        kind: ErrorKind,
        /// Whether it is marked [`Error::is_temporary`].
        temporary: bool,
    },
    /// Wait, then carry on normally.
    Delay(Duration),
    /// Let `after_bytes` bytes through, then fail with a transient error.
    CutOff {
        /// Bytes that get through.
        after_bytes: u64,
    },
    /// Carry the request out, then report a transient error as if the response was lost.
    LoseResponse,
}

impl Fault {
    /// A transient storage error (a 503, a reset connection).
    pub fn transient() -> Fault {
        Fault::Fail {
            kind: ErrorKind::Storage,
            temporary: true,
        }
    }

    /// A permanent error of `kind` (NotFound, a permission error as `Storage`).
    pub fn permanent(kind: ErrorKind) -> Fault {
        Fault::Fail {
            kind,
            temporary: false,
        }
    }
}

#[derive(Debug)]
struct Rule {
    op: Op,
    prefix: String,
    trigger: Trigger,
    fault: Fault,
    seen: u64,
}

#[derive(Debug)]
struct State {
    rules: Vec<Rule>,
    rng: u64,
    requests: [u64; 7],
    injected: u64,
}

impl State {
    /// splitmix64: small, seedable, good enough to spread faults.
    fn next_f64(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A fault-injecting [`StorageTarget`] decorator, for tests. See the module docs.
///
/// Clones share their rules and counters, so a test can keep one handle and give another
/// to the code under test.
pub struct FaultyTarget<T: ?Sized> {
    inner: Arc<T>,
    state: Arc<Mutex<State>>,
}

impl<T: ?Sized> Clone for FaultyTarget<T> {
    fn clone(&self) -> Self {
        FaultyTarget {
            inner: self.inner.clone(),
            state: self.state.clone(),
        }
    }
}

impl<T: StorageTarget + ?Sized> std::fmt::Debug for FaultyTarget<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyTarget")
            .field("inner", &self.inner.describe())
            .field("state", &self.state.lock().unwrap())
            .finish()
    }
}

impl<T: StorageTarget + ?Sized + 'static> FaultyTarget<T> {
    /// Wrap `inner`; `seed` drives [`Trigger::Fraction`].
    pub fn new(inner: Arc<T>, seed: u64) -> Self {
        FaultyTarget {
            inner,
            state: Arc::new(Mutex::new(State {
                rules: Vec::new(),
                rng: seed,
                requests: [0; 7],
                injected: 0,
            })),
        }
    }

    /// Add a rule for every request of kind `op`.
    pub fn inject(self, op: Op, trigger: Trigger, fault: Fault) -> Self {
        self.inject_at(op, "", trigger, fault)
    }

    /// Add a rule for requests of kind `op` on paths starting with `prefix` (for `list`,
    /// the listed prefix). Rules are tried in the order added; the first that fires wins.
    pub fn inject_at(self, op: Op, prefix: &str, trigger: Trigger, fault: Fault) -> Self {
        self.add(op, prefix, trigger, fault);
        self
    }

    /// [`FaultyTarget::inject_at`] on a shared handle, while the target is in use.
    pub fn add(&self, op: Op, prefix: &str, trigger: Trigger, fault: Fault) {
        self.state.lock().unwrap().rules.push(Rule {
            op,
            prefix: prefix.to_string(),
            trigger,
            fault,
            seen: 0,
        });
    }

    /// Remove every rule: from now on requests pass through untouched.
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.state.lock().unwrap().injected
    }

    /// Requests of kind `op` seen so far (faulty or not).
    pub fn requests(&self, op: Op) -> u64 {
        self.state.lock().unwrap().requests[op.index()]
    }

    /// The wrapped target.
    pub fn inner(&self) -> &Arc<T> {
        &self.inner
    }

    /// Count the request and pick the fault to inject, if any.
    fn decide(&self, op: Op, path: &str) -> Option<Fault> {
        let mut guard = self.state.lock().unwrap();
        let state = &mut *guard;
        state.requests[op.index()] += 1;
        let mut chosen = None;
        for i in 0..state.rules.len() {
            let rule = &mut state.rules[i];
            if rule.op != op || !path.starts_with(&rule.prefix) {
                continue;
            }
            rule.seen += 1;
            let fires = match rule.trigger {
                Trigger::Nth(n) => rule.seen == n,
                Trigger::FromNth(n) => rule.seen >= n,
                Trigger::Always => true,
                Trigger::Fraction(p) => {
                    let p = p.clamp(0.0, 1.0);
                    state.next_f64() < p
                }
            };
            if fires && chosen.is_none() {
                chosen = Some(state.rules[i].fault.clone());
            }
        }
        if chosen.is_some() {
            state.injected += 1;
        }
        chosen
    }

    /// Apply a fault to a request without a body stream: fail, wait, or report success
    /// late. Returns whether the response must be "lost" after carrying the request out.
    async fn before(&self, op: Op, path: &str) -> Result<bool> {
        match self.decide(op, path) {
            None => Ok(false),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(false)
            }
            Some(Fault::LoseResponse) => Ok(true),
            Some(Fault::Fail { kind, temporary }) => Err(injected(kind, temporary, op, path)),
            Some(Fault::CutOff { .. }) => Err(injected(ErrorKind::Storage, true, op, path)),
        }
    }
}

fn injected(kind: ErrorKind, temporary: bool, op: Op, path: &str) -> Error {
    let e =
        Error::new(kind, format!("injected fault in {}", op.name())).with_context("object", path);
    if temporary {
        e.temporary()
    } else {
        e
    }
}

fn lost(op: Op, path: &str) -> Error {
    Error::new(
        ErrorKind::Storage,
        format!("injected fault: the response to {} was lost", op.name()),
    )
    .with_context("object", path)
    .temporary()
}

macro_rules! plain {
    ($self:ident, $op:expr, $path:expr, $call:expr) => {{
        let lose = $self.before($op, $path).await?;
        let out = $call.await?;
        if lose {
            return Err(lost($op, $path));
        }
        Ok(out)
    }};
}

#[async_trait]
impl<T: StorageTarget + ?Sized + 'static> StorageTarget for FaultyTarget<T> {
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }

    async fn put_stream(&self, path: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>> {
        let (limit, lose) = match self.decide(Op::Put, path) {
            None => (None, false),
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                (None, false)
            }
            Some(Fault::CutOff { after_bytes }) => (Some(after_bytes), false),
            Some(Fault::LoseResponse) => (None, true),
            Some(Fault::Fail { kind, temporary }) => {
                return Err(injected(kind, temporary, Op::Put, path))
            }
        };
        let inner = self.inner.put_stream(path, opts).await?;
        if limit.is_none() && !lose {
            return Ok(inner);
        }
        Ok(Box::new(FaultyWriter {
            inner,
            path: path.to_string(),
            written: 0,
            limit,
            lose,
        }))
    }

    async fn put_if_absent(&self, path: &str, bytes: Bytes, opts: PutOptions) -> Result<()> {
        plain!(
            self,
            Op::PutIfAbsent,
            path,
            self.inner.put_if_absent(path, bytes, opts)
        )
    }

    async fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let limit = match self.decide(Op::Get, path) {
            None => None,
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                None
            }
            Some(Fault::CutOff { after_bytes }) => Some(after_bytes),
            Some(Fault::LoseResponse) => return Err(lost(Op::Get, path)),
            Some(Fault::Fail { kind, temporary }) => {
                return Err(injected(kind, temporary, Op::Get, path))
            }
        };
        let stream = self.inner.get(path, range).await?;
        let Some(limit) = limit else {
            return Ok(stream);
        };
        let path = path.to_string();
        Ok(
            futures::stream::unfold((stream, limit, false), move |(mut s, left, done)| {
                let path = path.clone();
                async move {
                    if done {
                        return None;
                    }
                    if left == 0 {
                        let e = Error::new(
                            ErrorKind::Storage,
                            "injected fault: the connection was cut off mid-stream",
                        )
                        .with_context("object", &path)
                        .temporary();
                        return Some((Err(e), (s, 0, true)));
                    }
                    match s.next().await {
                        Some(Ok(mut chunk)) => {
                            if chunk.len() as u64 > left {
                                chunk.truncate(left as usize);
                            }
                            let left = left - chunk.len() as u64;
                            Some((Ok(chunk), (s, left, false)))
                        }
                        Some(Err(e)) => Some((Err(e), (s, left, true))),
                        // The object ended before the cut-off point: nothing to cut.
                        None => None,
                    }
                }
            })
            .boxed(),
        )
    }

    async fn head(&self, path: &str) -> Result<ObjectMeta> {
        plain!(self, Op::Head, path, self.inner.head(path))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        plain!(self, Op::List, prefix, self.inner.list(prefix))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        plain!(self, Op::Delete, path, self.inner.delete(path))
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        plain!(self, Op::Copy, from, self.inner.copy(from, to))
    }
}

/// A writer that fails after `limit` bytes, or loses the response to `finish`.
struct FaultyWriter {
    inner: Box<dyn ObjectWriter>,
    path: String,
    written: u64,
    limit: Option<u64>,
    lose: bool,
}

#[async_trait]
impl ObjectWriter for FaultyWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.written += chunk.len() as u64;
        if let Some(limit) = self.limit {
            if self.written > limit {
                return Err(Error::new(
                    ErrorKind::Storage,
                    "injected fault: the upload was cut off",
                )
                .with_context("object", &self.path)
                .temporary());
            }
        }
        self.inner.write(chunk).await
    }

    async fn finish(self: Box<Self>) -> Result<u64> {
        let FaultyWriter {
            inner, path, lose, ..
        } = *self;
        let size = inner.finish().await?;
        if lose {
            return Err(lost(Op::Put, &path));
        }
        Ok(size)
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.inner.abort().await
    }
}
