//! Keys that survive a breach: public-key recipients, several keys per repository, rotation
//! and revocation by re-wrapping manifests (never data), interruption safety, age interop.
//!
//! Library tests use real file repositories and a synthetic source (no database needed);
//! the drctl tests use the real binary, real throwaway PostgreSQL clusters, and the stock
//! `age` and `zstd` programs.

mod common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use common::*;
use dr::core::{
    BackupOptions, BufferDumper, ByteStream, Decryptor, Encryptor, Error, ErrorKind, Manifest,
    ObjectEntry, ObjectMeta, ObjectWriter, PutOptions, ReadOptions, RepoConfig, RepoDefaults,
    RepoKey, Repository, Result, StorageExt, StorageTarget,
};
use dr::crypto::{Identity, KdfParams, MasterKey, Passphrase, Recipient, X25519Identity};

// ---------------------------------------------------------------------------------------
// Helpers

fn payload(n: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    Bytes::from(
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect::<Vec<u8>>(),
    )
}

fn x25519() -> X25519Identity {
    X25519Identity::generate().unwrap()
}

fn defaults() -> RepoDefaults {
    RepoDefaults {
        compression: "zstd:1".parse().unwrap(),
        encryption: dr::crypto::SCHEME.into(),
        cipher: "aes-256-gcm".into(),
        storage_class: None,
    }
}

/// A new file repository in `dir` whose keys are `keys`.
async fn file_repo(dir: &std::path::Path, keys: Vec<RepoKey>) -> Repository {
    let url = dir.join("repo");
    let url = url.to_str().unwrap();
    dr::storage::create_local_dir(url).unwrap();
    Repository::init(
        dr::storage::from_url(url).unwrap(),
        RepoConfig::new(defaults(), keys).unwrap(),
    )
    .await
    .unwrap()
}

fn entry(identity: &Identity) -> RepoKey {
    dr::keys::repo_key(&identity.to_recipient())
}

/// Back up `data` with the repository's public recipients only (no secret held).
async fn public_backup(repo: &Repository, data: Bytes) -> Manifest {
    let enc = dr::keys::public_encryptor(repo).unwrap();
    dr::core::backup(
        repo,
        &BufferDumper::new(data),
        &enc,
        &BackupOptions::default(),
    )
    .await
    .unwrap()
}

/// The whole payload of `m`, read with `key`.
async fn read_with(repo: &Repository, m: &Manifest, key: &Identity) -> Result<Vec<u8>> {
    use futures::StreamExt;
    let dec = dr::keys::decryptor(key.clone());
    let mut s = dr::core::open_payload(repo, m, &dec, &ReadOptions::default()).await?;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

/// Every stored file of the repository except manifests and the config: path → bytes.
fn data_files(root: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                if rel.starts_with("backups/") && !rel.ends_with("manifest.json") {
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&root.join("backups"), root, &mut out);
    out
}

// ---------------------------------------------------------------------------------------
// Recipients

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_only_public_recipients_writes_backups_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let ops: Identity = x25519().into();
    let break_glass: Identity = x25519().into();
    let repo = file_repo(dir.path(), vec![entry(&ops), entry(&break_glass)]).await;
    let data = payload(300_000, 1);
    let m = public_backup(&repo, data.clone()).await;
    let mut ids = m.encryption.key_ids();
    ids.sort();
    let mut want = vec![ops.key_id(), break_glass.key_id()];
    want.sort();
    assert_eq!(ids, want, "wrapped for every recipient");
    for w in &m.encryption.wrapped_keys {
        assert_eq!(w.method, dr::crypto::X25519_WRAP_METHOD);
    }
    // Either secret opens it.
    for key in [&ops, &break_glass] {
        assert_eq!(read_with(&repo, &m, key).await.unwrap(), data);
    }
    // A stranger's identity does not, and the error names the keys that would.
    let stranger: Identity = x25519().into();
    let e = read_with(&repo, &m, &stranger).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey);
    assert!(e.to_string().contains(&ops.key_id()), "{e}");
    assert!(e.to_string().contains(&break_glass.key_id()), "{e}");
    // A public recipient is not an identity: there is nothing to decrypt with.
    let e = Identity::from_text(&ops.to_recipient().public_text().unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symmetric_keys_passphrases_and_recipients_share_a_repository() {
    let dir = tempfile::tempdir().unwrap();
    let file_key = MasterKey::generate().unwrap();
    let kdf = KdfParams {
        iterations: 1000,
        ..KdfParams::generate().unwrap()
    };
    let pass_key =
        MasterKey::from_passphrase(&Passphrase::new("correct horse".into()), &kdf).unwrap();
    let pass_entry = RepoKey {
        id: pass_key.key_id(),
        kind: "passphrase".into(),
        added_at: Utc::now(),
        kdf: Some(serde_json::to_value(&kdf).unwrap()),
        recipient: None,
    };
    let offline: Identity = x25519().into();
    let repo = file_repo(
        dir.path(),
        vec![
            entry(&Identity::Symmetric(file_key.clone())),
            pass_entry,
            entry(&offline),
        ],
    )
    .await;
    // A host holding the passphrase: it wraps for its own key and the public recipient.
    let unlocked = dr::keys::KeySource::Passphrase(Passphrase::new("correct horse".into()))
        .unlock(repo.config())
        .unwrap();
    let enc = dr::keys::encryptor(&repo, unlocked.clone()).unwrap();
    let data = payload(100_000, 2);
    let m = dr::core::backup(
        &repo,
        &BufferDumper::new(data.clone()),
        &enc,
        &BackupOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(m.encryption.wrapped_keys.len(), 2);
    assert_eq!(read_with(&repo, &m, &unlocked).await.unwrap(), data);
    assert_eq!(read_with(&repo, &m, &offline).await.unwrap(), data);
    // The key file was not held by that host, so it was not wrapped for.
    let e = read_with(&repo, &m, &Identity::Symmetric(file_key))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey);
    // The KDF parameters live in dr-repo.json.
    let raw = repo.storage().get_bytes("dr-repo.json").await.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let kinds: Vec<&str> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["key-file", "passphrase", "x25519"]);
    assert_eq!(json["keys"][1]["kdf"]["iterations"], 1000);
    assert!(json["keys"][2]["recipient"]
        .as_str()
        .unwrap()
        .starts_with("dr-x25519-v1-"));
}

#[test]
fn identity_files_of_every_kind_read_back_and_old_key_files_still_work() {
    let dir = tempfile::tempdir().unwrap();
    for (name, identity) in [
        ("x25519", Identity::from(x25519())),
        ("symmetric", Identity::from(MasterKey::generate().unwrap())),
        ("age", Identity::from(dr::crypto::AgeIdentity::generate())),
    ] {
        let path = dir.path().join(name);
        dr::crypto::write_identity_file(&path, &identity).unwrap();
        let back = dr::crypto::read_identity_file(&path).unwrap();
        assert_eq!(back.key_id(), identity.key_id(), "{name}");
        assert_eq!(back.kind(), identity.kind(), "{name}");
        let debug = format!("{back:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        let secret_line = text.lines().find(|l| !l.starts_with('#')).unwrap();
        assert!(
            !debug.contains(&secret_line[secret_line.len() - 20..]),
            "{debug}"
        );
        // Refuses to overwrite.
        let e = dr::crypto::write_identity_file(&path, &identity).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    }
    // A key file from before identities existed.
    let old = MasterKey::generate().unwrap();
    let path = dir.path().join("old.key");
    dr::crypto::write_key_file(&path, &old).unwrap();
    let back = dr::crypto::read_identity_file(&path).unwrap();
    assert_eq!(back.kind(), "key-file");
    assert_eq!(back.key_id(), old.key_id());
}

// ---------------------------------------------------------------------------------------
// Rotation and revocation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_rewraps_manifests_and_leaves_data_objects_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let old: Identity = x25519().into();
    let keep: Identity = x25519().into();
    let mut repo = file_repo(dir.path(), vec![entry(&old), entry(&keep)]).await;
    let mut backups = Vec::new();
    for i in 0..3 {
        let data = payload(200_000 + i * 1000, 10 + i as u64);
        backups.push((public_backup(&repo, data.clone()).await, data));
    }
    let root = dir.path().join("repo");
    let before = data_files(&root);
    assert_eq!(before.len(), 3);

    let new: Identity = x25519().into();
    let report = dr::keys::rotate_key(&mut repo, &old, new.to_recipient())
        .await
        .unwrap();
    assert_eq!(report.backups, 3);
    assert_eq!(report.wraps_added, 3);
    assert_eq!(report.wraps_removed, 3);
    assert_eq!(report.removed, vec![old.key_id()]);

    // Data objects: same bytes (and so the same checksums as the manifests record).
    let after = data_files(&root);
    assert_eq!(before, after, "no data object was rewritten");
    let repo = Repository::open(repo.storage().clone()).await.unwrap();
    for (m, data) in &backups {
        let now = repo.manifest(&m.id).await.unwrap();
        assert_eq!(now.objects, m.objects, "same objects, sizes and SHA-256");
        let mut ids = now.encryption.key_ids();
        ids.sort();
        let mut want = vec![keep.key_id(), new.key_id()];
        want.sort();
        assert_eq!(ids, want);
        // Reading checks every object's size and SHA-256 against the manifest.
        assert_eq!(&read_with(&repo, &now, &new).await.unwrap(), data);
        assert_eq!(&read_with(&repo, &now, &keep).await.unwrap(), data);
        assert_eq!(
            read_with(&repo, &now, &old).await.unwrap_err().kind(),
            ErrorKind::WrongKey
        );
    }
    // The old key is no longer a key of the repository.
    let config_ids: Vec<&str> = repo.config().keys.iter().map(|k| k.id.as_str()).collect();
    assert!(!config_ids.contains(&old.key_id().as_str()));
    assert!(config_ids.contains(&new.key_id().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_opens_no_backup_through_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let stolen = MasterKey::generate().unwrap();
    let stolen_id: Identity = stolen.clone().into();
    let offline: Identity = x25519().into();
    let mut repo = file_repo(dir.path(), vec![entry(&stolen_id), entry(&offline)]).await;
    let enc = dr::keys::encryptor(&repo, stolen.clone()).unwrap();
    let mut ms = Vec::new();
    for i in 0..2 {
        ms.push(
            dr::core::backup(
                &repo,
                &BufferDumper::new(payload(50_000, i)),
                &enc,
                &BackupOptions::default(),
            )
            .await
            .unwrap(),
        );
    }
    let report = dr::keys::revoke_key(&mut repo, None, &stolen.key_id())
        .await
        .unwrap();
    assert_eq!(report.wraps_removed, 2);
    // Through the repository: the key is refused up front…
    let path = dir.path().join("stolen.key");
    dr::crypto::write_key_file(&path, &stolen).unwrap();
    let e = dr::keys::KeySource::File(path)
        .unlock(repo.config())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey);
    // …and even bypassing that check, no manifest holds a data key it can unwrap.
    for m in repo.list_backups().await.unwrap() {
        assert!(!m.encryption.key_ids().contains(&stolen.key_id().as_str()));
        let e = read_with(&repo, &m, &stolen_id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WrongKey);
        read_with(&repo, &m, &offline).await.unwrap();
    }
    // Revoking the last key is refused.
    let e = dr::keys::revoke_key(&mut repo, None, &offline.key_id())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // Revoking a key that would leave a backup with no current key is refused, and changes
    // nothing: here a second symmetric key was the only wrap of a backup.
    let lone = MasterKey::generate().unwrap();
    let lone_id: Identity = lone.clone().into();
    let mut repo = Repository::open(repo.storage().clone()).await.unwrap();
    let mut cfg = repo.config().clone();
    cfg.keys.push(entry(&lone_id));
    repo.save_config(cfg).await.unwrap();
    let enc =
        dr::crypto::AeadEncryptor::new(dr::crypto::Cipher::Aes256Gcm, vec![lone.clone()]).unwrap();
    let orphan = dr::core::backup(
        &repo,
        &BufferDumper::new(payload(1000, 9)),
        &enc,
        &BackupOptions::default(),
    )
    .await
    .unwrap();
    // Without a key to unwrap with it cannot add the remaining public recipient: refused.
    let e = dr::keys::revoke_key(&mut repo, None, &lone.key_id())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e}");
    assert!(e.to_string().contains(&orphan.id), "{e}");
    assert!(repo.config().keys.iter().any(|k| k.id == lone.key_id()));
    // With the key, the backup is first wrapped for the remaining recipient, then revoked.
    dr::keys::revoke_key(&mut repo, Some(&lone_id), &lone.key_id())
        .await
        .unwrap();
    let now = repo.manifest(&orphan.id).await.unwrap();
    assert_eq!(now.encryption.key_ids(), vec![offline.key_id().as_str()]);
    read_with(&repo, &now, &offline).await.unwrap();
}

/// A storage decorator that fails the `n`th write (put_stream or put_if_absent), counting
/// from 1, and lets every other call through.
#[derive(Debug)]
struct FailNthPut {
    inner: Arc<dyn StorageTarget>,
    n: usize,
    puts: AtomicUsize,
}

impl FailNthPut {
    fn check(&self) -> Result<()> {
        let k = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        if k == self.n {
            Err(Error::new(
                ErrorKind::Storage,
                format!("injected failure of put #{k}"),
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl StorageTarget for FailNthPut {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn put_stream(&self, path: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>> {
        self.check()?;
        self.inner.put_stream(path, opts).await
    }
    async fn put_if_absent(&self, path: &str, bytes: Bytes, opts: PutOptions) -> Result<()> {
        self.check()?;
        self.inner.put_if_absent(path, bytes, opts).await
    }
    async fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
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

/// Every backup opens with a key that is listed in the repository now and that we hold.
async fn assert_every_backup_opens_with_a_current_key(
    storage: &Arc<dyn StorageTarget>,
    held: &[&Identity],
    when: &str,
) {
    let repo = Repository::open(storage.clone()).await.unwrap();
    let current: Vec<&str> = repo.config().keys.iter().map(|k| k.id.as_str()).collect();
    for m in repo.list_backups().await.unwrap() {
        let openers: Vec<&&Identity> = held
            .iter()
            .filter(|k| {
                current.contains(&k.key_id().as_str())
                    && m.encryption.key_ids().contains(&k.key_id().as_str())
            })
            .collect();
        assert!(
            !openers.is_empty(),
            "{when}: backup {} has wraps {:?}, current keys {current:?}",
            m.id,
            m.encryption.key_ids()
        );
        // Unwrapping works (the data key is really there), without reading the data.
        let dec = dr::keys::decryptor((*openers[0]).clone());
        dec.decrypt_stream(&m.encryption)
            .unwrap_or_else(|e| panic!("{when}: {}: {e}", m.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_interrupted_at_every_write_leaves_every_backup_openable_and_reruns() {
    let mut n = 1;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let old: Identity = x25519().into();
        let new: Identity = x25519().into();
        let repo = file_repo(dir.path(), vec![entry(&old)]).await;
        for i in 0..4 {
            public_backup(&repo, payload(20_000, i)).await;
        }
        let base = repo.storage().clone();
        let faulty: Arc<dyn StorageTarget> = Arc::new(FailNthPut {
            inner: base.clone(),
            n,
            puts: AtomicUsize::new(0),
        });
        let mut through_faulty = Repository::open(faulty).await.unwrap();
        let first = dr::keys::rotate_key(&mut through_faulty, &old, new.to_recipient()).await;
        let when = format!("after failing write #{n}");
        assert_every_backup_opens_with_a_current_key(&base, &[&old, &new], &when).await;
        if first.is_ok() {
            // n exceeded the number of writes a rotation makes: every point was covered.
            assert!(n > 8, "a rotation of 4 backups makes more than 8 writes");
            eprintln!("interrupted a rotation at each of its {} writes", n - 1);
            break;
        }
        // Re-running the same rotation (with the old key, as the operator would) finishes.
        // If the failed write was the lease's release marker, the lease is still held, as it
        // would be after a crash: the operator breaks it (`drctl lock break exclusive`).
        let mut again = Repository::open(base.clone()).await.unwrap();
        let rerun = dr::keys::rotate_key(&mut again, &old, new.to_recipient()).await;
        if let Err(e) = rerun {
            assert_eq!(e.kind(), ErrorKind::Locked, "{when}: re-run failed: {e}");
            dr::core::lease::break_lease(&again, dr::core::lease::EXCLUSIVE)
                .await
                .unwrap();
            dr::keys::rotate_key(&mut again, &old, new.to_recipient())
                .await
                .unwrap_or_else(|e| panic!("{when}: re-run failed: {e}"));
        }
        let repo = Repository::open(base.clone()).await.unwrap();
        let ids: Vec<&str> = repo.config().keys.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(ids, vec![new.key_id().as_str()], "{when}");
        for m in repo.list_backups().await.unwrap() {
            assert_eq!(
                m.encryption.key_ids(),
                vec![new.key_id().as_str()],
                "{when}"
            );
        }
        n += 1;
    }
}

/// Rotate the key of a thousand synthetic backups (real wrapped data keys, objects that are
/// never read) in `repo`; returns the report and the seconds it took.
async fn rotate_a_thousand(mut repo: Repository, old: &Identity) -> (dr::keys::RewrapReport, f64) {
    let enc = dr::keys::public_encryptor(&repo).unwrap();
    let template = public_backup(&repo, payload(1000, 1)).await;
    for i in 0..999 {
        let (info, _) = enc.encrypt_stream().unwrap();
        let id = format!("20261125T{i:06}Z-x-{i:04}");
        let m = Manifest {
            id: id.clone(),
            encryption: info,
            objects: vec![ObjectEntry {
                path: Repository::payload_path(&id, 0),
                ..template.objects[0].clone()
            }],
            ..template.clone()
        };
        repo.storage()
            .put_bytes(
                &Repository::manifest_path(&id),
                Bytes::from(m.to_json()),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let new: Identity = x25519().into();
    let started = Instant::now();
    let report = dr::keys::rotate_key(&mut repo, old, new.to_recipient())
        .await
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.backups, 1000);
    assert_eq!(report.wraps_added, 1000);
    assert_eq!(report.wraps_removed, 1000);
    let m = repo.manifest("20261125T000500Z-x-0500").await.unwrap();
    assert_eq!(m.encryption.key_ids(), vec![new.key_id().as_str()]);
    (report, secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_change_on_a_thousand_backups_takes_seconds() {
    // Figures, not assertions: printed with --nocapture.
    let old: Identity = x25519().into();
    let memory = Repository::init(
        dr::storage::from_url("memory://").unwrap(),
        RepoConfig::new(defaults(), vec![entry(&old)]).unwrap(),
    )
    .await
    .unwrap();
    let (_, secs) = rotate_a_thousand(memory, &old).await;
    eprintln!("rotated the key of 1000 backups on memory:// in {secs:.2} s");
    let dir = tempfile::tempdir().unwrap();
    let file = file_repo(dir.path(), vec![entry(&old)]).await;
    let (_, secs) = rotate_a_thousand(file, &old).await;
    eprintln!("rotated the key of 1000 backups on file:// in {secs:.2} s");
}

// ---------------------------------------------------------------------------------------
// drctl end to end

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A program the test needs, or a failure that says how to install it.
fn require(program: &str, install: &str) -> std::path::PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = std::path::Path::new(dir).join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!("this test needs `{program}`, which is not installed: {install}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drctl_public_recipients_back_up_and_key_commands_rotate_and_revoke() {
    let cluster = cluster_with_sample(1).await;
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let (ops, glass) = (p("ops.key"), p("glass.key"));
    let out = drctl(&["keygen", "--output", &ops], &[]);
    ok(&out);
    let ops_pub = stdout(&out);
    assert!(ops_pub.starts_with("dr-x25519-v1-"), "{ops_pub}");
    let glass_pub = stdout(&drctl(&["keygen", "--output", &glass], &[]));
    let repo = p("repo");
    ok(&drctl(
        &[
            "init",
            "--repo",
            &repo,
            "--recipient",
            &ops_pub,
            "--recipient",
            &glass_pub,
        ],
        &[],
    ));

    // The backup host holds no secret.
    let out = drctl(
        &[
            "--json",
            "backup",
            "--repo",
            &repo,
            "--db",
            &cluster.url("app"),
        ],
        &[],
    );
    ok(&out);
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for args in [
        vec!["verify", id.as_str()],
        vec!["cat", id.as_str()],
        vec!["restore", id.as_str(), "--db", "postgres://u@127.0.0.1:1/x"],
    ] {
        let mut all = args.clone();
        all.extend(["--repo", repo.as_str()]);
        let err = fails(&drctl(&all, &[]), 4);
        assert!(err.contains("no key given"), "{err}");
        for file in [&ops, &glass] {
            let id = dr::crypto::read_identity_file(std::path::Path::new(file))
                .unwrap()
                .key_id();
            assert!(err.contains(&id), "names key {id}: {err}");
        }
    }
    // Either identity restores.
    for (key, db) in [(&ops, "copy1"), (&glass, "copy2")] {
        let out = drctl(
            &[
                "restore",
                &id,
                "--repo",
                &repo,
                "--db",
                &cluster.url(db),
                "--create",
            ],
            &[("DR_KEY_FILE", key)],
        );
        ok(&out);
    }

    // key list
    let out = drctl(&["--json", "key", "list", "--repo", &repo], &[]);
    ok(&out);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["keys"].as_array().unwrap().len(), 2);
    assert_eq!(list["keys"][0]["backups"], 1);

    // key rotate: the ops key is replaced by a new one.
    let new = p("new.key");
    let new_pub = stdout(&drctl(&["keygen", "--output", &new], &[]));
    let payload_path = std::path::Path::new(&repo)
        .join("backups")
        .join(&id)
        .join("payload-0000");
    let before = std::fs::read(&payload_path).unwrap();
    let out = drctl(
        &[
            "--json",
            "key",
            "rotate",
            "--repo",
            &repo,
            "--new-recipient",
            &new_pub,
        ],
        &[("DR_KEY_FILE", &ops)],
    );
    ok(&out);
    assert_eq!(std::fs::read(&payload_path).unwrap(), before);
    let err = fails(
        &drctl(&["verify", &id, "--repo", &repo], &[("DR_KEY_FILE", &ops)]),
        4,
    );
    assert!(err.contains("not a key of this repository"), "{err}");
    ok(&drctl(
        &["verify", &id, "--repo", &repo],
        &[("DR_KEY_FILE", &new)],
    ));

    // key add + revoke: add a symmetric-free third recipient, revoke the break-glass key.
    let third = p("third.key");
    let third_pub = stdout(&drctl(&["keygen", "--output", &third], &[]));
    ok(&drctl(
        &["key", "add", "--repo", &repo, "--recipient", &third_pub],
        &[("DR_KEY_FILE", &new)],
    ));
    let glass_id = dr::crypto::read_identity_file(std::path::Path::new(&glass))
        .unwrap()
        .key_id();
    ok(&drctl(&["key", "revoke", "--repo", &repo, &glass_id], &[]));
    fails(
        &drctl(&["cat", &id, "--repo", &repo], &[("DR_KEY_FILE", &glass)]),
        4,
    );
    ok(&drctl(
        &["verify", &id, "--repo", &repo],
        &[("DR_KEY_FILE", &third)],
    ));
    let out = drctl(&["--json", "key", "list", "--repo", &repo], &[]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&glass_id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_format_objects_decrypt_with_the_stock_age_cli() {
    let age = require("age", "apt-get install -y age");
    let zstd = require("zstd", "apt-get install -y zstd");
    let cluster = cluster_with_sample(1).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("age.key");
    let key_s = key.to_str().unwrap();
    let out = drctl(&["keygen", "--age", "--output", key_s], &[]);
    ok(&out);
    let recipient = stdout(&out);
    assert!(recipient.starts_with("age1"), "{recipient}");
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    ok(&drctl(
        &[
            "init",
            "--repo",
            repo_s,
            "--format",
            "age",
            "--recipient",
            &recipient,
        ],
        &[],
    ));
    let out = drctl(
        &[
            "--json",
            "backup",
            "--repo",
            repo_s,
            "--db",
            &cluster.url("app"),
        ],
        &[],
    );
    ok(&out);
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let object = repo.join("backups").join(&id).join("payload-0000");
    let head = std::fs::read(&object).unwrap();
    assert!(head.starts_with(b"age-encryption.org/v1\n"));

    // age -d -i key.txt OBJECT | zstd -d | pg_restore --list
    let dump = dir.path().join("payload.dump");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' -d -i '{}' '{}' | '{}' -d -q > '{}'",
            age.display(),
            key_s,
            object.display(),
            zstd.display(),
            dump.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let listing = std::process::Command::new(cluster.bin_dir().join("pg_restore"))
        .arg("--list")
        .arg(&dump)
        .output()
        .unwrap();
    assert!(listing.status.success());
    assert!(String::from_utf8_lossy(&listing.stdout).contains("QrCodeScan"));

    // drctl reads it too, and the bytes are exactly what the age CLI produced.
    let out = drctl(&["cat", &id, "--repo", repo_s], &[("DR_KEY_FILE", key_s)]);
    ok(&out);
    assert_eq!(out.stdout, std::fs::read(&dump).unwrap());
    ok(&drctl(
        &["verify", &id, "--repo", repo_s],
        &[("DR_KEY_FILE", key_s)],
    ));
    // Without the identity: a clear wrong-key error.
    fails(&drctl(&["cat", &id, "--repo", repo_s], &[]), 4);
    // Key changes are refused for age repositories (FORMAT.md says why).
    let other = dir.path().join("other.key");
    let other_pub = stdout(&drctl(
        &["keygen", "--age", "--output", other.to_str().unwrap()],
        &[],
    ));
    let err = fails(
        &drctl(
            &["key", "add", "--repo", repo_s, "--recipient", &other_pub],
            &[("DR_KEY_FILE", key_s)],
        ),
        1,
    );
    assert!(err.contains("age"), "{err}");
    // A key from age-keygen works as well as one from drctl.
    let keygen = require("age-keygen", "apt-get install -y age");
    let stock = dir.path().join("stock.key");
    assert!(std::process::Command::new(keygen)
        .arg("-o")
        .arg(&stock)
        .output()
        .unwrap()
        .status
        .success());
    let stock_identity = dr::crypto::read_identity_file(&stock).unwrap();
    assert_eq!(stock_identity.kind(), "age");
}

#[test]
fn keygen_prints_the_public_recipient_and_writes_a_0600_identity() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id");
    let out = drctl(&["keygen", "--output", path.to_str().unwrap()], &[]);
    ok(&out);
    let recipient = stdout(&out);
    let identity = dr::crypto::read_identity_file(&path).unwrap();
    assert_eq!(identity.kind(), "x25519");
    assert_eq!(
        Recipient::parse(&recipient).unwrap().key_id(),
        identity.key_id()
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&recipient), "the file names its recipient");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // --symmetric keeps the old kind of key file.
    let sym = dir.path().join("sym");
    ok(&drctl(
        &["keygen", "--symmetric", "--output", sym.to_str().unwrap()],
        &[],
    ));
    assert!(std::fs::read_to_string(&sym)
        .unwrap()
        .contains("DR-KEY-V1-"));
}

#[test]
fn bench_crypto_json_lists_mb_per_s_for_every_cipher_and_chunk_size() {
    let out = drctl(&["--json", "bench", "crypto", "--mb", "2"], &[]);
    ok(&out);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    for cipher in ["aes-256-gcm", "chacha20-poly1305"] {
        for chunk in [16384, 65536, 1048576] {
            let row = rows
                .iter()
                .find(|r| r["cipher"] == cipher && r["chunk_bytes"] == chunk)
                .unwrap_or_else(|| panic!("{cipher} at {chunk}: {rows:?}"));
            assert!(row["mb_per_s"].as_f64().unwrap() > 0.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_backups_only_key_is_refused_until_a_remaining_key_can_be_wrapped_for() {
    // Two symmetric keys; one backup was written by a host holding only `leaving`.
    let dir = tempfile::tempdir().unwrap();
    let staying = MasterKey::generate().unwrap();
    let leaving = MasterKey::generate().unwrap();
    let (staying_id, leaving_id): (Identity, Identity) =
        (staying.clone().into(), leaving.clone().into());
    let mut repo = file_repo(dir.path(), vec![entry(&staying_id), entry(&leaving_id)]).await;
    let data = payload(10_000, 7);
    let enc = dr::keys::encryptor(&repo, leaving.clone()).unwrap();
    let m = dr::core::backup(
        &repo,
        &BufferDumper::new(data.clone()),
        &enc,
        &BackupOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(m.encryption.key_ids(), vec![leaving.key_id().as_str()]);
    // The operator holds `staying`, which cannot open that backup: refused, nothing changed.
    let e = dr::keys::revoke_key(&mut repo, Some(&staying_id), &leaving.key_id())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e}");
    assert_eq!(repo.config().keys.len(), 2);
    // With only `leaving` in hand there is no remaining key it can wrap for (`staying` is
    // symmetric and not held): refused as well…
    let e = dr::keys::revoke_key(&mut repo, Some(&leaving_id), &leaving.key_id())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKey, "{e}");
    // …and rotating to a public recipient succeeds: the backup opens with it afterwards.
    let fresh: Identity = x25519().into();
    dr::keys::rotate_key(&mut repo, &leaving_id, fresh.to_recipient())
        .await
        .unwrap();
    let now = repo.manifest(&m.id).await.unwrap();
    assert_eq!(read_with(&repo, &now, &fresh).await.unwrap(), data);
    assert_eq!(
        read_with(&repo, &now, &leaving_id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::WrongKey
    );
}
