//! drctl with deduplicated directory snapshots: backup --dedup and its JSON report, ls,
//! cat --file, restore --include/--exclude, verify of packs, prune of packs, and a
//! write-only host that deduplicates with an exported dedup key.

mod common;

use common::{drctl, fails, ok, Repo};

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

fn uploads(root: &std::path::Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("customer-{:02}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("qr-{i}.png")), noise(20_000 + i, i as u64)).unwrap();
    }
}

#[test]
fn dedup_snapshots_back_up_incrementally_and_restore_what_is_asked() {
    let repo = Repo::new();
    let src = repo.path().join("uploads");
    uploads(&src, 100);
    let dir = src.to_str().unwrap();

    let first = repo.json(&["backup", "--dir", dir, "--dedup"]);
    assert_eq!(first["source"]["format"], "dr-files-v1");
    assert_eq!(first["files"]["files_read"], 100, "{first}");
    let changed = noise(25_000, 999);
    std::fs::write(src.join("customer-03/qr-3.png"), &changed).unwrap();
    let path = src.join("customer-03/qr-3.png");
    let t =
        std::fs::metadata(&path).unwrap().modified().unwrap() + std::time::Duration::from_secs(2);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(t)
        .unwrap();
    let second = repo.json(&["backup", "--dir", dir, "--dedup"]);
    let files = &second["files"];
    assert_eq!(
        (
            files["files_read"].as_u64(),
            files["files_unchanged"].as_u64()
        ),
        (Some(1), Some(99)),
        "{second}"
    );
    assert_eq!(files["bytes_new"], changed.len() as u64);
    assert!(files["bytes_stored"].as_u64().unwrap() < 40_000, "{second}");
    let id = second["id"].as_str().unwrap();

    let listing = repo.json(&["ls", id, "customer-03"]);
    assert_eq!(
        listing.as_array().unwrap().len(),
        11,
        "the folder and its 10 files: {listing}"
    );
    let out = repo.run(&["cat", id, "--file", "customer-03/qr-3.png"]);
    ok(&out);
    assert_eq!(out.stdout, changed);

    let target = repo.path().join("restored");
    let report = repo.json(&[
        "restore",
        "latest",
        "--dir",
        target.to_str().unwrap(),
        "--include",
        "customer-03",
        "--exclude",
        "**/qr-13.png",
    ]);
    assert_eq!(report["files"], 9, "{report}");
    assert_eq!(
        std::fs::read(target.join("customer-03/qr-3.png")).unwrap(),
        changed
    );
    assert!(!target.join("customer-03/qr-13.png").exists());
    assert!(!target.join("customer-04").exists());

    let verified = repo.json(&["verify", "--all"]);
    let packs = verified
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "file packs")
        .unwrap();
    assert_eq!(packs["ok"], true, "{verified}");

    // 60 files go; retention keeps only the newest snapshot, so most of the first pack is
    // needed by nobody: it is repacked, and the newest snapshot still restores equal.
    for i in 40..100 {
        std::fs::remove_file(src.join(format!("customer-{:02}/qr-{i}.png", i % 10))).unwrap();
    }
    let third = repo.json(&["backup", "--dir", dir, "--dedup"]);
    assert_eq!(third["files"]["chunks_new"], 0, "{third}");
    let id = third["id"].as_str().unwrap();
    let pruned = repo.json(&["prune", "--keep-last", "1", "--incomplete-grace", "0h"]);
    let file_packs = pruned
        .as_array()
        .unwrap()
        .iter()
        .find_map(|r| r.get("file_packs"))
        .unwrap();
    assert!(
        file_packs["chunks_removed"].as_u64().unwrap() >= 60,
        "{pruned}"
    );
    assert_eq!(file_packs["packs_repacked"], 1, "{pruned}");
    let whole = repo.path().join("whole");
    repo.json(&["restore", id, "--dir", whole.to_str().unwrap()]);
    for i in 0..100 {
        let rel = format!("customer-{:02}/qr-{i}.png", i % 10);
        if i < 40 {
            assert_eq!(
                std::fs::read(src.join(&rel)).unwrap(),
                std::fs::read(whole.join(&rel)).unwrap(),
                "{rel}"
            );
        } else {
            assert!(!whole.join(&rel).exists(), "{rel}");
        }
    }

    // A damaged pack fails verify, naming a file it holds.
    let pack_dir = std::path::Path::new(&repo.url).join("files/packs");
    for pack in std::fs::read_dir(&pack_dir).unwrap() {
        let pack = pack.unwrap().path();
        let mut bytes = std::fs::read(&pack).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        std::fs::write(&pack, bytes).unwrap();
    }
    let out = repo.run(&["--json", "verify", id]);
    assert_eq!(out.status.code(), Some(5));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packs = report
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "file packs")
        .unwrap();
    assert_eq!(packs["ok"], false);
    let problems = packs["report"]["problems"].to_string();
    assert!(
        problems.contains("SHA-256") && problems.contains("qr-"),
        "{problems}"
    );
    let err = fails(
        &repo.run(&[
            "restore",
            id,
            "--dir",
            repo.path().join("broken").to_str().unwrap(),
        ]),
        5,
    );
    assert!(
        err.contains("files affected") && err.contains("qr-"),
        "{err}"
    );
}

#[test]
fn a_write_only_host_deduplicates_with_the_exported_dedup_key() {
    let repo = Repo::new();
    let src = repo.path().join("uploads");
    uploads(&src, 20);
    let dir = src.to_str().unwrap();
    repo.json(&["backup", "--dir", dir, "--dedup"]);
    let key_file = repo.path().join("dedup.key");
    repo.json(&["dedup-key", "-o", key_file.to_str().unwrap()]);

    // The same files on a host that holds only the public recipient.
    let other = repo.path().join("other");
    uploads(&other, 20);
    let write_only = |extra: &[(&str, &str)]| {
        let mut env = vec![("DR_KEY_FILE", "")];
        env.extend_from_slice(extra);
        drctl(
            &[
                "--json",
                "backup",
                "--dir",
                other.to_str().unwrap(),
                "--dedup",
                "--repo",
                &repo.url,
            ],
            &env,
        )
    };
    let err = fails(&write_only(&[]), 4);
    assert!(err.contains("drctl dedup-key"), "{err}");
    let out = write_only(&[("DR_DEDUP_KEY_FILE", key_file.to_str().unwrap())]);
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["files"]["files_read"], 20, "{report}");
    assert_eq!(
        report["files"]["chunks_new"], 0,
        "every chunk was stored by the first host: {report}"
    );
    // The key holder restores what the write-only host stored.
    let target = repo.path().join("restored");
    repo.json(&[
        "restore",
        report["id"].as_str().unwrap(),
        "--dir",
        target.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(target.join("customer-07/qr-7.png")).unwrap(),
        std::fs::read(other.join("customer-07/qr-7.png")).unwrap()
    );
}

#[test]
fn key_rotation_rewraps_packs_so_the_new_key_restores_snapshots() {
    let repo = Repo::new();
    let src = repo.path().join("uploads");
    uploads(&src, 10);
    let snapshot = repo.json(&["backup", "--dir", src.to_str().unwrap(), "--dedup"]);
    let id = snapshot["id"].as_str().unwrap();
    let packs: Vec<_> = std::fs::read_dir(std::path::Path::new(&repo.url).join("files/packs"))
        .unwrap()
        .map(|p| std::fs::read(p.unwrap().path()).unwrap())
        .collect();

    let new_key = repo.path().join("new.key");
    let new_pub =
        String::from_utf8(drctl(&["keygen", "-o", new_key.to_str().unwrap()], &[]).stdout).unwrap();
    ok(&repo.run(&["key", "rotate", "--new-recipient", new_pub.trim()]));
    let after: Vec<_> = std::fs::read_dir(std::path::Path::new(&repo.url).join("files/packs"))
        .unwrap()
        .map(|p| std::fs::read(p.unwrap().path()).unwrap())
        .collect();
    assert_eq!(
        packs, after,
        "packs keep their bytes: only indexes are re-wrapped"
    );

    let as_new = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--repo", &repo.url]);
        drctl(&all, &[("DR_KEY_FILE", new_key.to_str().unwrap())])
    };
    let target = repo.path().join("restored");
    ok(&as_new(&["restore", id, "--dir", target.to_str().unwrap()]));
    assert_eq!(
        std::fs::read(target.join("customer-05/qr-5.png")).unwrap(),
        std::fs::read(src.join("customer-05/qr-5.png")).unwrap()
    );
    // The new key also reads the dedup key: the next backup is incremental.
    let next = as_new(&[
        "--json",
        "backup",
        "--dir",
        src.to_str().unwrap(),
        "--dedup",
    ]);
    ok(&next);
    let next: serde_json::Value = serde_json::from_slice(&next.stdout).unwrap();
    assert_eq!(next["files"]["files_unchanged"], 10, "{next}");
    // The revoked key opens nothing any more.
    let err = fails(
        &repo.run(&[
            "restore",
            id,
            "--dir",
            repo.path().join("old").to_str().unwrap(),
        ]),
        4,
    );
    assert!(!err.is_empty());
}

#[tokio::test]
async fn dedup_snapshots_round_trip_through_s3_with_their_storage_class() {
    use dr::storage::testing::{unique_name, MotoServer};
    let s3 = MotoServer::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    let bucket = unique_name("dr-files");
    s3.create_bucket(&bucket).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("repo.key");
    ok(&drctl(&["keygen", "--output", key.to_str().unwrap()], &[]));
    let url = format!("s3://{bucket}/uploads-repo");
    let env = s3.env();
    let run = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        all.extend(["--repo", &url]);
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push(("DR_KEY_FILE", key.to_str().unwrap()));
        let out = drctl(&all, &env);
        ok(&out);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    run(&["init"]);
    let src = dir.path().join("uploads");
    uploads(&src, 30);
    let first = run(&[
        "backup",
        "--dir",
        src.to_str().unwrap(),
        "--dedup",
        "--storage-class",
        "STANDARD_IA",
    ]);
    assert_eq!(first["files"]["files_read"], 30, "{first}");
    let second = run(&["backup", "--dir", src.to_str().unwrap(), "--dedup"]);
    assert_eq!(
        (
            second["files"]["files_unchanged"].as_u64(),
            second["files"]["packs_new"].as_u64()
        ),
        (Some(30), Some(0)),
        "{second}"
    );

    let storage = dr::storage::open(
        &url,
        &s3.options()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    use dr::core::StorageTarget;
    let packs = storage.list("files/packs/").await.unwrap();
    assert_eq!(packs.len(), 1);
    let class = s3
        .storage_class(&bucket, &format!("uploads-repo/{}", packs[0].path))
        .await
        .unwrap();
    assert_eq!(
        class, "STANDARD_IA",
        "packs take the backup's storage class"
    );

    let target = dir.path().join("restored");
    run(&[
        "restore",
        second["id"].as_str().unwrap(),
        "--dir",
        target.to_str().unwrap(),
    ]);
    for i in 0..30 {
        let rel = format!("customer-{:02}/qr-{i}.png", i % 10);
        assert_eq!(
            std::fs::read(src.join(&rel)).unwrap(),
            std::fs::read(target.join(&rel)).unwrap(),
            "{rel}"
        );
    }
    let verified = run(&["verify", "--all"]);
    assert!(
        verified.as_array().unwrap().iter().all(|r| r["ok"] == true),
        "{verified}"
    );
}

#[test]
fn a_dr_toml_job_with_dedup_takes_incremental_snapshots() {
    let repo = Repo::new();
    let src = repo.path().join("uploads");
    uploads(&src, 12);
    let config = repo.path().join("dr.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"{}\"\n\n[key]\nfile = \"repo.key\"\n\n[jobs.uploads]\nkind = \"backup\"\ndir = \"uploads\"\ndedup = true\nlabels = [\"uploads\"]\n",
            repo.url
        ),
    )
    .unwrap();
    let run = || {
        let out = drctl(
            &[
                "--json",
                "run",
                "--config",
                config.to_str().unwrap(),
                "--once",
                "uploads",
            ],
            &[],
        );
        ok(&out);
        let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        outcomes[0]["summary"]["figures"].clone()
    };
    assert_eq!(run()["files_read"], 12);
    let second = run();
    assert_eq!(
        (
            second["files_read"].as_u64(),
            second["files_unchanged"].as_u64()
        ),
        (Some(0), Some(12)),
        "{second}"
    );
    let listing = repo.json(&["ls", second["backup_id"].as_str().unwrap()]);
    assert_eq!(
        listing.as_array().unwrap().len(),
        22,
        "10 folders and 12 files: {listing}"
    );
}

/// Objects of an awkward bucket tree: 0-byte objects, a folder marker with content under
/// it, Unicode and line-separator keys, characters URLs escape, a deep key, a multi-chunk
/// object, and 200 uploads (so that 1 % is 2 objects).
fn awkward_objects() -> Vec<(String, Vec<u8>)> {
    let mut objects: Vec<(String, Vec<u8>)> = vec![
        ("empty.bin".into(), vec![]),
        ("folder".into(), vec![]),
        (
            "folder/inside.txt".into(),
            b"under a folder marker\n".to_vec(),
        ),
        ("naïve/日本語/ファイル.png".into(), noise(3_000, 1)),
        ("line\u{2028}separator.txt".into(), b"U+2028".to_vec()),
        ("para\u{2029}graph/x.json".into(), b"{\"p\":1}".to_vec()),
        (
            "spaces and %2F + #?&=.json".into(),
            b"{\"odd\":true}".to_vec(),
        ),
        ("a/b/c/d/e/f/g/h/i/j/k/l/deep.json".into(), b"{}".to_vec()),
        ("big/scan.tiff".into(), noise(3 << 20, 7)),
    ];
    for i in 0..200 {
        objects.push((
            format!("uploads/customer-{:02}/qr-{i}.png", i % 10),
            noise(5_000 + i, 100 + i as u64),
        ));
    }
    objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_prefix_round_trips_and_backs_up_incrementally() {
    use dr::core::{PutOptions, StorageExt, StorageTarget};
    use dr::storage::testing::{unique_name, MotoServer};
    use std::collections::BTreeMap;

    let s3 = MotoServer::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    let bucket = unique_name("dr-bucket-src");
    s3.create_bucket(&bucket).await.unwrap();
    let options = s3.options();
    let open =
        |prefix: &str| dr::storage::open(&format!("s3://{bucket}/{prefix}"), &options).unwrap();
    let source = open("qr/prod");
    for (key, body) in awkward_objects() {
        source
            .put_bytes(&key, body.into(), PutOptions::default())
            .await
            .unwrap();
    }
    // Every object under a prefix, by key.
    let contents = |store: dr::storage::ObjectStoreTarget| async move {
        let mut all = BTreeMap::new();
        for o in store.list("").await.unwrap() {
            all.insert(
                o.path.clone(),
                store.get_bytes(&o.path).await.unwrap().to_vec(),
            );
        }
        all
    };

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("repo.key");
    ok(&drctl(&["keygen", "--output", key.to_str().unwrap()], &[]));
    let repo = format!("s3://{bucket}/dr-repo");
    let env = s3.env();
    let run = |args: &[&str]| {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        all.extend(["--repo", &repo]);
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push(("DR_KEY_FILE", key.to_str().unwrap()));
        drctl(&all, &env)
    };
    let json = |args: &[&str]| {
        let out = run(args);
        ok(&out);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    json(&["init"]);
    let src_url = format!("s3://{bucket}/qr/prod/");
    let first = json(&["backup", "--dir", &src_url, "--dedup"]);
    let total = awkward_objects().len() as u64 - 1; // the folder marker is a directory
    assert_eq!(first["files"]["files_read"], total, "{first}");
    assert_eq!(first["source"]["name"], format!("s3://{bucket}/qr/prod"));

    // Into another prefix: the same keys and bytes, the folder marker implied by its content.
    let copy_url = format!("s3://{bucket}/qr/copy/");
    let restored = json(&["restore", "latest", "--to", &copy_url]);
    assert_eq!(restored["files"], total, "{restored}");
    let mut want = contents(open("qr/prod")).await;
    want.remove("folder");
    assert_eq!(contents(open("qr/copy")).await, want);
    let again = run(&["restore", "latest", "--to", &copy_url]);
    assert!(
        fails(&again, 6).contains("--replace"),
        "a prefix with objects is not overwritten unasked"
    );

    // Into a directory: the same files, the folder marker a directory.
    let target = dir.path().join("restored");
    json(&["restore", "latest", "--dir", target.to_str().unwrap()]);
    for (k, body) in &want {
        assert_eq!(&std::fs::read(target.join(k)).unwrap(), body, "{k:?}");
    }
    assert!(target.join("folder").is_dir());

    // 1 % of the objects change: only they are read.
    let changed = [
        "uploads/customer-03/qr-3.png",
        "uploads/customer-07/qr-117.png",
    ];
    for (n, k) in changed.iter().enumerate() {
        source
            .put_bytes(
                k,
                noise(6_000, 900 + n as u64).into(),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    let second = json(&["backup", "--dir", &src_url, "--dedup"]);
    let files = &second["files"];
    assert_eq!(
        (
            files["files_read"].as_u64(),
            files["files_unchanged"].as_u64(),
            files["bytes_read"].as_u64()
        ),
        (Some(2), Some(total - 2), Some(12_000)),
        "{second}"
    );
    let copy2 = format!("s3://{bucket}/qr/copy2/");
    json(&["restore", "latest", "--to", &copy2]);
    let mut want = contents(open("qr/prod")).await;
    want.remove("folder");
    assert_eq!(contents(open("qr/copy2")).await, want);

    // A dr.toml job backs the prefix up with its own storage class.
    let config = dir.path().join("dr.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"{repo}\"\n\n[key]\nfile = \"repo.key\"\n\n[jobs.qr-images]\nkind = \"backup\"\ndir = \"{src_url}\"\ndedup = true\nstorage_class = \"GLACIER\"\n"
        ),
    )
    .unwrap();
    source
        .put_bytes(
            "uploads/new.png",
            noise(9_000, 4242).into(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let packs_before = pack_names(&open("dr-repo")).await;
    let mut env_pairs: Vec<(&str, &str)> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env_pairs.push(("DR_KEY_FILE", key.to_str().unwrap()));
    let out = drctl(
        &[
            "--json",
            "run",
            "--config",
            config.to_str().unwrap(),
            "--once",
            "qr-images",
        ],
        &env_pairs,
    );
    ok(&out);
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let figures = &outcome[0]["summary"]["figures"];
    assert_eq!(
        (
            figures["files_read"].as_u64(),
            figures["files_unchanged"].as_u64()
        ),
        (Some(1), Some(total)),
        "{outcome}"
    );
    let packs_after = pack_names(&open("dr-repo")).await;
    let new: Vec<&String> = packs_after.difference(&packs_before).collect();
    assert_eq!(new.len(), 1, "{outcome}");
    assert_eq!(
        s3.storage_class(&bucket, &format!("dr-repo/{}", new[0]))
            .await
            .unwrap(),
        "GLACIER",
        "the job's packs take its storage class"
    );
}

async fn pack_names(store: &dr::storage::ObjectStoreTarget) -> std::collections::HashSet<String> {
    use dr::core::StorageTarget;
    store
        .list("files/packs/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect()
}
