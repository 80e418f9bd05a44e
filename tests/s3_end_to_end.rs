//! drctl end to end through S3: a real throwaway PostgreSQL, moto's S3 server on 127.0.0.1
//! (started by each test; see `dr_storage::testing::MotoServer`), and the real binary
//! configured the way users configure it: AWS_* environment variables or `--storage-opt`.

mod common;

use common::*;
use dr::storage::testing::{unique_name, HeaderShim, MotoServer};

/// An `s3://` repository on a fresh bucket of a running moto, with a fresh key.
struct S3Repo {
    s3: MotoServer,
    /// Where drctl sends its requests when not straight to moto (see [`S3Repo::locked`]).
    shim: Option<HeaderShim>,
    bucket: String,
    url: String,
    key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl S3Repo {
    async fn new() -> S3Repo {
        S3Repo::with_bucket(None).await
    }

    /// A repository in a bucket with Object Lock on and `days` of compliance-mode default
    /// retention, reached through [`HeaderShim`] (moto's checksum-header requirement).
    async fn locked(days: u32) -> S3Repo {
        S3Repo::with_bucket(Some(days)).await
    }

    async fn with_bucket(lock_days: Option<u32>) -> S3Repo {
        let s3 = MotoServer::start()
            .await
            .unwrap_or_else(|e| panic!("{}", e.report()));
        let bucket = unique_name("dr-e2e");
        let shim = match lock_days {
            None => {
                s3.create_bucket(&bucket).await.unwrap();
                None
            }
            Some(days) => {
                s3.create_locked_bucket(&bucket, days).await.unwrap();
                let shim =
                    HeaderShim::start(&s3.endpoint(), "x-amz-sdk-checksum-algorithm", "SHA256");
                Some(shim.unwrap())
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("repo.key");
        ok(&drctl(&["keygen", "--output", key.to_str().unwrap()], &[]));
        S3Repo {
            url: format!("s3://{bucket}/prod/db"),
            s3,
            shim,
            bucket,
            key,
            _dir: dir,
        }
    }

    /// Run drctl with `--repo` and the AWS settings in the environment.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--repo", &self.url]);
        let mut env = self.s3.env();
        if let Some(shim) = &self.shim {
            for (k, v) in env.iter_mut() {
                if k == "AWS_ENDPOINT_URL" {
                    *v = shim.endpoint();
                }
            }
            // What S3 accepts on a PUT into a locked bucket (see HeaderShim).
            env.push(("AWS_CHECKSUM_ALGORITHM".into(), "SHA256".into()));
        }
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push(("DR_KEY_FILE", self.key.to_str().unwrap()));
        drctl(&all, &env)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        ok(&out);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `drctl init` configured with `--storage-opt` only (no AWS_* variables at all).
    fn init_with_storage_opts(&self, extra: &[&str]) {
        let opts: Vec<String> = self
            .s3
            .options()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut args = vec!["init", "--repo", &self.url];
        for o in &opts {
            args.extend(["--storage-opt", o.as_str()]);
        }
        args.extend_from_slice(extra);
        ok(&drctl(
            &args,
            &[("DR_KEY_FILE", self.key.to_str().unwrap())],
        ));
    }

    async fn payload_class(&self, id: &str) -> String {
        self.s3
            .storage_class(&self.bucket, &format!("prod/db/backups/{id}/payload-0000"))
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_list_verify_restore_through_s3() {
    let cluster = cluster_with_sample(1).await;
    let repo = S3Repo::new().await;
    repo.init_with_storage_opts(&[]);
    // A second init on the same prefix is refused (create-if-absent on S3).
    fails(&repo.run(&["init"]), 6);

    let backup = repo.json(&["backup", "--db", &cluster.url("app"), "--label", "s3"]);
    let id = backup["id"].as_str().unwrap().to_string();
    assert!(backup["stored_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        backup["upload_memory_budget_bytes"],
        32 << 20,
        "8 MiB parts × (3 in flight + 1)"
    );
    assert_eq!(repo.payload_class(&id).await, "STANDARD");

    let list = repo.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());

    let verified = repo.json(&["verify", &id]);
    assert_eq!(verified[0]["ok"], true, "{verified}");

    let restored = repo.json(&[
        "restore",
        "latest",
        "--db",
        &cluster.url("copy"),
        "--create",
    ]);
    assert_eq!(restored["id"], id.as_str());
    assert_same_sample(&cluster, "app", "copy").await;
    assert!(
        repo.s3
            .pending_uploads(&repo.bucket)
            .await
            .unwrap()
            .is_empty(),
        "no multipart upload left open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glacier_backup_lists_but_restore_fails_with_the_thaw_message() {
    let cluster = cluster_with_sample(1).await;
    let repo = S3Repo::new().await;
    // The repository default is an infrequent-access class; one backup overrides it.
    repo.init_with_storage_opts(&["--storage-class", "STANDARD_IA"]);
    let ia = repo.json(&["backup", "--db", &cluster.url("app")]);
    let ia_id = ia["id"].as_str().unwrap().to_string();
    assert_eq!(repo.payload_class(&ia_id).await, "STANDARD_IA");

    let cold = repo.json(&[
        "backup",
        "--db",
        &cluster.url("app"),
        "--storage-class",
        "GLACIER",
        "--storage-opt",
        "part_size=16MiB",
    ]);
    let cold_id = cold["id"].as_str().unwrap().to_string();
    assert_eq!(cold["upload_memory_budget_bytes"], 64 << 20);
    assert_eq!(repo.payload_class(&cold_id).await, "GLACIER");

    // Manifests stay in the default class: the archived backup is listed.
    assert_eq!(repo.json(&["list"]).as_array().unwrap().len(), 2);

    let out = repo.run(&[
        "restore",
        &cold_id,
        "--db",
        &cluster.url("thawed"),
        "--create",
    ]);
    let err = fails(&out, 9);
    assert!(err.contains("archived"), "{err}");
    assert!(err.contains("GLACIER"), "{err}");
    assert!(err.contains("restored (thawed)"), "{err}");
    assert!(!err.to_lowercase().contains("permission"), "{err}");
    assert!(
        !database_exists(&cluster, "thawed").await,
        "nothing was created"
    );

    let err = fails(&repo.run(&["verify", &cold_id]), 9);
    assert!(err.contains("GLACIER"), "{err}");

    // The infrequent-access backup restores at once.
    repo.json(&["restore", &ia_id, "--db", &cluster.url("warm"), "--create"]);
    assert_eq!(
        count(&cluster, "warm", "QrCodeScan").await,
        count(&cluster, "app", "QrCodeScan").await
    );
}

/// The runbook's ransomware defence: a bucket with S3 Object Lock (compliance mode, default
/// retention) holds the repository. dr backs up, lists, verifies and restores through it;
/// every object it writes is locked, so nobody holding the bucket's credentials can destroy a
/// version; and with the lock recorded at `init --object-lock-days`, prune does not plan a
/// deletion the lock would refuse, and says why it kept each backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_bucket_backs_up_restores_and_plans_no_deletion_the_lock_refuses() {
    let cluster = cluster_with_sample(1).await;
    let repo = S3Repo::locked(1).await;
    ok(&repo.run(&["init", "--object-lock-days", "1"]));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let backup = repo.json(&["backup", "--db", &cluster.url("app")]);
        ids.push(backup["id"].as_str().unwrap().to_string());
    }
    assert_eq!(repo.json(&["list"]).as_array().unwrap().len(), 2);
    let verified = repo.json(&["verify", "--all"]);
    assert!(verified.to_string().contains("\"ok\":true"), "{verified}");

    // What dr wrote carries the bucket's lock; a version cannot be deleted. (moto applies
    // default retention to single PUTs only, not to completed multipart uploads as S3 does,
    // so the payload's lock is not visible here; its deletion is guarded the same way.)
    for key in [
        format!("prod/db/backups/{}/manifest.json", ids[0]),
        "prod/db/dr-repo.json".to_string(),
    ] {
        let (mode, until, version) = repo
            .s3
            .object_lock(&repo.bucket, &key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{key} is not locked"));
        assert_eq!(mode, "COMPLIANCE", "{key}");
        assert!(!until.is_empty(), "{key} has no retain-until date");
        let status = repo
            .s3
            .delete_version(&repo.bucket, &key, &version)
            .await
            .unwrap();
        assert_eq!(
            status, 403,
            "deleting a locked version of {key} was not refused"
        );
    }

    // Retention would delete the older backup, but the lock holds it for a day: prune
    // plans nothing and names the lock as the reason.
    let pruned = repo.json(&["prune", "--keep-last", "1"]);
    let text = pruned.to_string();
    assert!(text.contains("object lock (1 day)"), "{pruned}");
    assert_eq!(repo.json(&["list"]).as_array().unwrap().len(), 2);

    let restored = repo.json(&[
        "restore",
        "latest",
        "--db",
        &cluster.url("copy"),
        "--create",
    ]);
    assert_eq!(restored["id"], ids[1].as_str());
    assert_same_sample(&cluster, "app", "copy").await;
}

#[test]
fn storage_option_typos_fail_with_exit_2_naming_the_key_only() {
    let out = drctl(
        &[
            "list",
            "--repo",
            "s3://bucket/prefix",
            "--storage-opt",
            "secret_acess_key=hunter2",
        ],
        &[],
    );
    let err = fails(&out, 2);
    assert!(err.contains("secret_acess_key"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = fails(
        &drctl(
            &[
                "list",
                "--repo",
                "s3://bucket/p",
                "--storage-opt",
                "hunter2",
            ],
            &[],
        ),
        2,
    );
    assert!(!err.contains("hunter2"), "{err}");
}
