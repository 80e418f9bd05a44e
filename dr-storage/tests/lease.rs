//! Repository leases (`dr_core::lease`) on a real in-memory object store.
//!
//! These live in dr-storage's tests because they need a concrete store (dr-core knows none).
//! Time-dependent tests run on Tokio's paused clock with `Clock::tokio()`, so "an hour
//! later" takes no time and nothing depends on the machine's speed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use dr_core::lease::{self, Clock, Lease, LeaseOptions};
use dr_core::{
    ByteStream, Codec, ErrorKind, ObjectMeta, ObjectWriter, PutOptions, RepoConfig, RepoDefaults,
    Repository, Result, StorageTarget,
};
use dr_storage::faults::{Fault, FaultyTarget, Op, Trigger};

const TTL: Duration = Duration::from_secs(30);

fn opts() -> LeaseOptions {
    LeaseOptions {
        ttl: TTL,
        poll: Duration::from_secs(1),
        clock: Clock::tokio(),
    }
}

async fn repo_on(storage: Arc<dyn StorageTarget>) -> Repository {
    let config = RepoConfig::new(
        RepoDefaults {
            compression: Codec::None,
            encryption: "none".into(),
            cipher: String::new(),
            storage_class: None,
        },
        vec![],
    )
    .unwrap();
    Repository::init(storage, config).await.unwrap()
}

async fn memory_repo() -> Repository {
    repo_on(dr_storage::from_url("memory://").unwrap()).await
}

#[tokio::test]
async fn second_caller_fails_with_locked_naming_the_holder() {
    let repo = memory_repo().await;
    let held = Lease::exclusive(&repo, "prune", None).await.unwrap();
    assert_eq!(held.holder().purpose, "prune");
    assert_eq!(held.holder().owner.pid, std::process::id());

    let e = Lease::exclusive(&repo, "rotate keys", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked);
    let msg = e.to_string();
    assert!(msg.contains("'exclusive'"), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );
    assert!(msg.contains("'prune'"), "{msg}");
    assert!(
        msg.contains(&held.expires_at().format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        "names the expiry: {msg}"
    );
    assert!(msg.contains("drctl lock break"), "{msg}");
    held.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn release_frees_the_lease_at_once() {
    let repo = memory_repo().await;
    let a = Lease::acquire(&repo, "exclusive", "prune", None, &opts())
        .await
        .unwrap();
    a.release().await.unwrap();
    let b = Lease::acquire(&repo, "exclusive", "prune", None, &opts())
        .await
        .unwrap();
    assert!(!b.is_lost());
    b.check().unwrap();
    b.release().await.unwrap();
    let states = lease::list(&repo).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].state, "released");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_caller_gets_the_lease_when_the_holder_releases() {
    let repo = memory_repo().await;
    let a = Lease::acquire(&repo, "exclusive", "prune", None, &opts())
        .await
        .unwrap();
    let waiter = {
        let repo = repo.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let l = Lease::acquire(
                &repo,
                "exclusive",
                "rotate",
                Some(Duration::from_secs(120)),
                &opts(),
            )
            .await
            .unwrap();
            (l, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_secs(45)).await;
    a.release().await.unwrap();
    let (b, waited) = waiter.await.unwrap();
    assert!(
        waited >= Duration::from_secs(45) && waited < Duration::from_secs(48),
        "{waited:?}"
    );
    assert_eq!(b.holder().purpose, "rotate");
    b.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn waiting_gives_up_with_locked_after_the_timeout() {
    let repo = memory_repo().await;
    let _a = Lease::acquire(&repo, "exclusive", "prune", None, &opts())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let e = Lease::acquire(
        &repo,
        "exclusive",
        "rotate",
        Some(Duration::from_secs(10)),
        &opts(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked);
    assert!(e.to_string().contains("waited 10 s"), "{e}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(12),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn renewal_keeps_a_lease_alive_past_its_first_expiry() {
    let repo = memory_repo().await;
    let a = Lease::acquire(&repo, "exclusive", "prune", None, &opts())
        .await
        .unwrap();
    let first_expiry = a.expires_at();
    tokio::time::sleep(TTL * 10).await;
    assert!(!a.is_lost());
    a.check().unwrap();
    assert!((a.expires_at() - first_expiry).num_seconds() > 250);
    let e = Lease::acquire(&repo, "exclusive", "rotate", None, &opts())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked);
    // Renewal cleans up behind itself: one generation object.
    assert_eq!(
        repo.storage().list("locks/exclusive/").await.unwrap().len(),
        1
    );
    a.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stale_lease_is_taken_over_and_its_holder_learns_it_lost() {
    let store = dr_storage::from_url("memory://").unwrap();
    let repo = repo_on(store.clone()).await;
    // Holder A reaches the store through a link that will fail: its renewals stop working,
    // as if its process hung or lost the network.
    let link = Arc::new(FaultyTarget::new(store.clone(), 1));
    let a_repo = Repository::open(link.clone() as Arc<dyn StorageTarget>)
        .await
        .unwrap();
    let a = Lease::acquire(&a_repo, "exclusive", "prune", None, &opts())
        .await
        .unwrap();
    link.add(Op::PutIfAbsent, "", Trigger::Always, Fault::transient());

    tokio::time::sleep(TTL / 2).await;
    let e = Lease::acquire(&repo, "exclusive", "rotate", None, &opts())
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Locked,
        "still live at half its time to live"
    );

    tokio::time::sleep(TTL).await;
    assert!(a.is_lost());
    let b = Lease::acquire(&repo, "exclusive", "rotate", None, &opts())
        .await
        .expect("a stale lease is taken over");
    assert!(b.holder().generation > a.holder().generation);
    assert_eq!(a.check().unwrap_err().kind(), ErrorKind::Locked);

    // A's release must not free B's lease.
    link.clear();
    a.release().await.unwrap();
    let e = Lease::acquire(&repo, "exclusive", "third", None, &opts())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked);
    b.release().await.unwrap();
}

/// Holds every racer's first create-if-absent until all racers have reached it, so that all
/// of them have seen the same stale lease and try to take it over at once.
#[derive(Debug)]
struct Gate {
    inner: Arc<dyn StorageTarget>,
    barrier: Arc<tokio::sync::Barrier>,
    armed: AtomicBool,
}

#[async_trait]
impl StorageTarget for Gate {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn put_stream(&self, path: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>> {
        self.inner.put_stream(path, opts).await
    }
    async fn put_if_absent(&self, path: &str, bytes: Bytes, opts: PutOptions) -> Result<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.barrier.wait().await;
        }
        self.inner.put_if_absent(path, bytes, opts).await
    }
    async fn get(&self, path: &str, range: Option<std::ops::Range<u64>>) -> Result<ByteStream> {
        self.inner.get(path, range).await
    }
    async fn head(&self, path: &str) -> Result<ObjectMeta> {
        self.inner.head(path).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, path: &str) -> Result<()> {
        self.inner.delete(path).await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.inner.copy(from, to).await
    }
}

#[tokio::test(start_paused = true)]
async fn racers_for_a_stale_lease_exactly_one_wins() {
    for racers in [2usize, 5] {
        for round in 0..10 {
            let store = dr_storage::from_url("memory://").unwrap();
            let repo = repo_on(store.clone()).await;
            // A stale lease: its holder's renewals fail until it expires.
            let link = Arc::new(FaultyTarget::new(store.clone(), 1));
            let dead = Lease::acquire_on(link.clone(), "job-nightly", "job nightly", None, &opts())
                .await
                .unwrap();
            link.add(Op::PutIfAbsent, "", Trigger::Always, Fault::transient());
            tokio::time::sleep(TTL * 2).await;
            assert!(dead.is_lost());

            let barrier = Arc::new(tokio::sync::Barrier::new(racers));
            let tasks: Vec<_> = (0..racers)
                .map(|i| {
                    let gate: Arc<dyn StorageTarget> = Arc::new(Gate {
                        inner: store.clone(),
                        barrier: barrier.clone(),
                        armed: AtomicBool::new(true),
                    });
                    tokio::spawn(async move {
                        Lease::acquire_on(gate, "job-nightly", &format!("racer {i}"), None, &opts())
                            .await
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    Ok(l) => winners.push(l),
                    Err(e) => assert_eq!(e.kind(), ErrorKind::Locked, "round {round}: {e}"),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "{racers} racers, round {round}: exactly one wins"
            );
            // The winner really holds it: nobody else can take it now.
            let e = Lease::acquire(&repo, "job-nightly", "late", None, &opts())
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Locked);
            drop(dead);
            for w in winners {
                w.release().await.unwrap();
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn job_leases_are_independent_of_each_other_and_of_the_exclusive_lease() {
    let repo = memory_repo().await;
    let ex = Lease::acquire(&repo, "exclusive", "prune", None, &opts())
        .await
        .unwrap();
    let nightly = Lease::job(&repo, "nightly", None).await.unwrap();
    let hourly = Lease::job(&repo, "hourly", None).await.unwrap();
    assert_eq!(nightly.name(), "job-nightly");
    assert_eq!(
        Lease::job(&repo, "nightly", None).await.unwrap_err().kind(),
        ErrorKind::Locked,
        "the same job twice"
    );
    assert_eq!(
        Lease::job(&repo, "../evil", None).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let names: Vec<String> = lease::list(&repo)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["exclusive", "job-hourly", "job-nightly"]);
    for l in [ex, nightly, hourly] {
        l.release().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_broken_lease_is_lost_by_its_holder_at_the_next_renewal() {
    let repo = memory_repo().await;
    let a = Lease::acquire(&repo, "exclusive", "prune", None, &opts())
        .await
        .unwrap();
    let displaced = lease::break_lease(&repo, "exclusive")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(displaced.purpose, "prune");
    let b = Lease::acquire(&repo, "exclusive", "rotate", None, &opts())
        .await
        .expect("a broken lease is free");
    tokio::time::sleep(TTL / 2).await;
    assert!(a.is_lost(), "A's renewal found B's generation");
    a.release().await.unwrap();
    b.check().unwrap();
    b.release().await.unwrap();
    assert_eq!(
        lease::break_lease(&repo, "nothing-here")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_lease_is_released() {
    let repo = memory_repo().await;
    {
        let _a = Lease::acquire(&repo, "exclusive", "prune", None, &opts())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let b = Lease::acquire(&repo, "exclusive", "rotate", None, &opts())
        .await
        .expect("dropping released it, long before its expiry");
    b.release().await.unwrap();
}

#[tokio::test]
async fn a_store_without_create_if_absent_is_refused_plainly() {
    let store = dr_storage::from_url("memory://").unwrap();
    repo_on(store.clone()).await;
    let no_cas: Arc<dyn StorageTarget> = Arc::new(FaultyTarget::new(store, 1).inject(
        Op::PutIfAbsent,
        Trigger::Always,
        Fault::permanent(ErrorKind::Unsupported),
    ));
    let repo = Repository::open(no_cas).await.unwrap();
    let e = Lease::exclusive(&repo, "prune", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(
        e.to_string()
            .contains("cannot create an object only if it is absent"),
        "{e}"
    );
}
