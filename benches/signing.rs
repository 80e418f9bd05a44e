//! What authenticated repositories cost (issue 12): signing and checking one manifest, and
//! listing a repository of signed manifests against the same repository unsigned.
//!
//! `cargo bench --bench signing`. The manifests are real ones: small backups taken through
//! the real pipeline into an in-memory store, so their JSON has the shape and size of a
//! production manifest (objects, checksums, series, labels).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dr::core::signing::{sign_manifest, verify_manifest, SigningKey};
use dr::core::{BackupOptions, BufferDumper, RepoConfig, RepoDefaults, Repository};
use dr::storage::ObjectStoreTarget;

/// Manifests per repository in the listing bench: a year of daily backups.
const BACKUPS: usize = 365;

fn defaults() -> RepoDefaults {
    RepoDefaults {
        compression: "zstd:1".parse().unwrap(),
        encryption: dr::crypto::SCHEME.into(),
        cipher: "aes-256-gcm".into(),
        storage_class: None,
    }
}

/// A repository holding `BACKUPS` small backups, signed by `admin` when given.
async fn repository(admin: Option<Arc<SigningKey>>) -> Repository {
    let storage = Arc::new(ObjectStoreTarget::memory());
    let config = RepoConfig::new(defaults(), vec![]).unwrap();
    let repo = match admin {
        Some(key) => Repository::init_signed(storage, config, key).await.unwrap(),
        None => Repository::init(storage, config).await.unwrap(),
    };
    let key = dr::crypto::MasterKey::generate().unwrap();
    let enc = dr::keys::encryptor(&repo, key).unwrap();
    let source = BufferDumper::new(vec![7u8; 4096]).named("bench");
    for _ in 0..BACKUPS {
        dr::core::backup(&repo, &source, &enc, &BackupOptions::default())
            .await
            .unwrap();
    }
    repo
}

fn one_manifest(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = Arc::new(SigningKey::from_seed(&[9u8; 32]).unwrap());
    let repo = rt.block_on(repository(Some(admin.clone())));
    let manifest = rt.block_on(repo.list_backups()).unwrap().remove(0);
    let repo_id = repo.config().repository_id.clone();
    let value = serde_json::to_value(&manifest).unwrap();
    let allowed = [admin.public_key().clone()];
    let mut g = c.benchmark_group("manifest_signature");
    g.bench_function("sign", |b| {
        b.iter(|| sign_manifest(&admin, &repo_id, &value))
    });
    g.bench_function("verify", |b| {
        b.iter(|| verify_manifest(&allowed, &repo_id, &value).unwrap())
    });
    g.finish();
}

fn listing(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = Arc::new(SigningKey::from_seed(&[9u8; 32]).unwrap());
    let signed = rt.block_on(repository(Some(admin)));
    let unsigned = rt.block_on(repository(None));
    let mut g = c.benchmark_group("list_backups");
    g.sample_size(20);
    for (name, repo) in [("unsigned", &unsigned), ("signed", &signed)] {
        g.bench_function(BenchmarkId::new(name, BACKUPS), |b| {
            b.to_async(&rt).iter(|| async {
                let all = repo.list_backups().await.unwrap();
                assert_eq!(all.len(), BACKUPS);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, one_manifest, listing);
criterion_main!(benches);
