//! Throughput of the pipeline's parts and of the whole backup pipeline, in bytes per second.
//!
//! `cargo bench --bench pipeline`. The input is synthetic dump-like text (COPY rows with hex
//! bytea and repeated user agents), so compression ratios resemble a real pg_dump.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dr::core::{
    BackupOptions, BufferDumper, Codec, Encryptor, RepoConfig, RepoDefaults, Repository, Transform,
};

const SIZE: usize = 32 << 20;

/// Dump-like text: rows of ids, timestamps, user agents and random hex.
fn sample(len: usize) -> Bytes {
    let agents = [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/124.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0 Safari/537.36",
    ];
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::with_capacity(len + 4096);
    let mut i = 0u64;
    while out.len() < len {
        i += 1;
        let r = next();
        out.push_str(&format!(
            "{i}\t{:08x}-4e1f-9a2b-{:012x}\t2024-03-{:02} 12:{:02}:{:02}+00\t10.{}.{}.{}\t{}\t",
            r as u32,
            r >> 16 & 0xffff_ffff_ffff,
            1 + r % 28,
            r % 60,
            (r >> 8) % 60,
            r % 256,
            (r >> 8) % 256,
            (r >> 16) % 256,
            agents[(r % 3) as usize]
        ));
        if i % 4 == 0 {
            out.push_str("\\\\x");
            for _ in 0..64 {
                out.push_str(&format!("{:016x}", next()));
            }
        }
        out.push('\n');
    }
    out.truncate(len);
    Bytes::from(out)
}

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
    let data = sample(SIZE);
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
    let data = sample(SIZE);
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
    // The pipeline's own cost, without a database.
    let source = BufferDumper::new(sample(SIZE))
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
        g.bench_function(BenchmarkId::new("memory", codec), |b| {
            b.to_async(&rt).iter(|| async {
                let storage = dr::storage::from_url("memory://").unwrap();
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
