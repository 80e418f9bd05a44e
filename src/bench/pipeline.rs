//! The pipeline benchmark: for each compression × cipher setting, on the caller's own bytes,
//! the compression ratio, the speed of every stage alone, the speed of the whole backup
//! pipeline (through [`dr_core::backup`], stages on their own threads) and of the restore
//! direction, the CPU seconds and the memory the pipeline added.
//!
//! Speeds are in MB/s, MB = 10^6 bytes, of each stage's *input* (compression: raw bytes;
//! encryption and hashing: the bytes handed to them) except decompression, which counts its
//! output like `zstd -b`; so the stage figures compare directly with `zstd -b` and
//! `openssl speed`. The end-to-end figures count raw (uncompressed) bytes.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dr_core::{
    stage::{drain, once_bytes},
    BackupOptions, BufferDumper, Codec, Decryptor, EncryptionInfo, Encryptor, Error, RepoConfig,
    RepoDefaults, Repository, Result, StageOptions, Transform,
};
use dr_crypto::{AeadDecryptor, AeadEncryptor, Cipher, MasterKey};
use serde::{Deserialize, Serialize};

use super::discard::DiscardTarget;
use super::process::{cpu_seconds, PeakWindow};

/// The compression settings measured when none are given.
pub const DEFAULT_CODECS: &str = "zstd:1,zstd:3,zstd:9,gzip:1,gzip:6,none";

/// One setting: a codec and a cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineSetting {
    /// Compression.
    pub codec: Codec,
    /// Encryption.
    pub cipher: Cipher,
}

impl fmt::Display for PipelineSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} + {}", self.codec, self.cipher)
    }
}

impl PipelineSetting {
    /// Every codec × cipher pair, codecs outermost (the order the benchmark runs them).
    pub fn all(codecs: &[Codec], ciphers: &[Cipher]) -> Vec<PipelineSetting> {
        codecs
            .iter()
            .flat_map(|&codec| {
                ciphers
                    .iter()
                    .map(move |&cipher| PipelineSetting { codec, cipher })
            })
            .collect()
    }
}

/// Parse a comma-separated list (`zstd:1,gzip:6`, `aes-256-gcm,chacha20-poly1305`).
pub fn parse_list<T: std::str::FromStr<Err = Error>>(text: &str) -> Result<Vec<T>> {
    let items: Vec<T> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_>>()?;
    if items.is_empty() {
        return Err(Error::invalid(format!("{text:?} names no setting")));
    }
    Ok(items)
}

/// How to run the measurements.
#[derive(Debug, Clone, Copy)]
pub struct PipelineOptions {
    /// Backup pipelines run at once in the end-to-end measurement, each on its own 1/N of
    /// the input (as N backup jobs would): how the pipeline scales with cores.
    pub threads: usize,
    /// Chunk sizes and channel depths of the pipeline's stages.
    pub stages: StageOptions,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            threads: 1,
            stages: StageOptions::default(),
        }
    }
}

/// Speeds of each stage alone, on one core, in MB/s (see the module documentation for
/// which bytes each counts): the fastest of several passes over the input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageSpeeds {
    /// Compression, raw bytes in.
    pub compress: f64,
    /// Encryption, compressed bytes in.
    pub encrypt: f64,
    /// SHA-256 of the stored bytes.
    pub hash: f64,
    /// Decryption, stored bytes in.
    pub decrypt: f64,
    /// Decompression, raw bytes out.
    pub decompress: f64,
}

/// The measurements of one setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineResult {
    /// `zstd:1`, `gzip:6`, `none`, …
    pub codec: String,
    /// `aes-256-gcm` or `chacha20-poly1305`.
    pub cipher: String,
    /// Raw bytes measured.
    pub input_bytes: u64,
    /// Bytes the backup stored (compressed, encrypted, with headers and tags).
    pub stored_bytes: u64,
    /// `input_bytes / stored_bytes`.
    pub ratio: f64,
    /// The whole backup pipeline (read → compress → encrypt → hash → upload to a target
    /// that discards), raw MB per wall-clock second, all pipelines together.
    pub mb_per_s: f64,
    /// The restore direction (decrypt → decompress), raw MB per wall-clock second.
    pub restore_mb_per_s: f64,
    /// Each stage alone.
    pub stages: StageSpeeds,
    /// CPU seconds (all threads) the backup pipeline spent, in the kernel's 10 ms ticks.
    pub cpu_seconds: f64,
    /// CPU seconds per GB (10^9 bytes) of raw input: the cost to budget for.
    pub cpu_seconds_per_gb: f64,
    /// The most memory the backup pipeline added to the process, if the system tells.
    /// Only the first setting measured in a process shows its own: the allocator keeps
    /// what an earlier setting freed, and a later one reuses it without growing the
    /// process (`drctl bench pipeline` measures each setting in a process of its own).
    pub peak_memory_bytes: Option<u64>,
}

impl PipelineResult {
    /// `codec + cipher`, the label of the setting's point in the chart.
    pub fn label(&self) -> String {
        format!("{} + {}", self.codec, self.cipher)
    }
}

/// Measure every setting on `input`. `on_result` is called as each setting is done (for
/// progress output). Settings are run in order; the compressed output of a codec is
/// reused for its ciphers.
pub async fn measure_pipeline(
    input: Bytes,
    settings: &[PipelineSetting],
    opts: PipelineOptions,
    mut on_result: impl FnMut(&PipelineResult),
) -> Result<Vec<PipelineResult>> {
    if input.is_empty() {
        return Err(Error::invalid("the benchmark input is empty"));
    }
    if opts.threads == 0 {
        return Err(Error::invalid("--threads must be at least 1"));
    }
    let key = MasterKey::generate()?;
    let chunk = opts.stages.chunk_bytes.max(1);
    let mut results = Vec::with_capacity(settings.len());
    let mut cached: Option<(Codec, Compressed)> = None;
    for setting in settings {
        if cached.as_ref().map(|(c, _)| *c) != Some(setting.codec) {
            drop(cached.take()); // free the previous codec's output first
            cached = Some((setting.codec, compress_alone(setting.codec, &input, chunk)?));
        }
        let compressed = &cached.as_ref().expect("just set").1;
        let encryptor = AeadEncryptor::new(setting.cipher, vec![key.clone()])?;
        let e2e = backup_end_to_end(&input, setting, &encryptor, opts).await?;

        let (info, mut sealer) = encryptor.encrypt_stream()?;
        let (sealed, first_s) = run_keeping(sealer.as_mut(), &compressed.bytes, chunk)?;
        let encrypt_s = fastest_pass(first_s, || {
            run_discarding(
                encryptor.encrypt_stream()?.1.as_mut(),
                &compressed.bytes,
                chunk,
            )
        })?;
        let hash_s = fastest_pass(sha256_alone(&sealed, chunk), || {
            Ok(sha256_alone(&sealed, chunk))
        })?;
        let opener = AeadDecryptor::new(vec![key.clone()]);
        let decrypt_s = fastest_pass(f64::INFINITY, || {
            run_discarding(opener.decrypt_stream(&info)?.as_mut(), &sealed, chunk)
        })?;
        let sealed = Bytes::from(sealed);
        let restore_s = restore_end_to_end(
            sealed.clone(),
            &opener,
            &info,
            setting.codec,
            opts.stages,
            input.len() as u64,
        )
        .await?;

        let raw = input.len() as f64;
        let result = PipelineResult {
            codec: setting.codec.to_string(),
            cipher: setting.cipher.to_string(),
            input_bytes: input.len() as u64,
            stored_bytes: e2e.stored_bytes,
            ratio: raw / e2e.stored_bytes.max(1) as f64,
            mb_per_s: mb_per_s(raw, e2e.seconds),
            restore_mb_per_s: mb_per_s(raw, restore_s),
            stages: StageSpeeds {
                compress: mb_per_s(raw, compressed.compress_s),
                encrypt: mb_per_s(compressed.bytes.len() as f64, encrypt_s),
                hash: mb_per_s(sealed.len() as f64, hash_s),
                decrypt: mb_per_s(sealed.len() as f64, decrypt_s),
                decompress: mb_per_s(raw, compressed.decompress_s),
            },
            cpu_seconds: e2e.cpu_seconds,
            cpu_seconds_per_gb: e2e.cpu_seconds / (raw / 1e9),
            peak_memory_bytes: e2e.peak_memory_bytes,
        };
        on_result(&result);
        results.push(result);
    }
    Ok(results)
}

fn mb_per_s(bytes: f64, seconds: f64) -> f64 {
    bytes / seconds.max(1e-9) / 1e6
}

/// A codec's output and its one-core speeds both ways.
struct Compressed {
    bytes: Vec<u8>,
    compress_s: f64,
    decompress_s: f64,
}

fn compress_alone(codec: Codec, input: &[u8], chunk: usize) -> Result<Compressed> {
    let (bytes, first_s) = run_keeping(codec.encoder()?.as_mut(), input, chunk)?;
    let compress_s = fastest_pass(first_s, || {
        run_discarding(codec.encoder()?.as_mut(), input, chunk)
    })?;
    let decompress_s = fastest_pass(f64::INFINITY, || {
        run_discarding(codec.decoder()?.as_mut(), &bytes, chunk)
    })?;
    Ok(Compressed {
        bytes,
        compress_s,
        decompress_s,
    })
}

/// A stage's time is the fastest of several passes over the input, as `zstd -b` reports
/// its fastest: on a shared machine one pass may lose the core to another process, which
/// says nothing about the stage. Passes are repeated until they add up to this many
/// seconds, at most [`MAX_PASSES`].
const PASS_SECONDS: f64 = 2.0;
const MAX_PASSES: usize = 5;

/// The fastest of `first` (a pass already run, or infinity) and further runs of `pass`.
fn fastest_pass(first: f64, mut pass: impl FnMut() -> Result<f64>) -> Result<f64> {
    let (mut best, mut total, mut passes) = (first, 0.0, 0);
    if first.is_finite() {
        (total, passes) = (first, 1);
    }
    while passes == 0 || (total < PASS_SECONDS && passes < MAX_PASSES) {
        let seconds = pass()?;
        best = best.min(seconds);
        total += seconds;
        passes += 1;
    }
    Ok(best)
}

/// Run `t` over `input` in `chunk`-byte pieces, keeping the output; returns it and the
/// seconds spent. The output buffer is reserved and written once before the clock starts:
/// the first write to a fresh page costs a page fault, which took more time than AES-GCM
/// itself (encryption measured 270 MB/s, decryption into a reused buffer 1,380 MB/s), and
/// `zstd -b` and `openssl speed` write into memory they touched already.
fn run_keeping(t: &mut dyn Transform, input: &[u8], chunk: usize) -> Result<(Vec<u8>, f64)> {
    let capacity = input.len() + input.len() / 64 + (1 << 20);
    let mut out = Vec::with_capacity(capacity);
    out.resize(capacity, 0xa5); // written, not `vec![0; n]`: calloc's pages are not touched
    std::hint::black_box(&mut out);
    out.clear();
    let start = Instant::now();
    for piece in input.chunks(chunk) {
        t.update(piece, &mut out)?;
    }
    t.finish(&mut out)?;
    Ok((out, start.elapsed().as_secs_f64()))
}

/// Run `t` over `input`, dropping the output as it comes (one reused buffer).
fn run_discarding(t: &mut dyn Transform, input: &[u8], chunk: usize) -> Result<f64> {
    let mut out = Vec::with_capacity(4 * chunk);
    out.resize(4 * chunk, 0xa5); // faulted in before the clock starts, as in `run_keeping`
    std::hint::black_box(&mut out);
    out.clear();
    let start = Instant::now();
    for piece in input.chunks(chunk) {
        t.update(piece, &mut out)?;
        out.clear();
    }
    t.finish(&mut out)?;
    Ok(start.elapsed().as_secs_f64())
}

fn sha256_alone(data: &[u8], chunk: usize) -> f64 {
    let start = Instant::now();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for piece in data.chunks(chunk) {
        ctx.update(piece);
    }
    std::hint::black_box(ctx.finish());
    start.elapsed().as_secs_f64()
}

struct EndToEnd {
    seconds: f64,
    cpu_seconds: f64,
    stored_bytes: u64,
    peak_memory_bytes: Option<u64>,
}

/// `opts.threads` real backups at once, each of its slice of `input`, into repositories
/// whose payloads are discarded.
async fn backup_end_to_end(
    input: &Bytes,
    setting: &PipelineSetting,
    encryptor: &AeadEncryptor,
    opts: PipelineOptions,
) -> Result<EndToEnd> {
    let defaults = RepoDefaults {
        compression: setting.codec,
        encryption: dr_crypto::SCHEME.into(),
        cipher: setting.cipher.as_str().into(),
        storage_class: None,
    };
    let mut jobs = Vec::with_capacity(opts.threads);
    let slice = input.len().div_ceil(opts.threads);
    for i in 0..opts.threads {
        let part = input.slice((i * slice).min(input.len())..((i + 1) * slice).min(input.len()));
        let repo = Repository::init(
            Arc::new(DiscardTarget::new()),
            RepoConfig::new(defaults.clone(), vec![])?,
        )
        .await?;
        // A stage's 1 MiB chunks, so the benchmark's backups read no database.
        jobs.push((
            repo,
            BufferDumper::new(part).named("bench").chunk_bytes(1 << 20),
        ));
    }
    let backup_opts = BackupOptions {
        codec: Some(setting.codec),
        stages: opts.stages,
        ..Default::default()
    };
    let window = PeakWindow::start();
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let manifests = futures::future::try_join_all(
        jobs.iter()
            .map(|(repo, dumper)| dr_core::backup(repo, dumper, encryptor, &backup_opts)),
    )
    .await?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = match (cpu_before, cpu_seconds()) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    Ok(EndToEnd {
        seconds,
        cpu_seconds,
        stored_bytes: manifests.iter().map(|m| m.stored_bytes).sum(),
        peak_memory_bytes: window.added_bytes(),
    })
}

/// Decrypt → decompress on their own threads, as a restore reads a payload.
async fn restore_end_to_end(
    sealed: Bytes,
    decryptor: &AeadDecryptor,
    info: &EncryptionInfo,
    codec: Codec,
    stages: StageOptions,
    expected: u64,
) -> Result<f64> {
    let opener = decryptor.decrypt_stream(info)?;
    let decoder = codec.decoder()?;
    let start = Instant::now();
    let plain = dr_core::spawn_transform(once_bytes(sealed, stages.chunk_bytes), opener, stages);
    let raw = drain(dr_core::spawn_transform(plain, decoder, stages)).await?;
    let seconds = start.elapsed().as_secs_f64();
    if raw != expected {
        return Err(Error::corrupt(format!(
            "the benchmark's restore produced {raw} bytes, expected {expected}"
        )));
    }
    Ok(seconds)
}
