//! Leases: who may run an operation on a repository right now.
//!
//! Three kinds are taken through this module:
//!
//! - the **exclusive** repository lease ([`Lease::exclusive`]), held by operations that
//!   delete or rewrite what is stored (prune, key rotation): at most one at a time per
//!   repository;
//! - **shared** leases ([`Lease::shared`]), held by operations that rely on what is stored
//!   not going away (a deduplicated file backup reusing packs): any number at once, never
//!   together with the exclusive lease (see the `shared` module);
//! - **job** leases ([`Lease::job`]), one per job name, for schedulers: several replicas of an
//!   application that embeds dr all try to take `job("nightly")`, and only one runs it. Job
//!   leases are independent of each other and of the exclusive lease.
//!
//! ```no_run
//! # async fn run(repo: &dr_core::Repository) -> dr_core::Result<()> {
//! use std::time::Duration;
//! use dr_core::lease::Lease;
//!
//! // Fail at once (ErrorKind::Locked) if another process holds it; or wait up to a minute.
//! let lease = Lease::exclusive(repo, "prune", Some(Duration::from_secs(60))).await?;
//! // … delete expired backups, calling lease.check()? before each destructive step …
//! lease.check()?;
//! lease.release().await?;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! A lease named `N` is a series of small JSON objects `locks/N/<generation>` (the
//! generation as 20 decimal digits, so names sort by number), each created with
//! create-if-absent ([`StorageTarget::put_if_absent`]) and never modified. Each holds a
//! [`LeaseInfo`]: the owner (host, process id, a random token), the purpose, when it was
//! acquired and when it expires, and whether it marks a release.
//!
//! - **The holder is the highest generation**, if that object is live (not expired and not
//!   a release marker).
//! - **Acquire**: list `locks/N/`, read the highest generation `g`. If it is live and not
//!   ours, the lease is taken: fail with [`ErrorKind::Locked`] or wait. Otherwise create
//!   `g + 1` with create-if-absent. Of several processes racing to take over the same stale
//!   lease, all try to create the same `g + 1` and the store lets exactly one succeed; the
//!   others see a live holder when they look again. After creating, the winner lists once
//!   more and gives up if a higher generation exists (a racer working from an old listing
//!   can only create a generation that is not the highest, which this check catches).
//! - **Renewal**: while the lease is held, a background task creates `g + 1` (same owner
//!   token, a later expiry) every `ttl / 3`, then deletes its older generations. If that
//!   create fails because the object exists, someone took the lease over (ours had
//!   expired, or a human broke it): the lease is *lost*, and [`Lease::check`] says so.
//! - **Release** creates a release marker at `g + 1` rather than deleting, so the highest
//!   generation is never deleted and generation numbers never go back. This is what makes
//!   the takeover race safe: only generations below the holder's are ever deleted.
//! - **Breaking** a lease (`drctl lock break`, [`break_lease`]) writes a release marker
//!   above the current holder; the holder's next renewal finds it and reports the lease lost.
//!
//! Assumptions: the store's create-if-absent is atomic and its listings are strongly
//! consistent (true of S3 since 2020, GCS, Azure, local file systems and memory), and the
//! clocks of the machines sharing a repository agree to well within the lease's time to
//! live (60 s by default). Stores that cannot create objects atomically only-if-absent
//! fail with [`ErrorKind::Unsupported`] and a message that says so: dr takes no lease it
//! cannot make safe.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::{Error, ErrorKind, Result};
use crate::names::{check_lease_name, host_name, random_hex};
use crate::repo::Repository;
use crate::storage::{PutOptions, StorageExt, StorageTarget};

mod shared;
pub use shared::SHARED_PREFIX;

/// Prefix under which leases live.
pub const LOCKS_PREFIX: &str = "locks/";
/// The name of the exclusive repository lease.
pub const EXCLUSIVE: &str = "exclusive";
/// Prefix of job lease names: the lease of job `nightly` is named `job-nightly`.
pub const JOB_PREFIX: &str = "job-";
/// Default time to live of a lease; the holder renews it every third of that.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseOwner {
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder on that host.
    pub pid: u32,
    /// A random token, different for every acquisition: two leases of one process differ.
    pub token: String,
}

impl fmt::Display for LeaseOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pid {}", self.host, self.pid)
    }
}

/// One generation of a lease, as stored in `locks/<name>/<generation>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease's name: `exclusive` or `job-<job>`.
    pub name: String,
    /// The generation this object is; renewals and takeovers create the next one.
    pub generation: u64,
    /// The holder.
    pub owner: LeaseOwner,
    /// What the holder is doing (`prune`, `rotate keys`, `job nightly`).
    pub purpose: String,
    /// When the holder first acquired the lease (kept across renewals).
    pub acquired_at: DateTime<Utc>,
    /// When the lease lapses unless renewed.
    pub expires_at: DateTime<Utc>,
    /// Whether this generation marks a release (or a break): nobody holds the lease.
    #[serde(default)]
    pub released: bool,
}

impl LeaseInfo {
    /// Whether this generation holds the lease at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        !self.released && self.expires_at > now
    }
}

/// The time source leases use to judge expiry.
///
/// Expiry times are wall-clock times, because other processes on other machines read them.
/// Tests that run on Tokio's paused clock use [`Clock::tokio`], whose wall time advances
/// with `tokio::time`.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Utc::now))
    }

    /// Wall time that follows Tokio's clock (`tokio::time::pause` and `advance` in tests):
    /// the wall time at a process-wide anchor plus Tokio's time since that anchor, so every
    /// `Clock::tokio()` of the process reads the same.
    pub fn tokio() -> Clock {
        static ANCHOR: std::sync::OnceLock<(DateTime<Utc>, std::time::Instant)> =
            std::sync::OnceLock::new();
        let (wall, at) = *ANCHOR.get_or_init(|| (Utc::now(), std::time::Instant::now()));
        Clock(Arc::new(move || {
            let t = tokio::time::Instant::now().into_std();
            match t.checked_duration_since(at) {
                Some(d) => wall + chrono::Duration::from_std(d).unwrap_or_default(),
                None => wall - chrono::Duration::from_std(at - t).unwrap_or_default(),
            }
        }))
    }

    /// Any function of no arguments.
    pub fn from_fn(f: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Clock").field(&self.now()).finish()
    }
}

/// How a lease is taken and kept.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// How long the lease lives without renewal ([`DEFAULT_TTL`]); renewed every third.
    pub ttl: Duration,
    /// While waiting for a lease, how often to look again (at most).
    pub poll: Duration,
    /// Time source for expiry.
    pub clock: Clock,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions {
            ttl: DEFAULT_TTL,
            poll: Duration::from_secs(1),
            clock: Clock::system(),
        }
    }
}

/// A held lease. Renewed in the background until [`Lease::release`] or drop.
///
/// Dropping a lease stops renewal and releases it on a best-effort basis (a spawned task);
/// call [`Lease::release`] to know that it was released.
pub struct Lease {
    info: LeaseInfo,
    shared: Arc<Shared>,
    released: bool,
}

struct Shared {
    storage: Arc<dyn StorageTarget>,
    clock: Clock,
    ttl: Duration,
    /// The generation currently ours; renewal and release hold this lock while writing.
    current: tokio::sync::Mutex<LeaseInfo>,
    /// When the lease expires unless renewed (readable without awaiting).
    expires_at: Mutex<DateTime<Utc>>,
    lost: AtomicBool,
    stopped: AtomicBool,
    stop: Notify,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("info", &self.info)
            .field("lost", &self.shared.lost.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The exclusive repository lease, for operations that delete or rewrite stored data
    /// (prune, key rotation). With `wait`, waits up to that long for a live holder to go;
    /// otherwise (or after the wait) fails with [`ErrorKind::Locked`], naming the holder
    /// and its expiry.
    ///
    /// Once taken, it also waits (within the same `wait`) until no [shared](Lease::shared)
    /// lease is live, and otherwise gives the exclusive lease back and fails naming a
    /// shared holder.
    pub async fn exclusive(
        repo: &Repository,
        purpose: &str,
        wait: Option<Duration>,
    ) -> Result<Lease> {
        let opts = LeaseOptions::default();
        let started = tokio::time::Instant::now();
        let lease = Lease::acquire(repo, EXCLUSIVE, purpose, wait, &opts).await?;
        let left = wait.map(|w| w.saturating_sub(started.elapsed()));
        lease.exclude_shared(left, &opts).await
    }

    /// The lease of the scheduled job `job` (named `job-<job>`), so that of several
    /// processes that schedule the same job only one runs it. Independent of the exclusive
    /// lease and of other jobs' leases. `job` is a plain name: letters, digits, `-`, `_`, `.`.
    pub async fn job(repo: &Repository, job: &str, wait: Option<Duration>) -> Result<Lease> {
        check_lease_name(job)?;
        Lease::acquire(
            repo,
            &format!("{JOB_PREFIX}{job}"),
            &format!("job {job}"),
            wait,
            &LeaseOptions::default(),
        )
        .await
    }

    /// Take the lease `name` with explicit options (time to live, clock). The building
    /// block of [`Lease::exclusive`] and [`Lease::job`].
    pub async fn acquire(
        repo: &Repository,
        name: &str,
        purpose: &str,
        wait: Option<Duration>,
        opts: &LeaseOptions,
    ) -> Result<Lease> {
        Lease::acquire_on(repo.storage().clone(), name, purpose, wait, opts).await
    }

    /// [`Lease::acquire`] on a bare storage target (the repository's root).
    pub async fn acquire_on(
        storage: Arc<dyn StorageTarget>,
        name: &str,
        purpose: &str,
        wait: Option<Duration>,
        opts: &LeaseOptions,
    ) -> Result<Lease> {
        check_lease_name(name)?;
        if opts.ttl < Duration::from_millis(30) {
            return Err(Error::invalid(
                "a lease's time to live must be at least 30 ms",
            ));
        }
        let owner = LeaseOwner {
            host: host_name(),
            pid: std::process::id(),
            token: random_hex(16)?,
        };
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let holder = match try_acquire(&storage, name, purpose, &owner, opts).await? {
                Attempt::Won(info) => return Ok(Lease::start(storage, info, opts)),
                Attempt::Retry => continue,
                Attempt::Held(holder) => holder,
            };
            let now = tokio::time::Instant::now();
            match deadline {
                Some(d) if now < d => {
                    let until_expiry = (holder.expires_at - opts.clock.now())
                        .to_std()
                        .unwrap_or_default()
                        + Duration::from_millis(10);
                    let nap = opts.poll.min(d - now).min(until_expiry);
                    tokio::time::sleep(nap.max(Duration::from_millis(1))).await;
                }
                _ => return Err(locked_error(&holder, storage.as_ref(), wait)),
            }
        }
    }

    fn start(storage: Arc<dyn StorageTarget>, info: LeaseInfo, opts: &LeaseOptions) -> Lease {
        let shared = Arc::new(Shared {
            storage,
            clock: opts.clock.clone(),
            ttl: opts.ttl,
            current: tokio::sync::Mutex::new(info.clone()),
            expires_at: Mutex::new(info.expires_at),
            lost: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            stop: Notify::new(),
        });
        tokio::spawn(renew_loop(shared.clone()));
        tracing::debug!(lease = %info.name, generation = info.generation, "lease acquired");
        Lease {
            info,
            shared,
            released: false,
        }
    }

    /// The holder's record as acquired (owner, purpose, first expiry). See
    /// [`Lease::expires_at`] for the expiry after renewals.
    pub fn holder(&self) -> &LeaseInfo {
        &self.info
    }

    /// The lease's name (`exclusive`, `job-<job>`).
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// When the lease lapses unless renewed again.
    pub fn expires_at(&self) -> DateTime<Utc> {
        *self.shared.expires_at.lock().unwrap()
    }

    /// Whether the lease was lost: taken over after it expired (renewals failed), or broken.
    pub fn is_lost(&self) -> bool {
        self.shared.lost.load(Ordering::SeqCst) || self.shared.clock.now() >= self.expires_at()
    }

    /// `Ok` while the lease is held; [`ErrorKind::Locked`] once it was lost. Call it before
    /// each destructive step of a long operation.
    pub fn check(&self) -> Result<()> {
        if self.is_lost() {
            return Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "lease '{}' was lost (it expired without renewal, or was broken): stopping",
                    self.info.name
                ),
            )
            .with_context("repository", self.shared.storage.describe()));
        }
        Ok(())
    }

    /// Run `work` while holding the lease, then release it. An error of `work` is returned
    /// before an error of the release, which matters only when the work succeeded.
    pub async fn hold<T>(self, work: impl AsyncFnOnce(&Lease) -> Result<T>) -> Result<T> {
        let result = work(&self).await;
        let released = self.release().await;
        let value = result?;
        released?;
        Ok(value)
    }

    /// Stop renewing and release the lease, so the next caller gets it at once.
    /// Releasing a lease that was already lost succeeds (there is nothing to release).
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        release(&self.shared).await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let shared = self.shared.clone();
        stop(&shared);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = release(&shared).await {
                    tracing::warn!(error = %e.report(), "releasing a dropped lease failed; it expires by itself");
                }
            });
        }
    }
}

fn stop(shared: &Shared) {
    shared.stopped.store(true, Ordering::SeqCst);
    shared.stop.notify_one();
}

async fn release(shared: &Shared) -> Result<()> {
    stop(shared);
    let mut current = shared.current.lock().await;
    if current.released {
        return Ok(());
    }
    if shared.lost.load(Ordering::SeqCst) {
        current.released = true;
        return Ok(());
    }
    let mut marker = current.clone();
    marker.generation += 1;
    marker.released = true;
    marker.expires_at = shared.clock.now();
    match create(shared.storage.as_ref(), &marker).await {
        Ok(()) => {
            delete_quietly(shared.storage.as_ref(), &current.name, current.generation).await;
            if current.name.starts_with(SHARED_PREFIX) {
                // A shared lease's name is its holder's alone: nothing to keep.
                delete_quietly(shared.storage.as_ref(), &marker.name, marker.generation).await;
            }
            *current = marker;
            tracing::debug!(lease = %current.name, "lease released");
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // Someone took it over or broke it: it is no longer ours to release.
            shared.lost.store(true, Ordering::SeqCst);
            current.released = true;
            Ok(())
        }
        Err(e) => Err(Error::new(
            ErrorKind::Storage,
            format!(
                "could not release lease '{}'; it expires by itself at {}",
                current.name,
                current.expires_at.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        )
        .with_source(e)),
    }
}

async fn renew_loop(shared: Arc<Shared>) {
    let interval = shared.ttl / 3;
    let mut wait = interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.stop.notified() => return,
        }
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let mut current = shared.current.lock().await;
        if current.released || shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let now = shared.clock.now();
        if now >= current.expires_at {
            // Renewals failed for a whole time to live: someone may hold it now.
            shared.lost.store(true, Ordering::SeqCst);
            tracing::warn!(lease = %current.name, "lease expired before it could be renewed");
            return;
        }
        let mut next = current.clone();
        next.generation += 1;
        next.expires_at = now + ttl_chrono(shared.ttl);
        match create(shared.storage.as_ref(), &next).await {
            Ok(()) => {
                // A new holder deletes the generations below its own, so our create can
                // succeed below it: the highest generation decides.
                match generations(shared.storage.as_ref(), &next.name).await {
                    Ok(gens) if gens.iter().any(|g| *g > next.generation) => {
                        delete_quietly(shared.storage.as_ref(), &next.name, next.generation).await;
                        shared.lost.store(true, Ordering::SeqCst);
                        tracing::warn!(lease = %next.name, "lease was taken over or broken");
                        return;
                    }
                    _ => {}
                }
                delete_quietly(shared.storage.as_ref(), &current.name, current.generation).await;
                *shared.expires_at.lock().unwrap() = next.expires_at;
                *current = next;
                wait = interval;
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                shared.lost.store(true, Ordering::SeqCst);
                tracing::warn!(lease = %current.name, "lease was taken over or broken");
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %current.name, error = %e.report(), "renewing the lease failed; retrying");
                wait = (interval / 4).max(Duration::from_millis(10));
            }
        }
    }
}

enum Attempt {
    Won(LeaseInfo),
    Held(LeaseInfo),
    Retry,
}

async fn try_acquire(
    storage: &Arc<dyn StorageTarget>,
    name: &str,
    purpose: &str,
    owner: &LeaseOwner,
    opts: &LeaseOptions,
) -> Result<Attempt> {
    let top = match highest(storage.as_ref(), name).await? {
        Highest::Vanished => return Ok(Attempt::Retry),
        Highest::None => None,
        Highest::Some(info) => Some(info),
    };
    let now = opts.clock.now();
    if let Some(h) = &top {
        if h.is_live(now) {
            return Ok(Attempt::Held(h.clone()));
        }
    }
    let generation = top.as_ref().map_or(1, |h| h.generation + 1);
    let info = LeaseInfo {
        name: name.to_string(),
        generation,
        owner: owner.clone(),
        purpose: purpose.to_string(),
        acquired_at: now,
        expires_at: now + ttl_chrono(opts.ttl),
        released: false,
    };
    match create(storage.as_ref(), &info).await {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(Attempt::Retry),
        Err(e) => return Err(e),
    }
    // A racer that worked from an older listing may have created a generation that is not
    // the highest: the highest wins.
    let gens = generations(storage.as_ref(), name).await?;
    if gens.iter().any(|g| *g > generation) {
        delete_quietly(storage.as_ref(), name, generation).await;
        return Ok(Attempt::Retry);
    }
    for g in gens.into_iter().filter(|g| *g < generation) {
        delete_quietly(storage.as_ref(), name, g).await;
    }
    Ok(Attempt::Won(info))
}

enum Highest {
    None,
    Some(LeaseInfo),
    /// Listed, then deleted before it could be read (a renewal moved on): look again.
    Vanished,
}

async fn highest(storage: &dyn StorageTarget, name: &str) -> Result<Highest> {
    let Some(g) = generations(storage, name).await?.into_iter().max() else {
        return Ok(Highest::None);
    };
    match read(storage, name, g).await {
        Ok(info) => Ok(Highest::Some(info)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Highest::Vanished),
        Err(e) => Err(e),
    }
}

async fn generations(storage: &dyn StorageTarget, name: &str) -> Result<Vec<u64>> {
    let prefix = format!("{LOCKS_PREFIX}{name}/");
    let listed = storage
        .list(&prefix)
        .await
        .map_err(|e| e.with_context("lease", name))?;
    Ok(listed
        .iter()
        .filter_map(|o| o.path[prefix.len()..].parse::<u64>().ok())
        .collect())
}

async fn read(storage: &dyn StorageTarget, name: &str, generation: u64) -> Result<LeaseInfo> {
    let path = object_path(name, generation);
    let bytes = storage.get_bytes(&path).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupt(format!(
            "lease object '{path}' is malformed; if no process holds this lease, break it with `drctl lock break {name}`"
        ))
        .with_source(e)
    })
}

async fn create(storage: &dyn StorageTarget, info: &LeaseInfo) -> Result<()> {
    let json = serde_json::to_vec_pretty(info).expect("lease info serializes");
    let path = object_path(&info.name, info.generation);
    match storage
        .put_if_absent(&path, Bytes::from(json), PutOptions::default())
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::Unsupported => Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "{} cannot create an object only if it is absent, so leases cannot be taken safely there; use a store with conditional writes (S3, GCS, Azure, a local directory)",
                storage.describe()
            ),
        )
        .with_source(e)),
        Err(e) => Err(e.with_context("lease", &info.name)),
    }
}

async fn delete_quietly(storage: &dyn StorageTarget, name: &str, generation: u64) {
    if let Err(e) = storage.delete(&object_path(name, generation)).await {
        tracing::debug!(lease = name, generation, error = %e.report(), "could not delete an old lease generation");
    }
}

fn object_path(name: &str, generation: u64) -> String {
    format!("{LOCKS_PREFIX}{name}/{generation:020}")
}

fn locked_error(holder: &LeaseInfo, storage: &dyn StorageTarget, wait: Option<Duration>) -> Error {
    let waited = match wait {
        Some(w) if !w.is_zero() => format!(" (waited {:.0} s)", w.as_secs_f64()),
        _ => String::new(),
    };
    Error::new(
        ErrorKind::Locked,
        format!(
            "lease '{}' is held by {} for '{}' until {}{waited}; try again later, or if that process is gone, break it with `drctl lock break {}`",
            holder.name,
            holder.owner,
            holder.purpose,
            holder.expires_at.format("%Y-%m-%dT%H:%M:%SZ"),
            holder.name
        ),
    )
    .with_context("repository", storage.describe())
}

/// The state of one lease name, for `drctl lock list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// The lease's name.
    pub name: String,
    /// The highest generation's record.
    pub info: LeaseInfo,
    /// `held`, `expired` (stale: anyone may take it over) or `released`.
    pub state: String,
}

/// The names of the leases that have objects under `locks/`, each once (the listing is in
/// key order, so one lease's objects are adjacent).
async fn lease_names(storage: &dyn StorageTarget) -> Result<Vec<String>> {
    let mut names: Vec<String> = storage
        .list(LOCKS_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| {
            let rest = &o.path[LOCKS_PREFIX.len()..];
            rest.split_once('/').map(|(n, _)| n.to_string())
        })
        .collect();
    names.dedup();
    Ok(names)
}

/// Every lease in the repository and its state at `now` (by the system clock).
pub async fn list(repo: &Repository) -> Result<Vec<LeaseStatus>> {
    let storage = repo.storage();
    let names = lease_names(storage.as_ref()).await?;
    let now = Utc::now();
    let mut out = Vec::new();
    for name in names {
        if let Highest::Some(info) = highest(storage.as_ref(), &name).await? {
            let state = if info.released {
                "released"
            } else if info.expires_at <= now {
                "expired"
            } else {
                "held"
            };
            out.push(LeaseStatus {
                name,
                info,
                state: state.into(),
            });
        }
    }
    Ok(out)
}

/// Break the lease `name`: whoever holds it loses it at its next renewal (and should stop
/// what it is doing when it checks). For humans clearing up after a crashed process; a live
/// holder is not stopped at once. Returns the record of the holder that was displaced, if
/// the lease was held or expired.
pub async fn break_lease(repo: &Repository, name: &str) -> Result<Option<LeaseInfo>> {
    check_lease_name(name)?;
    let storage = repo.storage();
    loop {
        let top = match highest(storage.as_ref(), name).await? {
            Highest::Vanished => continue,
            Highest::None => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no lease named '{name}' in {}", storage.describe()),
                ))
            }
            Highest::Some(info) => info,
        };
        if top.released {
            return Ok(None);
        }
        let mut marker = top.clone();
        marker.generation += 1;
        marker.released = true;
        marker.purpose = format!("broken by {} pid {}", host_name(), std::process::id());
        marker.expires_at = Utc::now();
        match create(storage.as_ref(), &marker).await {
            Ok(()) => return Ok(Some(top)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn ttl_chrono(ttl: Duration) -> chrono::Duration {
    chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_paths_sort_by_number() {
        let a = object_path("exclusive", 9);
        let b = object_path("exclusive", 10);
        assert!(a < b, "{a} < {b}");
        assert_eq!(b, "locks/exclusive/00000000000000000010");
    }
}
