//! Hostile storage: someone who can write the bucket but holds no dr key tries to read future
//! backups (an added recipient) or to change what retention and `latest` see (edited
//! manifests). Every attempt must be refused, with a one-line cause naming what failed.
//!
//! Library tests use real file repositories and real directory backups (no database); the
//! drctl tests run the real binary against them.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use dr::core::signing::SigningKey;
use dr::core::trust::{open_trusted, TrustPolicy, TrustStore};
use dr::core::{
    BackupOptions, Manifest, PutOptions, RepoConfig, RepoDefaults, Repository, StorageExt,
    StorageTarget,
};
use dr::crypto::{Identity, Recipient, X25519Identity};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Helpers

struct Fixture {
    dir: tempfile::TempDir,
    storage: Arc<dyn StorageTarget>,
    admin: Arc<SigningKey>,
    identity: Identity,
}

fn signing_key(dir: &Path, name: &str) -> Arc<SigningKey> {
    Arc::new(dr::crypto::generate_signing_key_file(&dir.join(name)).unwrap())
}

/// A signed repository in a temporary directory with one X25519 recipient.
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("repo");
    std::fs::create_dir(&url).unwrap();
    let storage = dr::storage::from_url(url.to_str().unwrap()).unwrap();
    let admin = signing_key(dir.path(), "admin.key");
    let identity: Identity = X25519Identity::generate().unwrap().into();
    let config = RepoConfig::new(
        defaults(),
        vec![dr::keys::repo_key(&identity.to_recipient())],
    )
    .unwrap();
    Repository::init_signed(storage.clone(), config, admin.clone())
        .await
        .unwrap();
    Fixture {
        dir,
        storage,
        admin,
        identity,
    }
}

fn defaults() -> RepoDefaults {
    RepoDefaults {
        compression: "zstd:1".parse().unwrap(),
        encryption: dr::crypto::SCHEME.into(),
        cipher: "aes-256-gcm".into(),
        storage_class: None,
    }
}

impl Fixture {
    async fn open(&self) -> Repository {
        Repository::open(self.storage.clone()).await.unwrap()
    }

    async fn admin_repo(&self) -> Repository {
        self.open().await.with_signing_key(self.admin.clone())
    }

    /// A directory backup with one file of `content`.
    async fn backup(&self, repo: &Repository, content: &str) -> Manifest {
        let src = self.dir.path().join(format!("src-{content}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f.txt"), content).unwrap();
        let encryptor = dr::keys::public_encryptor(repo).unwrap();
        dr::core::backup(
            repo,
            &dr::files::DirDumper::new(&src),
            &encryptor,
            &BackupOptions::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()))
    }

    async fn read_json(&self, path: &str) -> Value {
        serde_json::from_slice(&self.storage.get_bytes(path).await.unwrap()).unwrap()
    }

    /// What an attacker with write access does: rewrite an object.
    async fn write_json(&self, path: &str, v: &Value) {
        self.storage
            .put_bytes(
                path,
                Bytes::from(serde_json::to_vec_pretty(v).unwrap()),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
}

/// The attacker's recipient and a key-list entry for it with the matching key id.
fn attacker_entry() -> Value {
    let r = Recipient::X25519(X25519Identity::generate().unwrap().recipient().clone());
    serde_json::to_value(dr::keys::repo_key(&r)).unwrap()
}

// ---------------------------------------------------------------------------------------
// Repository state

#[tokio::test]
async fn an_edited_key_list_defaults_or_retention_is_refused_on_open() {
    let f = fixture().await;
    let original = f.read_json("dr-repo.json").await;
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 6] = [
        ("added recipient", |v| {
            v["keys"].as_array_mut().unwrap().push(attacker_entry())
        }),
        ("removed key", |v| v["keys"].as_array_mut().unwrap().clear()),
        ("swapped default cipher", |v| {
            v["defaults"]["cipher"] = json!("chacha20-poly1305")
        }),
        ("retention policy", |v| {
            v["retention"] = json!({ "keep_last": 1 })
        }),
        // A shorter PITR window would let prune delete the WAL a restore needs.
        ("PITR window", |v| {
            v["retention"] = json!({ "keep_pitr": "1h" })
        }),
        (
            "writer key",
            |v| {
                v["writers"] =
                    json!([{ "id": "x", "public_key": "y", "added_at": "2026-01-01T00:00:00Z" }])
            },
        ),
    ];
    for (what, edit) in edits {
        let mut v = original.clone();
        edit(&mut v);
        f.write_json("dr-repo.json", &v).await;
        let e = Repository::open(f.storage.clone()).await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("changed outside dr") && !msg.contains('\n'),
            "{what}: {msg}"
        );
    }
    f.write_json("dr-repo.json", &original).await;
    f.open().await;
}

#[tokio::test]
async fn a_replaced_or_unsigned_state_is_refused_by_a_host_that_pinned_the_admin_key() {
    let f = fixture().await;
    let pins = TrustStore::new(f.dir.path().join("pins"));
    let policy = TrustPolicy {
        store: Some(pins.clone()),
        require_signed: true,
    };
    // First use pins the key; the second open matches.
    open_trusted(f.storage.clone(), &policy).await.unwrap();
    open_trusted(f.storage.clone(), &policy).await.unwrap();
    let original = f.read_json("dr-repo.json").await;

    // The attacker re-signs the whole file with a key of their own.
    let mut config: RepoConfig = serde_json::from_value(original.clone()).unwrap();
    config
        .keys
        .push(serde_json::from_value(attacker_entry()).unwrap());
    config.admin_key = None;
    config.signature = None;
    let own = signing_key(f.dir.path(), "attacker.key");
    let forged = config.clone().signed_by(&own).unwrap();
    f.write_json("dr-repo.json", &serde_json::to_value(&forged).unwrap())
        .await;
    // The signature itself verifies: only the pin tells.
    Repository::open(f.storage.clone()).await.unwrap();
    let e = open_trusted(f.storage.clone(), &policy).await.unwrap_err();
    assert!(e.message().contains("signed by another key"), "{e}");

    // Or strips the signature, as if the repository were never upgraded.
    let mut stripped = serde_json::to_value(&config).unwrap();
    stripped["format"] = json!(1);
    f.write_json("dr-repo.json", &stripped).await;
    let e = open_trusted(f.storage.clone(), &policy).await.unwrap_err();
    assert!(e.message().contains("not signed"), "{e}");
    // A host that never pinned still refuses unsigned state for writing.
    let fresh = TrustPolicy {
        store: Some(TrustStore::new(f.dir.path().join("other-pins"))),
        require_signed: true,
    };
    let e = open_trusted(f.storage.clone(), &fresh).await.unwrap_err();
    assert!(e.message().contains("drctl repo upgrade"), "{e}");
    // A stripped signature with the format left at 2 is refused on open by anyone.
    stripped["format"] = json!(2);
    f.write_json("dr-repo.json", &stripped).await;
    assert!(Repository::open(f.storage.clone()).await.is_err());
}

#[tokio::test]
async fn state_changes_need_the_administrative_key_and_stay_verifiable() {
    let f = fixture().await;
    let mut repo = f.open().await;
    let mut config = repo.config().clone();
    config.retention = Some(dr::core::RetentionPolicy {
        keep_last: Some(3),
        ..Default::default()
    });
    let e = repo.save_config(config.clone()).await.unwrap_err();
    assert!(e.message().contains("administrative key"), "{e}");

    let writer = signing_key(f.dir.path(), "writer.key");
    let mut as_writer = f.open().await.with_signing_key(writer);
    let e = as_writer.save_config(config.clone()).await.unwrap_err();
    assert!(
        e.message()
            .contains("not this repository's administrative key"),
        "{e}"
    );

    let mut admin = f.admin_repo().await;
    admin.save_config(config).await.unwrap();
    let reopened = f.open().await;
    assert!(reopened.is_signed());
    assert_eq!(
        reopened.config().retention.as_ref().unwrap().keep_last,
        Some(3)
    );
    // Key changes sign the new key list.
    let new = X25519Identity::generate().unwrap();
    dr::keys::add_key(
        &mut admin,
        &f.identity,
        Recipient::X25519(new.recipient().clone()),
    )
    .await
    .unwrap();
    assert_eq!(f.open().await.config().keys.len(), 2);
}

// ---------------------------------------------------------------------------------------
// Manifests

#[tokio::test]
async fn edited_manifests_are_ignored_by_listing_and_refused_by_id() {
    let f = fixture().await;
    let admin = f.admin_repo().await;
    let a = f.backup(&admin, "a").await;
    let b = f.backup(&admin, "b").await;
    let path_a = Repository::manifest_path(&a.id);
    let path_b = Repository::manifest_path(&b.id);
    let (orig_a, orig_b) = (f.read_json(&path_a).await, f.read_json(&path_b).await);

    type Edit = fn(&mut Value, &Value);
    let edits: [(&str, Edit); 5] = [
        ("flipped pinned", |v, _| v["pinned"] = json!(true)),
        ("moved finished_at", |v, _| {
            v["finished_at"] = json!("2099-01-01T00:00:00Z")
        }),
        ("label", |v, _| v["labels"] = json!(["pre-migration"])),
        ("objects swapped with another backup", |v, other| {
            v["objects"] = other["objects"].clone()
        }),
        ("signature removed", |v, _| {
            v.as_object_mut().unwrap().remove("signature");
        }),
    ];
    for (what, edit) in edits {
        let mut v = orig_a.clone();
        edit(&mut v, &orig_b);
        f.write_json(&path_a, &v).await;
        let repo = f.open().await;
        let listed: Vec<String> = repo
            .list_backups()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(
            listed,
            vec![b.id.clone()],
            "{what}: only the good backup is listed"
        );
        let (_, rejected) = repo.list_backups_and_rejected().await.unwrap();
        assert_eq!(rejected.len(), 1, "{what}");
        assert_eq!(rejected[0].id, a.id);
        let e = repo.manifest(&a.id).await.unwrap_err();
        assert!(
            e.message().contains(&a.id) && e.message().contains("not authenticated"),
            "{what}: {e}"
        );
        let e = repo
            .clone()
            .refuse_unauthenticated(true)
            .list_backups()
            .await
            .unwrap_err();
        assert!(e.message().contains(&a.id), "{what}: {e}");
        // `latest` is the newest good backup, never the edited one.
        let latest = repo
            .latest(&dr::core::SeriesSelector::default())
            .await
            .unwrap();
        assert_eq!(latest.id, b.id, "{what}");
    }
    f.write_json(&path_a, &orig_a).await;
    assert_eq!(f.open().await.list_backups().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_manifest_copied_from_another_repository_is_refused() {
    let f = fixture().await;
    // A second repository with the same administrative key: the signature is genuine, but
    // made for another repository id.
    let other_dir = f.dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other_storage = dr::storage::from_url(other_dir.to_str().unwrap()).unwrap();
    let config = RepoConfig::new(
        defaults(),
        vec![dr::keys::repo_key(&f.identity.to_recipient())],
    )
    .unwrap();
    let other = Repository::init_signed(other_storage.clone(), config, f.admin.clone())
        .await
        .unwrap();
    let m = f.backup(&other, "elsewhere").await;
    for o in other_storage.list("backups/").await.unwrap() {
        let bytes = other_storage.get_bytes(&o.path).await.unwrap();
        f.storage
            .put_bytes(&o.path, bytes, PutOptions::default())
            .await
            .unwrap();
    }
    let repo = f.open().await;
    assert!(repo.list_backups().await.unwrap().is_empty());
    let e = repo.manifest(&m.id).await.unwrap_err();
    assert!(e.message().contains("another repository"), "{e}");
}

#[tokio::test]
async fn pin_needs_a_signing_key_and_rotation_keeps_signatures_valid() {
    let f = fixture().await;
    let admin = f.admin_repo().await;
    let m = f.backup(&admin, "p").await;

    let keyless = f.open().await;
    let mut pinned = m.clone();
    pinned.pinned = true;
    let e = keyless.update_manifest(&pinned).await.unwrap_err();
    assert!(e.message().contains("needs a signing key"), "{e}");
    admin.update_manifest(&pinned).await.unwrap();
    assert!(f.open().await.manifest(&m.id).await.unwrap().pinned);

    // Rotation rewrites wrapped keys only, which the signature does not cover: a host that
    // holds only the old identity (no signing key) can rotate.
    let mut keyless = f.open().await;
    let new = X25519Identity::generate().unwrap();
    dr::keys::add_key(
        &mut keyless,
        &f.identity,
        Recipient::X25519(new.recipient().clone()),
    )
    .await
    .unwrap_err(); // the key list is signed: changing it needs the administrative key
    let mut admin = f.admin_repo().await;
    dr::keys::rotate_key(
        &mut admin,
        &f.identity,
        Recipient::X25519(new.recipient().clone()),
    )
    .await
    .unwrap();
    let after = f.open().await.manifest(&m.id).await.unwrap();
    assert_eq!(after.encryption.key_ids(), vec![new.key_id()]);
    assert!(after.pinned);
}

#[tokio::test]
async fn a_write_only_host_signs_with_a_listed_writer_key_only() {
    let f = fixture().await;
    let writer = signing_key(f.dir.path(), "writer.key");

    // Not listed yet: refused before anything is encrypted or stored.
    let host = f.open().await.with_signing_key(writer.clone());
    let e = host.check_can_sign_manifests().unwrap_err();
    assert!(e.message().contains("drctl key add-writer"), "{e}");
    let e = f.open().await.check_can_sign_manifests().unwrap_err();
    assert!(e.message().contains("--signing-key"), "{e}");

    let mut admin = f.admin_repo().await;
    assert!(
        dr::writers::add_writer(&mut admin, writer.public_key(), "web1")
            .await
            .unwrap()
    );
    let host = f.open().await.with_signing_key(writer.clone());
    let m = f.backup(&host, "w").await;
    assert_eq!(m.signature.as_ref().unwrap().key_id, writer.key_id());
    let reader = f.open().await;
    assert_eq!(reader.list_backups().await.unwrap().len(), 1);

    // Removing the writer re-signs its backups with the administrative key.
    let mut admin = f.admin_repo().await;
    assert_eq!(
        dr::writers::remove_writer(&mut admin, &writer.key_id())
            .await
            .unwrap(),
        1
    );
    let after = f.open().await.manifest(&m.id).await.unwrap();
    assert_eq!(after.signature.unwrap().key_id, f.admin.key_id());
    assert!(f
        .open()
        .await
        .with_signing_key(writer)
        .check_can_sign_manifests()
        .is_err());
}

#[tokio::test]
async fn upgrade_signs_an_existing_repository_and_its_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("repo");
    std::fs::create_dir(&url).unwrap();
    let storage = dr::storage::from_url(url.to_str().unwrap()).unwrap();
    let identity: Identity = X25519Identity::generate().unwrap().into();
    let config = RepoConfig::new(
        defaults(),
        vec![dr::keys::repo_key(&identity.to_recipient())],
    )
    .unwrap();
    let legacy = Repository::init(storage.clone(), config).await.unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), "x").unwrap();
    let enc = dr::keys::public_encryptor(&legacy).unwrap();
    let m = dr::core::backup(
        &legacy,
        &dr::files::DirDumper::new(&src),
        &enc,
        &BackupOptions::default(),
    )
    .await
    .unwrap();
    assert!(m.signature.is_none());

    let admin = signing_key(dir.path(), "admin.key");
    let mut repo = Repository::open(storage.clone())
        .await
        .unwrap()
        .with_signing_key(admin.clone());
    let report = repo.upgrade().await.unwrap();
    assert!(report.signed_state);
    assert_eq!((report.backups, report.manifests_signed), (1, 1));
    let again = repo.upgrade().await.unwrap();
    assert_eq!((again.signed_state, again.manifests_signed), (false, 0));

    let reopened = Repository::open(storage).await.unwrap();
    assert!(reopened.is_signed());
    assert_eq!(reopened.config().format, dr::core::repo::REPO_FORMAT);
    assert_eq!(reopened.list_backups().await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------
// drctl end to end

/// A repository made by `drctl init` with the test's administrative key, a directory to back
/// up, and the host identity.
struct Cli {
    repo: Repo,
    src: std::path::PathBuf,
}

impl Cli {
    fn new() -> Cli {
        let repo = Repo::new();
        let src = repo.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("a.txt"), "hello").unwrap();
        Cli { repo, src }
    }

    fn backup(&self) -> String {
        let out = self
            .repo
            .json(&["backup", "--dir", self.src.to_str().unwrap()]);
        out["id"].as_str().unwrap().to_owned()
    }

    fn config_path(&self) -> std::path::PathBuf {
        Path::new(&self.repo.url).join("dr-repo.json")
    }

    fn manifest_path(&self, id: &str) -> std::path::PathBuf {
        Path::new(&self.repo.url).join(Repository::manifest_path(id))
    }
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn one_line(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("drctl:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    lines[0]
}

#[test]
fn drctl_refuses_to_back_up_after_a_recipient_was_added_to_dr_repo_json() {
    let c = Cli::new();
    c.backup();
    let original = std::fs::read(c.config_path()).unwrap();
    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 3] = [
        ("added recipient", |v| {
            v["keys"].as_array_mut().unwrap().push(attacker_entry())
        }),
        ("removed key", |v| v["keys"].as_array_mut().unwrap().clear()),
        ("swapped cipher", |v| {
            v["defaults"]["cipher"] = json!("chacha20-poly1305")
        }),
    ];
    for (what, edit) in edits {
        edit_json(&c.config_path(), edit);
        let before = std::fs::read_dir(Path::new(&c.repo.url).join("backups"))
            .unwrap()
            .count();
        let err = fails(
            &c.repo.run(&["backup", "--dir", c.src.to_str().unwrap()]),
            5,
        );
        let line = one_line(&err);
        assert!(line.contains("changed outside dr"), "{what}: {line}");
        let after = std::fs::read_dir(Path::new(&c.repo.url).join("backups"))
            .unwrap()
            .count();
        assert_eq!(before, after, "{what}: nothing was written");
        fails(&c.repo.run(&["list"]), 5);
        std::fs::write(c.config_path(), &original).unwrap();
    }
    ok(&c.repo.run(&["list"]));
}

#[test]
fn drctl_list_verify_and_prune_ignore_or_refuse_an_edited_manifest() {
    let c = Cli::new();
    let old = c.backup();
    let new = c.backup();
    // Make the old backup look pinned and newest.
    edit_json(&c.manifest_path(&old), |v| {
        v["pinned"] = json!(true);
        v["finished_at"] = json!("2099-01-01T00:00:00Z");
    });
    let out = c.repo.run(&["--json", "list"]);
    ok(&out);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![new.as_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("ignoring backup {old}")),
        "the ignored backup is named: {stderr}"
    );

    let err = fails(&c.repo.run(&["list", "--refuse-unauthenticated"]), 5);
    assert!(one_line(&err).contains(&old), "{err}");

    let out = c.repo.run(&["verify", "--all"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains(&format!("{old}: FAILED")) && stdout.contains("not authenticated"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("{new}: ok")), "{stdout}");

    // Prune keeps one backup: the newest good one, never the edited one's claim.
    ok(&c.repo.run(&["prune", "--keep-last", "1"]));
    assert!(c.manifest_path(&old).exists() && c.manifest_path(&new).exists());

    // pin and restore by id name the failing backup.
    let err = fails(&c.repo.run(&["pin", &old]), 5);
    assert!(one_line(&err).contains("not authenticated"), "{err}");
}

#[test]
fn drctl_write_only_host_backs_up_with_a_writer_key_and_cannot_change_keys() {
    let c = Cli::new();
    let writer = c.repo.path().join("writer.key");
    let public = String::from_utf8(
        drctl(
            &["keygen", "--signing", "-o", writer.to_str().unwrap()],
            &[],
        )
        .stdout,
    )
    .unwrap();
    let as_writer = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--repo", &c.repo.url]);
        drctl(&all, &[("DR_SIGNING_KEY", writer.to_str().unwrap())])
    };
    let err = fails(&as_writer(&["backup", "--dir", c.src.to_str().unwrap()]), 4);
    assert!(one_line(&err).contains("drctl key add-writer"), "{err}");
    ok(&c.repo.run(&[
        "key",
        "add-writer",
        "--public-key",
        public.trim(),
        "--name",
        "web1",
    ]));
    ok(&as_writer(&["backup", "--dir", c.src.to_str().unwrap()]));
    let err = fails(&as_writer(&["retention", "set", "--keep-last", "1"]), 4);
    assert!(one_line(&err).contains("administrative key"), "{err}");
    // A host with no signing key at all cannot back up into a signed repository.
    let all = [
        "backup",
        "--dir",
        c.src.to_str().unwrap(),
        "--repo",
        &c.repo.url,
    ];
    let err = fails(&drctl(&all, &[("DR_SIGNING_KEY", "")]), 4);
    assert!(one_line(&err).contains("--signing-key"), "{err}");
}

#[test]
fn drctl_refuses_a_key_file_others_can_read_with_the_chmod_fix() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cli::new();
    c.backup();
    std::fs::set_permissions(&c.repo.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails(&c.repo.run(&["cat", "latest"]), 2);
    let line = one_line(&err);
    assert!(
        line.contains(&format!("chmod 600 {}", c.repo.key.display())),
        "{line}"
    );
    std::fs::set_permissions(&c.repo.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(&c.repo.run(&["cat", "latest"]));
}

// ---------------------------------------------------------------------------------------
// Secrets hygiene

/// Run drctl in a host's environment full of known secrets and check that none of them
/// (nor a key file's secret line) appears in anything it prints, failing or succeeding, at
/// every verbosity, in text and JSON.
#[test]
fn no_secret_from_the_environment_urls_or_key_files_appears_in_any_output() {
    const DB_URL_SECRET: &str = "UrlPassw0rd-7f3a";
    const PGPASSWORD: &str = "EnvPassw0rd-91bc";
    const AWS_SECRET: &str = "AwsSecretKey-c0ffee-1234567890";
    const PASSPHRASE: &str = "correct horse battery staple 4711";
    const ENDPOINT_SECRET: &str = "EndpointSecret-55aa";
    let c = Cli::new();
    c.backup();
    let key_line = |path: &Path| -> String {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_owned()
    };
    let (_, admin) = admin_paths();
    let mut secrets = vec![
        DB_URL_SECRET.to_owned(),
        PGPASSWORD.to_owned(),
        AWS_SECRET.to_owned(),
        PASSPHRASE.to_owned(),
        ENDPOINT_SECRET.to_owned(),
        key_line(&c.repo.key),
        key_line(&admin),
    ];
    // The part after the prefix, too, in case something prints the key without it.
    for i in [5, 6] {
        // The body is URL-safe base64, which may itself hold '-': cut at the version tag.
        let tail = secrets[i].split_once("-V1-").unwrap().1.to_owned();
        secrets.push(tail);
    }
    let env = [
        ("PGPASSWORD", PGPASSWORD),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
        ("DR_PASSPHRASE", PASSPHRASE),
        ("RUST_LOG", "trace"),
    ];
    let db = format!("postgres://app:{DB_URL_SECRET}@127.0.0.1:1/app");
    let src = c.src.to_str().unwrap();
    // An endpoint with credentials is refused; one without is unreachable (the AWS secret
    // is in the environment and used to sign the requests).
    let with_secret = format!("endpoint=http://user:{ENDPOINT_SECRET}@127.0.0.1:1");
    let endpoints = [with_secret.as_str(), "endpoint=http://127.0.0.1:1"];
    let runs: Vec<(Vec<&str>, bool)> = vec![
        // Succeeding runs.
        (vec!["backup", "--dir", src], true),
        (vec!["list"], true),
        (vec!["key", "list"], true),
        (vec!["verify", "--all"], true),
        // Failing runs: unreachable database, wrong passphrase, unreachable S3 endpoint.
        (vec!["backup", "--db", &db], false),
        (vec!["restore", "latest", "--db", &db], false),
        (vec!["init"], false),
    ];
    let mut checked = 0;
    for (args, succeeds) in &runs {
        for verbosity in [None, Some("-v"), Some("-vv")] {
            for json_flag in [false, true] {
                let mut all: Vec<&str> = Vec::new();
                all.extend(verbosity);
                if json_flag {
                    all.push("--json");
                }
                all.extend(args.iter().copied());
                all.extend(["--repo", &c.repo.url]);
                let mut env = env.to_vec();
                if args[0] == "restore" {
                    // The passphrase is the only key: it is wrong for this repository.
                    env.push(("DR_KEY_FILE", ""));
                } else {
                    env.push(("DR_KEY_FILE", c.repo.key.to_str().unwrap()));
                }
                let out = drctl(&all, &env);
                assert_eq!(
                    out.status.success(),
                    *succeeds,
                    "{all:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_no_secret(&all, &out, &secrets);
                checked += 1;
            }
        }
    }
    // Storage credentials: an S3 repository whose endpoint is unreachable.
    for endpoint in endpoints {
        for verbosity in [None, Some("-vv")] {
            if verbosity.is_none() && !endpoint.contains('@') {
                continue; // retries take seconds: the most verbose run is enough
            }
            let mut all: Vec<&str> = verbosity.into_iter().collect();
            all.extend(["--json", "list", "--repo", "s3://bucket/prefix"]);
            all.extend([
                "--storage-opt",
                endpoint,
                "--storage-opt",
                "allow_http=true",
            ]);
            all.extend(["--storage-opt", "region=us-east-1"]);
            let out = drctl(&all, &env);
            assert!(!out.status.success());
            assert_no_secret(&all, &out, &secrets);
            checked += 1;
        }
    }
    assert_eq!(checked, runs.len() * 6 + 3);
}

#[track_caller]
fn assert_no_secret(args: &[&str], out: &std::process::Output, secrets: &[String]) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "drctl {args:?} printed the secret {s:?}:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Audit trail

#[tokio::test]
async fn the_audit_trail_records_changes_and_reports_removed_edited_or_forged_entries() {
    let f = fixture().await;
    let mut admin = f.admin_repo().await;
    let m = f.backup(&admin, "t").await;
    let mut config = admin.config().clone();
    config.retention = Some(dr::core::RetentionPolicy {
        keep_last: Some(5),
        ..Default::default()
    });
    admin.save_config(config).await.unwrap();
    let mut pinned = admin.manifest(&m.id).await.unwrap();
    pinned.pinned = true;
    admin.update_manifest(&pinned).await.unwrap();
    pinned.pinned = false;
    admin.update_manifest(&pinned).await.unwrap();

    let repo = f.open().await;
    let trail = dr::core::audit::read_trail(&repo).await.unwrap();
    assert!(trail.problems.is_empty(), "{:?}", trail.problems);
    let actions: Vec<&str> = trail.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["state", "pin", "unpin"]);
    assert_eq!(trail.entries[0].details["retention"]["keep_last"], json!(5));
    assert_eq!(trail.entries[1].details["backup"], json!(m.id));
    assert!(trail.entries.iter().all(|e| e.key_id == f.admin.key_id()));

    let entry = |n: u64| format!("audit/{n:020}.json");
    let problems = |repo: Repository| async move {
        dr::core::audit::read_trail(&repo).await.unwrap().problems
    };
    // An edited entry.
    let original = f.read_json(&entry(2)).await;
    let mut edited = original.clone();
    edited["details"]["backup"] = json!("someone-else");
    f.write_json(&entry(2), &edited).await;
    let p = problems(f.open().await).await;
    assert!(
        p.iter().any(|p| p.contains("entry 2 is not signed")),
        "{p:?}"
    );
    f.write_json(&entry(2), &original).await;
    // A removed entry in the middle.
    f.storage.delete(&entry(2)).await.unwrap();
    let p = problems(f.open().await).await;
    assert!(
        p.iter().any(|p| p.contains("entries 2 to 2 are missing")),
        "{p:?}"
    );
    f.write_json(&entry(2), &original).await;
    assert!(problems(f.open().await).await.is_empty());
    // A forged entry appended by someone without a key.
    let mut forged = f.read_json(&entry(3)).await;
    forged["seq"] = json!(4);
    forged["action"] = json!("state");
    f.write_json(&entry(4), &forged).await;
    let p = problems(f.open().await).await;
    assert!(p.iter().any(|p| p.contains("entry 4")), "{p:?}");
    f.storage.delete(&entry(4)).await.unwrap();
    // Truncation back past the head that the signed state records.
    for n in [3, 2, 1] {
        f.storage.delete(&entry(n)).await.unwrap();
    }
    let p = problems(f.open().await).await;
    assert!(p.iter().any(|p| p.contains("ends before entry 1")), "{p:?}");
}

#[test]
fn drctl_log_shows_the_trail_and_verify_reports_a_removed_entry() {
    let c = Cli::new();
    let id = c.backup();
    ok(&c.repo.run(&["pin", &id]));
    ok(&c.repo.run(&["retention", "set", "--keep-last", "3"]));
    let log = c.repo.json(&["log"]);
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["pin", "state"]);
    ok(&c.repo.run(&["verify", "--all"]));

    std::fs::remove_file(Path::new(&c.repo.url).join("audit/00000000000000000001.json")).unwrap();
    let out = c.repo.run(&["verify", "--all"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("audit trail: FAILED"), "{stdout}");
    let err = fails(&c.repo.run(&["log"]), 5);
    assert!(one_line(&err).contains("missing"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Delete-proof storage

/// A bucket whose credentials cannot delete (a policy without DeleteObject, or Object Lock):
/// backups work, prune reports what the store refused and keeps it, and with the lock's
/// retention recorded (`object_lock_days`) prune does not even plan those deletions.
#[tokio::test]
async fn prune_on_delete_proof_storage_reports_refusals_and_honours_object_lock_days() {
    use dr::storage::faults::{Fault, FaultyTarget, Op, Trigger};
    let f = fixture().await;
    let no_deletes: Arc<dyn StorageTarget> =
        Arc::new(FaultyTarget::new(f.storage.clone(), 7).inject(
            Op::Delete,
            Trigger::Always,
            Fault::permanent(dr::core::ErrorKind::Storage),
        ));
    let open = |storage: Arc<dyn StorageTarget>| {
        let admin = f.admin.clone();
        async move {
            Repository::open(storage)
                .await
                .unwrap()
                .with_signing_key(admin)
        }
    };
    let host = open(no_deletes.clone()).await;
    for _ in 0..3 {
        // One directory: one series.
        f.backup(&host, "lock").await;
    }
    let newest = host.list_backups().await.unwrap()[0].id.clone();
    let policy = dr::core::SeriesPolicies::new(dr::core::RetentionPolicy {
        keep_last: Some(1),
        ..Default::default()
    });
    let later = |days| dr::core::PruneOptions {
        now: Some(chrono::Utc::now() + chrono::Duration::days(days)),
        ..Default::default()
    };

    // Without a recorded lock: prune tries, the store refuses, the report says so.
    let report = dr::core::prune(&host, &policy, &later(30)).await.unwrap();
    assert!(report.deleted.is_empty());
    assert_eq!(report.undeletable.len(), 2, "{report:?}");
    assert!(report.undeletable.iter().all(|u| u.id != newest));
    assert_eq!(
        host.list_backups().await.unwrap().len(),
        3,
        "nothing was lost"
    );

    // With the lock's 7 days recorded in the signed state, nothing younger is planned.
    let mut admin = f.admin_repo().await;
    let mut config = admin.config().clone();
    config.object_lock_days = Some(7);
    admin.save_config(config).await.unwrap();
    let host = open(no_deletes).await;
    let report = dr::core::prune(&host, &policy, &later(3)).await.unwrap();
    assert!(
        report.undeletable.is_empty() && report.deleted.is_empty(),
        "{report:?}"
    );
    let locked = report
        .decisions
        .iter()
        .filter(|d| d.reasons.iter().any(|r| r.contains("object lock (7 days)")))
        .count();
    assert_eq!(locked, 2);
    // Once the lock has expired, a host that may delete prunes them.
    let admin = f.admin_repo().await;
    let report = dr::core::prune(&admin, &policy, &later(8)).await.unwrap();
    assert_eq!(report.deleted.len(), 2);
    assert_eq!(admin.list_backups().await.unwrap()[0].id, newest);
}

/// A write-only host's store refuses every delete: it still takes, releases and takes again
/// the job lease, and a second taker sees it held (generations are created, never
/// rewritten; deleting old ones is best effort).
#[tokio::test]
async fn leases_work_on_storage_that_refuses_deletes() {
    use dr::core::lease::Lease;
    use dr::storage::faults::{Fault, FaultyTarget, Op, Trigger};
    let f = fixture().await;
    let no_deletes: Arc<dyn StorageTarget> =
        Arc::new(FaultyTarget::new(f.storage.clone(), 11).inject(
            Op::Delete,
            Trigger::Always,
            Fault::permanent(dr::core::ErrorKind::Storage),
        ));
    let host = Repository::open(no_deletes).await.unwrap();
    let lease = Lease::job(&host, "nightly", None).await.unwrap();
    let Err(err) = Lease::job(&host, "nightly", None).await else {
        panic!("a held lease is not taken twice");
    };
    assert_eq!(err.kind(), dr::core::ErrorKind::Locked, "{err}");
    lease.release().await.unwrap();
    let again = Lease::job(&host, "nightly", None).await.unwrap();
    assert!(again.holder().generation > 2, "{:?}", again.holder());
    again.release().await.unwrap();
}

#[test]
fn drctl_refuses_swapped_objects_and_a_manifest_copied_from_another_repository() {
    let c = Cli::new();
    let first = c.backup();
    std::fs::write(c.src.join("a.txt"), "changed").unwrap();
    let second = c.backup();

    // Swapped objects: the first backup's manifest now names the second's payload (sizes and
    // checksums consistent with it), so only the signature can tell.
    let second_manifest: Value =
        serde_json::from_slice(&std::fs::read(c.manifest_path(&second)).unwrap()).unwrap();
    edit_json(&c.manifest_path(&first), |v| {
        for field in ["objects", "stored_bytes", "raw_bytes"] {
            v[field] = second_manifest[field].clone();
        }
    });
    let target = c.repo.path().join("restored-first");
    let err = fails(
        &c.repo
            .run(&["restore", &first, "--dir", target.to_str().unwrap()]),
        5,
    );
    let line = one_line(&err);
    assert!(
        line.contains(&first) && line.contains("not authenticated"),
        "{line}"
    );
    assert!(!target.exists(), "nothing was restored");

    // A backup copied whole from another repository with the same administrative key: its
    // signature is genuine, but bound to the other repository's id.
    let other = Cli::new();
    let foreign = other.backup();
    let from = Path::new(&other.repo.url).join("backups").join(&foreign);
    let into = Path::new(&c.repo.url).join("backups").join(&foreign);
    std::fs::create_dir_all(&into).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), into.join(entry.file_name())).unwrap();
    }
    let out = c.repo.run(&["--json", "list"]);
    ok(&out);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != json!(foreign)),
        "the copied backup is not listed: {listed}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&foreign), "the copy is named: {stderr}");
    let target = c.repo.path().join("restored-foreign");
    let err = fails(
        &c.repo
            .run(&["restore", &foreign, "--dir", target.to_str().unwrap()]),
        5,
    );
    assert!(one_line(&err).contains("another repository"), "{err}");
    assert!(!target.exists(), "nothing was restored");
}

#[test]
fn drctl_replicate_carries_the_audit_trail_and_records_itself_in_it() {
    let c = Cli::new();
    let id = c.backup();
    ok(&c.repo.run(&["pin", &id]));
    let replica = c.repo.path().join("replica");
    let replica = replica.to_str().unwrap();
    ok(&c.repo.run(&["replicate", "--to", replica, "--all"]));

    let key = c.repo.key.to_str().unwrap().to_owned();
    let at_replica = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--repo", replica]);
        drctl(&all, &[("DR_KEY_FILE", key.as_str())])
    };
    let out = at_replica(&["--json", "log"]);
    ok(&out);
    let log: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["pin", "replicate"], "{log}");
    assert_eq!(entries[1]["details"]["backups"], json!([id]));
    // The replica's trail is the source's, and verify there finds nothing wrong with it.
    let source_log = c.repo.json(&["log"]);
    assert_eq!(source_log["entries"], log["entries"]);
    ok(&at_replica(&["verify", "--all"]));

    // A trail written to at the replica and not at the source is refused, not merged.
    edit_json(
        &Path::new(replica).join("audit/00000000000000000002.json"),
        |v| v["host"] = json!("elsewhere"),
    );
    let err = fails(&c.repo.run(&["replicate", "--to", replica, "--all"]), 5);
    assert!(one_line(&err).contains("audit entry"), "{err}");
}

#[test]
fn drctl_rotates_the_administrative_key_and_pinned_hosts_follow_the_handover() {
    let c = Cli::new();
    let id = c.backup();
    ok(&c.repo.run(&["pin", &id]));
    let key = c.repo.key.to_str().unwrap().to_owned();
    // Another host, which pins the current administrative key at first use.
    let other_trust = c.repo.path().join("other-host-trust");
    let other_trust = other_trust.to_str().unwrap();
    let on_other_host = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--repo", &c.repo.url]);
        drctl(
            &all,
            &[
                ("DR_KEY_FILE", key.as_str()),
                ("DR_TRUST_DIR", other_trust),
                ("DR_SIGNING_KEY", ""),
            ],
        )
    };
    ok(&on_other_host(&["list"]));

    let new_key = c.repo.path().join("new-admin.key");
    ok(&drctl(
        &["keygen", "--signing", "--output", new_key.to_str().unwrap()],
        &[],
    ));
    let out = c.repo.run(&[
        "--json",
        "repo",
        "rotate-admin",
        "--new-signing-key",
        new_key.to_str().unwrap(),
    ]);
    ok(&out);
    let rotation: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rotation["rotation"]["resigned"], json!(1), "{rotation}");

    // The other host follows the handover: it still lists the (re-signed) backup, and its
    // pin now names the new key.
    let out = on_other_host(&["--json", "list"]);
    ok(&out);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["id"], json!(id), "{listed}");
    let pins: Vec<_> = std::fs::read_dir(other_trust).unwrap().collect();
    assert_eq!(pins.len(), 1);
    let pin: Value =
        serde_json::from_slice(&std::fs::read(pins[0].as_ref().unwrap().path()).unwrap()).unwrap();
    let pinned = dr::core::signing::PublicKey::parse(pin["admin_key"].as_str().unwrap()).unwrap();
    assert_eq!(json!(pinned.key_id()), rotation["rotation"]["to"]);

    // The trail, with entries signed by the old key before the handover, still verifies.
    ok(&c.repo.run(&["verify", "--all"]));
    let log = c.repo.json(&["log"]);
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["pin", "state", "admin-handover"], "{log}");

    // The old key can no longer change the repository; the new one can.
    let err = fails(&c.repo.run(&["retention", "set", "--keep-last", "3"]), 4);
    assert!(one_line(&err).contains("administrative key"), "{err}");
    let with_new_key = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--repo", &c.repo.url]);
        drctl(
            &all,
            &[
                ("DR_KEY_FILE", key.as_str()),
                ("DR_SIGNING_KEY", new_key.to_str().unwrap()),
            ],
        )
    };
    ok(&with_new_key(&["retention", "set", "--keep-last", "3"]));
    ok(&with_new_key(&["backup", "--dir", c.src.to_str().unwrap()]));
    ok(&on_other_host(&["verify", "--all"]));
}
