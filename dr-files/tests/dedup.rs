//! Deduplicated file backups end to end: real directory trees, the real cipher, a real
//! (file://) repository.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dr_core::{
    BackupOptions, Decryptor, Encryptor, ErrorKind, RepoConfig, RepoDefaults, Repository,
    StorageExt,
};
use dr_crypto::{AeadDecryptor, AeadEncryptor, Cipher, MasterKey};
use dr_files::dedup::{
    self, backup_tree, commit_snapshot, prune_packs, restore_tree, verify_packs, DedupKey,
    EntryKind, FilesReport, PackPruneOptions, Selection, Tree, TreeEntry, TreeHeader, CHUNK_SIZES,
};

struct Fixture {
    _dir: tempfile::TempDir,
    work: PathBuf,
    repo: Repository,
    enc: Arc<dyn Encryptor>,
    dec: Arc<dyn Decryptor>,
    dedup: DedupKey,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    std::fs::create_dir(&repo_dir).unwrap();
    let storage = dr_storage::from_url(&format!("file://{}", repo_dir.display())).unwrap();
    let defaults = RepoDefaults {
        compression: "zstd:3".parse().unwrap(),
        encryption: dr_crypto::SCHEME.into(),
        cipher: "aes-256-gcm".into(),
        storage_class: None,
    };
    let repo = Repository::init(storage, RepoConfig::new(defaults, vec![]).unwrap())
        .await
        .unwrap();
    let key = MasterKey::generate().unwrap();
    let enc: Arc<dyn Encryptor> =
        Arc::new(AeadEncryptor::new(Cipher::Aes256Gcm, vec![key.clone()]).unwrap());
    let dec: Arc<dyn Decryptor> = Arc::new(AeadDecryptor::new(vec![key]));
    let dedup = dedup::load_or_create_dedup_key(&repo, &*enc, Some(&*dec))
        .await
        .unwrap();
    Fixture {
        work: dir.path().to_path_buf(),
        _dir: dir,
        repo,
        enc,
        dec,
        dedup,
    }
}

impl Fixture {
    async fn backup(
        &self,
        root: &Path,
        parent: Option<&dr_core::Manifest>,
    ) -> (dr_core::Manifest, FilesReport) {
        let parent = match parent {
            Some(m) => Some(
                dedup::ParentTree::read(&self.repo, m, &*self.dec)
                    .await
                    .unwrap(),
            ),
            None => None,
        };
        backup_tree(
            &self.repo,
            &dedup::TreeSource::dir(root),
            self.enc.clone(),
            &self.dedup,
            parent,
            &BackupOptions::default(),
        )
        .await
        .unwrap()
    }

    async fn restore(
        &self,
        m: &dr_core::Manifest,
        into: &Path,
    ) -> dr_core::Result<dedup::FilesRestoreReport> {
        restore_tree(
            &self.repo,
            m,
            self.dec.clone(),
            into,
            &Selection::default(),
            false,
        )
        .await
    }
}

/// Deterministic bytes that do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What a tree holds: per path, its kind, mode, content hash or link target.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let m = std::fs::symlink_metadata(e.path()).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        let what = if m.is_symlink() {
            format!("link {}", std::fs::read_link(e.path()).unwrap().display())
        } else if m.is_dir() {
            format!("dir {mode:o}")
        } else {
            let data = std::fs::read(e.path()).unwrap();
            format!(
                "file {mode:o} {} {} mtime {}",
                data.len(),
                blake3::hash(&data),
                m.mtime()
            )
        };
        out.insert(rel, what);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_trees_round_trip() {
    let f = fixture().await;
    let src = f.work.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    let big = [noise(12 << 20, 1), b"{\"json\": true}\n".repeat(200_000)].concat();
    std::fs::write(src.join("large.bin"), &big).unwrap();
    std::fs::write(src.join("日本語 é\nnewline.txt"), "unicode\n").unwrap();
    let mut deep = src.clone();
    for i in 0..40 {
        deep.push(format!("level-{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom"), b"deep").unwrap();
    std::fs::write(src.join("script.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        src.join("script.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::fs::write(src.join("secret"), b"s").unwrap();
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("large.bin", src.join("relative-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/outside", src.join("dangling-absolute")).unwrap();
    std::fs::hard_link(src.join("secret"), src.join("secret-hardlink")).unwrap();

    let (m, report) = f.backup(&src, None).await;
    assert_eq!(report.counts.files, 6, "{report:?}");
    assert_eq!(report.counts.files_read, 6);
    assert!(
        report.bytes_stored < big.len() as u64,
        "the JSON half compresses: {report:?}"
    );

    let out = f.work.join("out");
    let restored = f.restore(&m, &out).await.unwrap();
    assert_eq!(restored.files, 6);
    assert_eq!(restored.hardlinks, 1);
    assert_eq!(describe(&out), describe(&src));
    let (a, b) = (
        std::fs::metadata(out.join("secret")).unwrap(),
        std::fs::metadata(out.join("secret-hardlink")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hard links are restored as links");
    // ls and cat read the same snapshot.
    let tree = dedup::read_tree(&f.repo, &m, &*f.dec).await.unwrap();
    assert_eq!(dedup::list(&tree, "level-0").len(), 41); // 40 directories and the file
    let mut cat = Vec::new();
    dedup::cat_file(&f.repo, &m, &*f.dec, "large.bin", &mut cat)
        .await
        .unwrap();
    assert_eq!(cat, big);
    // A second restore into the now non-empty target is refused.
    assert_eq!(
        f.restore(&m, &out).await.unwrap_err().kind(),
        ErrorKind::NotEmpty
    );
}

fn uploads_tree(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("customer-{:02}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        let data = if i % 2 == 0 {
            noise(40_000 + i * 37, i as u64)
        } else {
            format!("{{\"id\": {i}, \"payload\": \"{}\"}}\n", "x".repeat(i))
                .repeat(300)
                .into_bytes()
        };
        std::fs::write(dir.join(format!("file-{i}.dat")), data).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_reads_only_changed_files_and_stores_about_their_bytes() {
    let f = fixture().await;
    let src = f.work.join("uploads");
    uploads_tree(&src, 200);
    let (first, r1) = f.backup(&src, None).await;
    assert_eq!(
        (
            r1.counts.files,
            r1.counts.files_read,
            r1.counts.files_unchanged
        ),
        (200, 200, 0)
    );

    // Change 1% of the files (2 of 200); mtimes move by a second to be sure.
    let mut changed_bytes = 0;
    for i in [4usize, 9] {
        let path = src.join(format!("customer-{:02}/file-{i}.dat", i % 10));
        let data = noise(50_000, 1000 + i as u64);
        changed_bytes += data.len() as u64;
        std::fs::write(&path, data).unwrap();
        let t = std::fs::metadata(&path).unwrap().modified().unwrap()
            + std::time::Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let (second, r2) = f.backup(&src, Some(&first)).await;
    assert_eq!(
        (r2.counts.files_read, r2.counts.files_unchanged),
        (2, 198),
        "{r2:?}"
    );
    assert_eq!(r2.counts.bytes_read, changed_bytes);
    assert_eq!(r2.counts.bytes_new, changed_bytes);
    assert!(r2.bytes_stored < changed_bytes + 64 * 1024, "{r2:?}");
    assert_eq!(r2.parent.as_deref(), Some(first.id.as_str()));

    // Moving a file stores no new chunk (it is read again: its path is new).
    std::fs::rename(
        src.join("customer-00/file-0.dat"),
        src.join("customer-01/moved.dat"),
    )
    .unwrap();
    let (third, r3) = f.backup(&src, Some(&second)).await;
    assert_eq!(
        (r3.counts.files_read, r3.counts.chunks_new, r3.packs_new),
        (1, 0, 0),
        "{r3:?}"
    );

    // Another host with the same files shares every chunk.
    let other = f.work.join("other-host");
    uploads_tree(&other, 20);
    let (_, r4) = f.backup(&other, None).await;
    assert_eq!(
        (r4.counts.files_read, r4.counts.chunks_new),
        (20, 0),
        "{r4:?}"
    );

    let out = f.work.join("restored");
    f.restore(&third, &out).await.unwrap();
    assert_eq!(describe(&out), describe(&src));
}

/// Commit a crafted tree whose files reuse the chunks of a real snapshot.
async fn craft(f: &Fixture, entries: Vec<TreeEntry>) -> dr_core::Manifest {
    let tree = Tree {
        header: TreeHeader::new(f.dedup.key_id(), CHUNK_SIZES),
        entries,
    };
    commit_snapshot(
        &f.repo,
        &tree,
        "crafted".into(),
        &*f.enc,
        &BackupOptions::default(),
    )
    .await
    .unwrap()
}

fn file_entry(path: &str, like: &TreeEntry) -> TreeEntry {
    TreeEntry {
        path: path.into(),
        ..like.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_snapshots_write_nothing_outside_the_target() {
    let f = fixture().await;
    let src = f.work.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("payload"), b"attacker-controlled bytes").unwrap();
    let (m, _) = f.backup(&src, None).await;
    let real = dedup::read_tree(&f.repo, &m, &*f.dec)
        .await
        .unwrap()
        .entries[0]
        .clone();
    let outside = f.work.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let link = |path: &str, target: &str| TreeEntry {
        path: path.into(),
        mode: 0o777,
        mtime_ns: 0,
        kind: EntryKind::Symlink {
            target: target.into(),
        },
    };

    let cases = vec![
        ("dot-dot", vec![file_entry("../outside/escaped", &real)]),
        (
            "absolute",
            vec![file_entry(&format!("{}/escaped", outside.display()), &real)],
        ),
        (
            "symlink then file",
            vec![
                link("a", outside.to_str().unwrap()),
                file_entry("a/escaped", &real),
            ],
        ),
        (
            "file then symlink",
            vec![
                file_entry("b/escaped", &real),
                link("b", outside.to_str().unwrap()),
            ],
        ),
        (
            "hard link out",
            vec![TreeEntry {
                path: "h".into(),
                mode: 0o644,
                mtime_ns: 0,
                kind: EntryKind::Hardlink {
                    target: "../outside/x".into(),
                },
            }],
        ),
    ];
    for (name, entries) in cases {
        let crafted = craft(&f, entries).await;
        let target = f.work.join(format!("target-{}", name.replace(' ', "-")));
        let err = f.restore(&crafted, &target).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{name}: {err}");
        assert!(!target.exists(), "{name}: the target stays untouched");
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "{name}: nothing outside"
        );
        let staging: Vec<_> = std::fs::read_dir(&f.work)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".dr-restore-"))
            .collect();
        assert!(
            staging.is_empty(),
            "{name}: the staging directory is removed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_missing_packs_fail_verify_and_restore_naming_the_files() {
    let f = fixture().await;
    let src = f.work.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("photo.png"), noise(300_000, 5)).unwrap();
    let (m, _) = f.backup(&src, None).await;
    let clean = verify_packs(&f.repo, &*f.dec, Some(&f.dedup))
        .await
        .unwrap();
    assert!(clean.problems.is_empty(), "{clean:?}");
    assert_eq!((clean.packs, clean.snapshots), (1, 1));

    let packs = f.work.join("repo/files/packs");
    let pack = std::fs::read_dir(&packs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&pack, &bytes).unwrap();
    let report = verify_packs(&f.repo, &*f.dec, Some(&f.dedup))
        .await
        .unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("SHA-256")),
        "{report:?}"
    );
    assert!(
        report.problems.iter().any(|p| p.contains("photo.png")),
        "{report:?}"
    );
    let err = f.restore(&m, &f.work.join("out1")).await.unwrap_err();
    assert!(err.to_string().contains("photo.png"), "{err}");

    std::fs::remove_file(&pack).unwrap();
    let err = f.restore(&m, &f.work.join("out2")).await.unwrap_err();
    assert!(
        err.to_string().contains("missing") && err.to_string().contains("photo.png"),
        "{err}"
    );
    assert!(!f.work.join("out2").exists());

    let index = std::fs::read_dir(f.work.join("repo/files/index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(index).unwrap();
    let report = verify_packs(&f.repo, &*f.dec, Some(&f.dedup))
        .await
        .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("no pack holds") && p.contains("photo.png")),
        "{report:?}"
    );
    let err = f.restore(&m, &f.work.join("out3")).await.unwrap_err();
    assert!(err.to_string().contains("photo.png"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_every_remaining_snapshot_restorable() {
    let f = fixture().await;
    let src = f.work.join("src");
    uploads_tree(&src, 40);
    let (first, _) = f.backup(&src, None).await;
    // Replace most files, so most of the first pack is needed only by the first snapshot.
    for i in 0..30usize {
        std::fs::write(
            src.join(format!("customer-{:02}/file-{i}.dat", i % 10)),
            noise(30_000, 500 + i as u64),
        )
        .unwrap();
    }
    let (second, _) = f.backup(&src, Some(&first)).await;
    let expected = describe(&src);
    f.repo
        .storage()
        .delete_prefix(&format!("backups/{}/", first.id))
        .await
        .unwrap();

    let lease = dr_core::lease::Lease::exclusive(&f.repo, "prune", None)
        .await
        .unwrap();
    let opts = PackPruneOptions {
        grace: std::time::Duration::ZERO,
        ..Default::default()
    };
    let report = prune_packs(&f.repo, &lease, &*f.dec, &*f.enc, &f.dedup, &opts)
        .await
        .unwrap();
    lease.release().await.unwrap();
    assert!(
        report.packs_repacked + report.packs_deleted >= 1,
        "{report:?}"
    );
    assert!(
        report.chunks_removed >= 20 && report.bytes_freed > 0,
        "{report:?}"
    );

    let after = verify_packs(&f.repo, &*f.dec, Some(&f.dedup))
        .await
        .unwrap();
    assert!(after.problems.is_empty(), "{after:?}");
    let out = f.work.join("out");
    f.restore(&second, &out).await.unwrap();
    assert_eq!(describe(&out), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_takes_only_the_selected_paths() {
    let f = fixture().await;
    let src = f.work.join("src");
    uploads_tree(&src, 20);
    let (m, _) = f.backup(&src, None).await;
    let selection = Selection::new(&["customer-0[12]".into()], &["**/file-11.dat".into()]).unwrap();
    let out = f.work.join("out");
    let report = restore_tree(&f.repo, &m, f.dec.clone(), &out, &selection, false)
        .await
        .unwrap();
    let got: Vec<String> = describe(&out).into_keys().collect();
    assert_eq!(
        got,
        [
            "customer-01",
            "customer-02",
            "customer-02/file-12.dat",
            "customer-02/file-2.dat",
            "customer-01/file-1.dat"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    assert_eq!(report.files, 3);
    assert!(Selection::new(&["[".into()], &[]).is_err());
}

/// A real store whose `get` waits until the test opens the gate: holds a backup of a bucket
/// source mid-walk, so the test can look at the repository while it runs.
#[derive(Debug)]
struct Gated {
    inner: Arc<dyn dr_core::StorageTarget>,
    entered: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait::async_trait]
impl dr_core::StorageTarget for Gated {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn put_stream(
        &self,
        path: &str,
        opts: dr_core::PutOptions,
    ) -> dr_core::Result<Box<dyn dr_core::ObjectWriter>> {
        self.inner.put_stream(path, opts).await
    }
    async fn put_if_absent(
        &self,
        path: &str,
        bytes: bytes::Bytes,
        opts: dr_core::PutOptions,
    ) -> dr_core::Result<()> {
        self.inner.put_if_absent(path, bytes, opts).await
    }
    async fn get(
        &self,
        path: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> dr_core::Result<dr_core::ByteStream> {
        self.entered.notify_one();
        self.gate.acquire().await.unwrap().forget();
        self.inner.get(path, range).await
    }
    async fn head(&self, path: &str) -> dr_core::Result<dr_core::ObjectMeta> {
        self.inner.head(path).await
    }
    async fn list(&self, prefix: &str) -> dr_core::Result<Vec<dr_core::ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, path: &str) -> dr_core::Result<()> {
        self.inner.delete(path).await
    }
    async fn copy(&self, from: &str, to: &str) -> dr_core::Result<()> {
        self.inner.copy(from, to).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_holds_a_shared_lease_that_excludes_prune_and_is_excluded_by_it() {
    use dr_core::lease::Lease;
    let f = fixture().await;
    let root = f.work.join("bucket");
    uploads_tree(&root, 3);
    let objects = dr_storage::from_url(&format!("file://{}", root.display())).unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(tokio::sync::Notify::new());
    let source = dedup::TreeSource::bucket(
        Arc::new(Gated {
            inner: objects,
            entered: entered.clone(),
            gate: gate.clone(),
        }),
        "file://bucket",
    );
    let locks = |repo: Repository| async move {
        repo.storage()
            .list("locks/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .filter(|p| p.starts_with("locks/shared-"))
            .count()
    };

    // While a backup reads its source, prune cannot take the exclusive lease.
    let running = {
        let (repo, enc, key) = (f.repo.clone(), f.enc.clone(), f.dedup.clone());
        tokio::spawn(async move {
            backup_tree(&repo, &source, enc, &key, None, &BackupOptions::default()).await
        })
    };
    entered.notified().await;
    let err = Lease::exclusive(&f.repo, "prune packs", None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked, "{}", err.report());
    assert!(
        err.message()
            .contains("deduplicated backup of file://bucket"),
        "{}",
        err.report()
    );
    // Two backups hold shared leases side by side.
    let other = Lease::shared(&f.repo, "another backup", None)
        .await
        .unwrap();
    gate.add_permits(1000);
    let (m, report) = running.await.unwrap().unwrap();
    assert_eq!(report.counts.files_read, 3);
    other.release().await.unwrap();
    assert_eq!(
        locks(f.repo.clone()).await,
        0,
        "released shared leases leave nothing"
    );

    // While prune holds the exclusive lease, a backup fails at once, naming it, and stores
    // nothing.
    let packs = f
        .repo
        .storage()
        .list(dedup::PACKS_PREFIX)
        .await
        .unwrap()
        .len();
    let prune = Lease::exclusive(&f.repo, "prune packs", None)
        .await
        .unwrap();
    std::fs::write(root.join("new.png"), noise(10_000, 77)).unwrap();
    let err = backup_tree(
        &f.repo,
        &dedup::TreeSource::dir(&root),
        f.enc.clone(),
        &f.dedup,
        None,
        &BackupOptions::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked, "{}", err.report());
    assert!(err.message().contains("prune packs"), "{}", err.report());
    assert_eq!(
        f.repo
            .storage()
            .list(dedup::PACKS_PREFIX)
            .await
            .unwrap()
            .len(),
        packs
    );
    prune.release().await.unwrap();
    assert!(f.restore(&m, &f.work.join("out")).await.is_ok());
}

/// Every chunk id the repository's pack indexes list, with how many times.
async fn stored_chunks(repo: &Repository) -> BTreeMap<[u8; 32], usize> {
    let mut ids = BTreeMap::new();
    for pack in dedup::Catalog::load(repo).await.unwrap().packs {
        for blob in pack.blobs {
            *ids.entry(blob.id).or_insert(0) += 1;
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_readers_give_the_serial_snapshot_and_store_each_chunk_once() {
    let serial = fixture().await;
    let mut parallel = fixture().await;
    // The same dedup key in both repositories: the same chunk ids.
    parallel.dedup = serial.dedup.clone();
    let src = serial.work.join("uploads");
    uploads_tree(&src, 300);
    // Files that share chunks (whole and in part) in different places of the walk, a file
    // of several chunks, empty files, links.
    let big = noise(20 << 20, 5);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("customer-05/big-copy.bin"), &big).unwrap();
    std::fs::write(src.join("customer-07/big-head.bin"), &big[..9 << 20]).unwrap();
    for i in 0..40 {
        std::fs::write(
            src.join(format!("customer-0{}/same-{i}.txt", i % 10)),
            b"same",
        )
        .unwrap();
        std::fs::write(src.join(format!("customer-0{}/empty-{i}", i % 10)), b"").unwrap();
    }
    std::fs::hard_link(src.join("big.bin"), src.join("customer-09/big-link.bin")).unwrap();
    std::os::unix::fs::symlink("../big.bin", src.join("customer-01/to-big")).unwrap();

    let backup = |f: &Fixture, readers: usize| {
        let source = dedup::TreeSource::dir(&src);
        let (repo, enc, key) = (f.repo.clone(), f.enc.clone(), f.dedup.clone());
        async move {
            dedup::backup_tree_with_readers(
                &repo,
                &source,
                enc,
                &key,
                None,
                &BackupOptions::default(),
                readers,
            )
            .await
            .unwrap()
        }
    };
    let (m1, r1) = backup(&serial, 1).await;
    let (m4, r4) = backup(&parallel, 4).await;
    let t1 = dedup::read_tree(&serial.repo, &m1, &*serial.dec)
        .await
        .unwrap();
    let t4 = dedup::read_tree(&parallel.repo, &m4, &*parallel.dec)
        .await
        .unwrap();
    assert_eq!(t4, t1, "the same entries in the same order");
    let counts = |r: &FilesReport| {
        (
            r.counts.files,
            r.counts.files_read,
            r.counts.bytes_total,
            r.counts.bytes_read,
            r.counts.chunks_new,
            r.counts.bytes_new,
        )
    };
    assert_eq!(counts(&r4), counts(&r1));
    let (c1, c4) = (
        stored_chunks(&serial.repo).await,
        stored_chunks(&parallel.repo).await,
    );
    assert_eq!(c4, c1, "the same chunks stored");
    assert!(c4.values().all(|n| *n == 1), "each chunk stored once");
    assert_eq!(c4.len() as u64, r4.counts.chunks_new);

    let out = parallel.work.join("restored");
    parallel.restore(&m4, &out).await.unwrap();
    assert_eq!(describe(&out), describe(&src));
}

/// A real store whose `get` of one key fails: a file that cannot be read in the middle of a
/// backup (the test runs as root, so file permissions cannot make a local file unreadable).
#[derive(Debug)]
struct FailingGet {
    inner: Arc<dyn dr_core::StorageTarget>,
    broken: String,
}

#[async_trait::async_trait]
impl dr_core::StorageTarget for FailingGet {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn put_stream(
        &self,
        path: &str,
        opts: dr_core::PutOptions,
    ) -> dr_core::Result<Box<dyn dr_core::ObjectWriter>> {
        self.inner.put_stream(path, opts).await
    }
    async fn put_if_absent(
        &self,
        path: &str,
        bytes: bytes::Bytes,
        opts: dr_core::PutOptions,
    ) -> dr_core::Result<()> {
        self.inner.put_if_absent(path, bytes, opts).await
    }
    async fn get(
        &self,
        path: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> dr_core::Result<dr_core::ByteStream> {
        if path == self.broken {
            return Err(dr_core::Error::io(
                "cannot read the object",
                std::io::Error::other("injected failure"),
            ));
        }
        self.inner.get(path, range).await
    }
    async fn head(&self, path: &str) -> dr_core::Result<dr_core::ObjectMeta> {
        self.inner.head(path).await
    }
    async fn list(&self, prefix: &str) -> dr_core::Result<Vec<dr_core::ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, path: &str) -> dr_core::Result<()> {
        self.inner.delete(path).await
    }
    async fn copy(&self, from: &str, to: &str) -> dr_core::Result<()> {
        self.inner.copy(from, to).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_no_reader_can_read_fails_the_backup_naming_it_and_commits_nothing() {
    let f = fixture().await;
    let root = f.work.join("bucket");
    uploads_tree(&root, 200);
    let broken = "customer-03/file-113.dat";
    let objects = dr_storage::from_url(&format!("file://{}", root.display())).unwrap();
    let source = dedup::TreeSource::bucket(
        Arc::new(FailingGet {
            inner: objects,
            broken: broken.into(),
        }),
        "file://bucket",
    );
    let err = dedup::backup_tree_with_readers(
        &f.repo,
        &source,
        f.enc.clone(),
        &f.dedup,
        None,
        &BackupOptions::default(),
        4,
    )
    .await
    .unwrap_err();
    assert!(err.report().contains(broken), "{}", err.report());
    assert!(
        err.report().contains("injected failure"),
        "{}",
        err.report()
    );
    assert!(f.repo.list_backups().await.unwrap().is_empty());
}

/// The repository's real (file://) store, except that every pack object it lists says it
/// was written an hour ago.
///
/// A wrapper, not a mock: every object lives in the real store underneath, and only the
/// listed time is changed. It makes deterministic what the file system's coarse clock did
/// once in CI: it stamped a pack that a prune had just written with a time before the
/// prune's start, so the pack looked like an orphan of a failed backup past a zero grace.
#[derive(Debug)]
struct PacksListedAsOld(Arc<dyn dr_core::StorageTarget>);

#[async_trait::async_trait]
impl dr_core::StorageTarget for PacksListedAsOld {
    fn describe(&self) -> String {
        self.0.describe()
    }
    async fn put_stream(
        &self,
        path: &str,
        opts: dr_core::PutOptions,
    ) -> dr_core::Result<Box<dyn dr_core::ObjectWriter>> {
        self.0.put_stream(path, opts).await
    }
    async fn put_if_absent(
        &self,
        path: &str,
        bytes: bytes::Bytes,
        opts: dr_core::PutOptions,
    ) -> dr_core::Result<()> {
        self.0.put_if_absent(path, bytes, opts).await
    }
    async fn get(
        &self,
        path: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> dr_core::Result<dr_core::ByteStream> {
        self.0.get(path, range).await
    }
    async fn head(&self, path: &str) -> dr_core::Result<dr_core::ObjectMeta> {
        self.0.head(path).await
    }
    async fn list(&self, prefix: &str) -> dr_core::Result<Vec<dr_core::ObjectMeta>> {
        let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
        let mut objects = self.0.list(prefix).await?;
        for o in &mut objects {
            if o.path.starts_with(dedup::PACKS_PREFIX) {
                o.last_modified = an_hour_ago;
            }
        }
        Ok(objects)
    }
    async fn delete(&self, path: &str) -> dr_core::Result<()> {
        self.0.delete(path).await
    }
    async fn copy(&self, from: &str, to: &str) -> dr_core::Result<()> {
        self.0.copy(from, to).await
    }
}

/// Regression (bcd972f): prune swept for orphan packs in a listing taken after it had
/// repacked, so the pack it had just written (no index in its earlier listing, an older
/// time) was deleted with live chunks under a zero grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_never_takes_the_pack_it_just_wrote_for_an_orphan() {
    let f = fixture().await;
    let src = f.work.join("src");
    uploads_tree(&src, 40);
    let (first, _) = f.backup(&src, None).await;
    // Most of the first pack then serves only the first snapshot: it will be repacked.
    let rewrite = |from: usize, to: usize, seed: u64| {
        for i in from..to {
            std::fs::write(
                src.join(format!("customer-{:02}/file-{i}.dat", i % 10)),
                noise(30_000, seed + i as u64),
            )
            .unwrap();
        }
    };
    rewrite(0, 30, 500);
    let (second, _) = f.backup(&src, Some(&first)).await;
    let second_files = describe(&src);
    rewrite(30, 35, 900);
    let (third, _) = f.backup(&src, Some(&second)).await;
    let third_files = describe(&src);
    f.repo
        .storage()
        .delete_prefix(&format!("backups/{}/", first.id))
        .await
        .unwrap();

    let repo = Repository::open(Arc::new(PacksListedAsOld(f.repo.storage().clone())))
        .await
        .unwrap();
    let lease = dr_core::lease::Lease::exclusive(&repo, "prune", None)
        .await
        .unwrap();
    let opts = PackPruneOptions {
        grace: std::time::Duration::ZERO,
        ..Default::default()
    };
    let report = prune_packs(&repo, &lease, &*f.dec, &*f.enc, &f.dedup, &opts)
        .await
        .unwrap();
    lease.release().await.unwrap();
    // The case this test is about: a pack written by the prune itself.
    assert!(
        report.packs_repacked >= 1 && report.packs_written >= 1,
        "{report:?}"
    );
    assert_eq!(report.orphans_deleted, 0, "{report:?}");

    let verified = verify_packs(&f.repo, &*f.dec, Some(&f.dedup))
        .await
        .unwrap();
    assert!(verified.problems.is_empty(), "{verified:?}");
    for (snapshot, files) in [(&second, second_files), (&third, third_files)] {
        let out = f.work.join(format!("out-{}", snapshot.id));
        f.restore(snapshot, &out).await.unwrap();
        assert_eq!(describe(&out), files, "snapshot {}", snapshot.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_in_batches_restores_every_file_across_the_boundaries() {
    let f = fixture().await;
    let src = f.work.join("src");
    uploads_tree(&src, 60);
    // Multi-chunk files, empty files, links and a private directory among the batches.
    std::fs::write(src.join("customer-03/big.bin"), noise(6 << 20, 7)).unwrap();
    std::fs::write(src.join("customer-05/empty"), b"").unwrap();
    std::fs::create_dir(src.join("customer-07/private")).unwrap();
    std::fs::write(src.join("customer-07/private/note"), b"n").unwrap();
    std::fs::set_permissions(
        src.join("customer-07/private"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::fs::hard_link(
        src.join("customer-00/file-0.dat"),
        src.join("customer-09/again.dat"),
    )
    .unwrap();
    std::os::unix::fs::symlink("../customer-03/big.bin", src.join("customer-08/link")).unwrap();
    let (m, _) = f.backup(&src, None).await;

    for (n, (files, pieces)) in [(1, 1), (3, 5), (7, 1000), (1 << 14, 1 << 18)]
        .into_iter()
        .enumerate()
    {
        let out = f.work.join(format!("out-{n}"));
        let report = dedup::restore_tree_in_batches(
            &f.repo,
            &m,
            f.dec.clone(),
            &out,
            &Selection::default(),
            false,
            dedup::BatchLimits { files, pieces },
        )
        .await
        .unwrap();
        assert_eq!(describe(&out), describe(&src), "batches of {files} files");
        assert_eq!(
            (report.files, report.hardlinks, report.symlinks),
            (63, 1, 1),
            "{report:?}"
        );
    }

    // A tree in no known order has its layout checked whole, and restores all the same.
    let real = dedup::read_tree(&f.repo, &m, &*f.dec).await.unwrap();
    let file = |path: &str| {
        file_entry(
            path,
            &real.entries.iter().find(|e| e.size() > 0).unwrap().clone(),
        )
    };
    let dir = TreeEntry {
        path: "a".into(),
        mode: 0o755,
        mtime_ns: 0,
        kind: EntryKind::Dir,
    };
    let crafted = craft(&f, vec![file("z"), dir, file("a/x"), file("b")]).await;
    let out = f.work.join("out-unsorted");
    let report = dedup::restore_tree_in_batches(
        &f.repo,
        &crafted,
        f.dec.clone(),
        &out,
        &Selection::default(),
        false,
        dedup::BatchLimits {
            files: 1,
            pieces: 1,
        },
    )
    .await
    .unwrap();
    assert_eq!((report.files, report.dirs), (3, 1), "{report:?}");
    let names: Vec<String> = describe(&out).into_keys().collect();
    assert_eq!(names, ["a", "a/x", "b", "z"]);
}
