//! Throughput of the pipeline's parts and of the whole backup pipeline, in bytes per second.
//!
//! `cargo bench --bench pipeline`. The input is [`dr::bench::synthetic_dump`] (COPY rows with
//! hex bytea and repeated user agents), so compression ratios resemble a real pg_dump; the
//! whole-pipeline bench runs the real backup into [`dr::bench::DiscardTarget`], as
//! `drctl bench pipeline` does. For figures on your own data, use that command.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dr::bench::{synthetic_dump, DiscardTarget};
use dr::core::{
    BackupOptions, BufferDumper, Codec, Encryptor, RepoConfig, RepoDefaults, Repository, Transform,
};

const SIZE: usize = 32 << 20;

fn run(t: &mut dyn Transform, data: &[u8]) -> usize {
    let mut out = Vec::with_capacity(data.len());
    let mut n = 0;
    for chunk in data.chunks(1 << 20) {
        t.update(chunk, &mut out).unwrap();
        n += out.len();
        out.clear();
    }
    t.finish(&mut out).unwrap();
    n + out.len()
}

fn codecs(c: &mut Criterion) {
    let data = synthetic_dump(SIZE);
    let mut g = c.benchmark_group("compress");
    g.throughput(Throughput::Bytes(SIZE as u64)).sample_size(10);
    for codec in ["zstd:1", "zstd:3", "gzip:1", "gzip:6"] {
        let codec: Codec = codec.parse().unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(codec), &data, |b, d| {
            b.iter(|| run(codec.encoder().unwrap().as_mut(), d))
        });
    }
    g.finish();
}

fn ciphers(c: &mut Criterion) {
    let data = synthetic_dump(SIZE);
    let key = dr::crypto::MasterKey::generate().unwrap();
    let mut g = c.benchmark_group("encrypt");
    g.throughput(Throughput::Bytes(SIZE as u64)).sample_size(10);
    for cipher in [
        dr::crypto::Cipher::Aes256Gcm,
        dr::crypto::Cipher::ChaCha20Poly1305,
    ] {
        let enc = dr::crypto::AeadEncryptor::new(cipher, vec![key.clone()]).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(cipher), &data, |b, d| {
            b.iter(|| run(enc.encrypt_stream().unwrap().1.as_mut(), d))
        });
    }
    g.finish();
}

fn whole_pipeline(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let source = BufferDumper::new(synthetic_dump(SIZE))
        .named("bench")
        .chunk_bytes(1 << 20);
    let key = dr::crypto::MasterKey::generate().unwrap();
    let mut g = c.benchmark_group("backup_pipeline");
    g.throughput(Throughput::Bytes(SIZE as u64)).sample_size(10);
    for codec in ["zstd:1", "zstd:3"] {
        let defaults = RepoDefaults {
            compression: codec.parse().unwrap(),
            encryption: dr::crypto::SCHEME.into(),
            cipher: "aes-256-gcm".into(),
            storage_class: None,
        };
        // The payload goes to a target that discards it: the pipeline's cost, not a store's.
        g.bench_function(BenchmarkId::new("discard", codec), |b| {
            b.to_async(&rt).iter(|| async {
                let storage = std::sync::Arc::new(DiscardTarget::new());
                let repo =
                    Repository::init(storage, RepoConfig::new(defaults.clone(), vec![]).unwrap())
                        .await
                        .unwrap();
                let enc = dr::keys::encryptor(&repo, key.clone()).unwrap();
                dr::core::backup(&repo, &source, &enc, &BackupOptions::default())
                    .await
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codecs, ciphers, whole_pipeline);
criterion_main!(benches);
