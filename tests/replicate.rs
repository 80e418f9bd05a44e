//! Replication to a second storage target (`dr::core::replicate`, `drctl replicate`): real
//! PostgreSQL backups, file and memory targets, an interruption injected with
//! `FaultyTarget`, and a real restore from the replica.

mod common;

use std::sync::Arc;

use common::*;
use dr::core::replicate::{replicate, ReplicateOptions, Selection};
use dr::core::{
    BackupOptions, Codec, ErrorKind, ReadOptions, RepoConfig, RepoDefaults, Repository, StorageExt,
    StorageTarget,
};
use dr::crypto::{AeadDecryptor, AeadEncryptor, Cipher, MasterKey};
use dr::storage::faults::{Fault, FaultyTarget, Op, Trigger};
use dr::storage::retry::{RetryPolicy, RetryingTarget};

fn file_target(dir: &std::path::Path) -> Arc<dyn StorageTarget> {
    std::fs::create_dir_all(dir).unwrap();
    dr::storage::from_url(dir.to_str().unwrap()).unwrap()
}

async fn new_repo(storage: Arc<dyn StorageTarget>) -> Repository {
    let defaults = RepoDefaults {
        compression: Codec::Zstd { level: 1 },
        encryption: dr::crypto::SCHEME.into(),
        cipher: "aes-256-gcm".into(),
        storage_class: None,
    };
    Repository::init(storage, RepoConfig::new(defaults, vec![]).unwrap())
        .await
        .unwrap()
}

/// A file repository with `n` real backups of a scale-1 sample database.
async fn source_with_backups(
    cluster: &dr::db::testing::TestCluster,
    dir: &std::path::Path,
    n: usize,
    key: &MasterKey,
) -> Repository {
    let repo = new_repo(file_target(dir)).await;
    let encryptor = AeadEncryptor::new(Cipher::Aes256Gcm, vec![key.clone()]).unwrap();
    let dumper = dr::db::PgDumper::new(cluster.config("app"));
    for _ in 0..n {
        dr::core::backup(&repo, &dumper, &encryptor, &BackupOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{}", e.report()));
        // Ids carry the start second; keep them distinct.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_file_to_file_then_restore_from_the_replica() {
    let cluster = cluster_with_sample(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let key = MasterKey::generate().unwrap();
    let src = source_with_backups(&cluster, &tmp.path().join("src"), 2, &key).await;
    let dst = file_target(&tmp.path().join("dst"));

    let opts = ReplicateOptions {
        verify: true,
        ..Default::default()
    };
    let report = replicate(&src, dst.clone(), Selection::All, &opts)
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(report.copied.len(), 2);
    assert!(report.created_repository);
    assert!(report.verified);
    let source_backups = src.list_backups().await.unwrap();
    assert_eq!(
        report.bytes_copied,
        source_backups.iter().map(|m| m.stored_bytes).sum::<u64>()
    );

    let replica = Repository::open(dst.clone()).await.unwrap();
    assert_eq!(replica.config().repository_id, src.config().repository_id);
    assert_eq!(replica.list_backups().await.unwrap(), source_backups);

    // Idempotent: a second run copies nothing.
    let again = replicate(&src, dst.clone(), Selection::All, &opts)
        .await
        .unwrap();
    assert!(again.copied.is_empty());
    assert_eq!(again.skipped.len(), 2);
    assert_eq!(again.bytes_copied, 0);
    assert!(!again.created_repository);

    // A real restore from the replica, row counts checked against the manifest.
    let latest = replica
        .latest(&dr::core::SeriesSelector::any())
        .await
        .unwrap();
    let restorer = dr::db::PgRestorer::new(cluster.config("from_replica")).create(true);
    let restored = dr::core::restore(
        &replica,
        &latest,
        &AeadDecryptor::new(vec![key]),
        &restorer,
        &ReadOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(restored.tables_checked, 3);
    assert_same_sample(&cluster, "app", "from_replica").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_replication_leaves_nothing_listed_and_a_rerun_completes() {
    let cluster = cluster_with_sample(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let key = MasterKey::generate().unwrap();
    let src = source_with_backups(&cluster, &tmp.path().join("src"), 1, &key).await;
    let id = src.list_backups().await.unwrap()[0].id.clone();

    // The destination is memory; the link to it is cut off in the middle of the payload.
    let memory = dr::storage::from_url("memory://").unwrap();
    let link = Arc::new(FaultyTarget::new(memory.clone(), 3).inject(
        Op::Put,
        Trigger::Always,
        Fault::CutOff {
            after_bytes: 200_000,
        },
    ));
    let e = replicate(
        &src,
        link.clone(),
        Selection::Ids(vec![id.clone()]),
        &ReplicateOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(e.is_temporary(), "{e:?}");
    assert!(e.to_string().contains(&id), "names the backup: {e}");
    assert!(link.injected() > 0);
    let replica = Repository::open(memory.clone()).await.unwrap();
    assert!(
        replica.list_backups().await.unwrap().is_empty(),
        "an interrupted backup is not listed"
    );
    assert!(!memory
        .exists(&Repository::manifest_path(&id))
        .await
        .unwrap());

    // Interrupted again after the data objects: at the manifest's write.
    link.clear();
    link.add(
        Op::PutIfAbsent,
        "backups/",
        Trigger::Always,
        Fault::transient(),
    );
    replicate(
        &src,
        link.clone(),
        Selection::All,
        &ReplicateOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(replica.list_backups().await.unwrap().is_empty());
    assert_eq!(replica.list_incomplete().await.unwrap(), vec![id.clone()]);

    // The link heals; the rerun redoes the backup and commits it.
    link.clear();
    let opts = ReplicateOptions {
        storage_class: Some("GLACIER".into()),
        verify: true,
        ..Default::default()
    };
    let report = replicate(&src, link.clone(), Selection::All, &opts)
        .await
        .unwrap();
    assert_eq!(report.copied, vec![id.clone()]);
    let listed = replica.list_backups().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].objects[0].storage_class.as_deref(),
        Some("GLACIER"),
        "the destination's manifest records its storage class"
    );
    let n = dr::core::verify(
        &replica,
        &listed[0],
        &AeadDecryptor::new(vec![key]),
        &ReadOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(n, listed[0].raw_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_refuses_a_destination_holding_another_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let src = new_repo(file_target(&tmp.path().join("a"))).await;
    let other = file_target(&tmp.path().join("b"));
    new_repo(other.clone()).await;
    let e = replicate(&src, other, Selection::All, &ReplicateOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert!(e.to_string().contains("another dr repository"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_waits_for_or_refuses_a_destination_locked_by_another_process() {
    let tmp = tempfile::tempdir().unwrap();
    let src = new_repo(file_target(&tmp.path().join("src"))).await;
    let dst = file_target(&tmp.path().join("dst"));
    replicate(
        &src,
        dst.clone(),
        Selection::All,
        &ReplicateOptions::default(),
    )
    .await
    .unwrap();
    let replica = Repository::open(dst.clone()).await.unwrap();
    // Another process prunes the destination.
    let held = dr::core::lease::Lease::exclusive(&replica, "prune", None)
        .await
        .unwrap();

    let e = replicate(
        &src,
        dst.clone(),
        Selection::All,
        &ReplicateOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked, "{e:?}");
    assert!(
        e.to_string().contains("prune"),
        "names the holder's purpose: {e}"
    );

    // With a wait, replication goes ahead once the holder is done.
    let waiting = tokio::spawn({
        let dst = dst.clone();
        async move {
            let opts = ReplicateOptions {
                lease_wait: Some(std::time::Duration::from_secs(30)),
                ..Default::default()
            };
            replicate(&src, dst, Selection::All, &opts).await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "waits while the lease is held");
    held.release().await.unwrap();
    waiting
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(
        dr::core::lease::list(&replica)
            .await
            .unwrap()
            .iter()
            .all(|l| l.state == "released"),
        "replication released the destination's lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_from_a_replica_survives_transient_read_faults() {
    let cluster = cluster_with_sample(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let key = MasterKey::generate().unwrap();
    let src = source_with_backups(&cluster, &tmp.path().join("src"), 1, &key).await;
    let memory = dr::storage::from_url("memory://").unwrap();
    replicate(
        &src,
        memory.clone(),
        Selection::All,
        &ReplicateOptions::default(),
    )
    .await
    .unwrap();

    // Every read of the replica is cut off after 256 kB, and one in four requests fails.
    let flaky = Arc::new(
        FaultyTarget::new(memory, 11)
            .inject(Op::Get, Trigger::Fraction(0.25), Fault::transient())
            .inject(
                Op::Get,
                Trigger::Always,
                Fault::CutOff {
                    after_bytes: 256_000,
                },
            )
            .inject(Op::Head, Trigger::Fraction(0.25), Fault::transient()),
    );
    let policy = RetryPolicy {
        max_attempts: 8,
        base_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(10),
        max_elapsed: std::time::Duration::from_secs(30),
    };
    let replica = Repository::open(Arc::new(RetryingTarget::new(flaky.clone(), policy)))
        .await
        .unwrap();
    let m = replica
        .latest(&dr::core::SeriesSelector::any())
        .await
        .unwrap();
    let restored = dr::core::restore(
        &replica,
        &m,
        &AeadDecryptor::new(vec![key]),
        &dr::db::PgRestorer::new(cluster.config("flaky_copy")).create(true),
        &ReadOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(restored.tables_checked, 3);
    assert!(
        flaky.injected() > 3,
        "faults were injected: {}",
        flaky.injected()
    );
    assert_eq!(
        count(&cluster, "app", "QrCodeScan").await,
        count(&cluster, "flaky_copy", "QrCodeScan").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drctl_replicate_copies_then_skips_and_lock_list_shows_leases() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    let id = repo.backup(&["--db", &cluster.url("app")]);
    let dst = repo.path().join("replica");
    let dst = dst.to_str().unwrap();

    let first = repo.json(&["replicate", "--to", dst, "--all", "--verify"]);
    assert_eq!(first["copied"], serde_json::json!([id]));
    assert_eq!(first["verified"], true);
    let second = repo.json(&["replicate", "--to", dst, "latest"]);
    assert_eq!(second["copied"], serde_json::json!([]));
    assert_eq!(second["skipped"], serde_json::json!([id]));

    let out = repo.run(&["replicate", "--to", dst]);
    let stderr = fails(&out, 2);
    assert!(stderr.contains("--all"), "{stderr}");

    // The replica restores with the same key.
    let key = repo.key.to_str().unwrap();
    let out = drctl(
        &[
            "--json",
            "restore",
            "latest",
            "--repo",
            dst,
            "--db",
            &cluster.url("copy"),
            "--create",
        ],
        &[("DR_KEY_FILE", key)],
    );
    ok(&out);
    assert_eq!(
        count(&cluster, "app", "QrCodeScan").await,
        count(&cluster, "copy", "QrCodeScan").await
    );

    // Leases, for humans: a held one is listed with its holder, and can be broken.
    let storage = dr::storage::from_url(&repo.url).unwrap();
    let lib_repo = Repository::open(storage).await.unwrap();
    let lease = dr::core::lease::Lease::job(&lib_repo, "nightly", None)
        .await
        .unwrap();
    let listed = repo.json(&["lock", "list"]);
    assert_eq!(listed[0]["name"], "job-nightly");
    assert_eq!(listed[0]["state"], "held");
    assert_eq!(listed[0]["info"]["purpose"], "job nightly");
    let broken = repo.json(&["lock", "break", "job-nightly"]);
    assert_eq!(broken["broken"], true);
    let listed = repo.json(&["lock", "list"]);
    assert_eq!(listed[0]["state"], "released");
    let out = repo.run(&["lock", "break", "job-none"]);
    fails(&out, 3);
    lease.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_file_to_s3_with_a_storage_class_then_restore_from_s3() {
    use dr::storage::testing::{unique_name, MotoServer};
    let cluster = cluster_with_sample(1).await;
    let s3 = MotoServer::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    let bucket = unique_name("dr-replica");
    s3.create_bucket(&bucket).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let key = MasterKey::generate().unwrap();
    let src = source_with_backups(&cluster, &tmp.path().join("src"), 1, &key).await;
    let id = src.list_backups().await.unwrap()[0].id.clone();
    let s3_target: Arc<dyn StorageTarget> =
        Arc::new(dr::storage::open(&format!("s3://{bucket}/replica"), &s3.options()).unwrap());

    // First attempt: the link to S3 is cut off mid-upload. The multipart upload is aborted:
    // nothing listed, and no orphaned parts left to bill.
    let link = Arc::new(FaultyTarget::new(s3_target.clone(), 5).inject(
        Op::Put,
        Trigger::Always,
        Fault::CutOff {
            after_bytes: 1 << 20,
        },
    ));
    let opts = ReplicateOptions {
        storage_class: Some("STANDARD_IA".into()),
        verify: true,
        ..Default::default()
    };
    assert!(src.list_backups().await.unwrap()[0].stored_bytes > 1 << 20);
    replicate(&src, link.clone(), Selection::All, &opts)
        .await
        .unwrap_err();
    let replica = Repository::open(s3_target.clone()).await.unwrap();
    assert!(replica.list_backups().await.unwrap().is_empty());
    assert_eq!(
        s3.pending_uploads(&bucket).await.unwrap(),
        Vec::<String>::new(),
        "the aborted multipart upload left no parts"
    );

    link.clear();
    let report = replicate(&src, link.clone(), Selection::All, &opts)
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(report.copied, vec![id.clone()]);
    let payload_key = format!("replica/{}", Repository::payload_path(&id, 0));
    assert_eq!(
        s3.storage_class(&bucket, &payload_key).await.unwrap(),
        "STANDARD_IA",
        "data objects take the destination's storage class"
    );
    let manifest_key = format!("replica/{}", Repository::manifest_path(&id));
    assert_eq!(
        s3.storage_class(&bucket, &manifest_key).await.unwrap(),
        "STANDARD",
        "manifests stay readable"
    );

    let replica = Repository::open(s3_target.clone()).await.unwrap();
    let m = replica
        .latest(&dr::core::SeriesSelector::any())
        .await
        .unwrap();
    let restored = dr::core::restore(
        &replica,
        &m,
        &AeadDecryptor::new(vec![key]),
        &dr::db::PgRestorer::new(cluster.config("from_s3")).create(true),
        &ReadOptions::default(),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(restored.tables_checked, 3);
    assert_same_sample(&cluster, "app", "from_s3").await;
}
