//! `drctl bench crypto|pipeline|storage`: measure this machine and its repository. The
//! measurements are the library's ([`dr::bench`]); this file parses and prints.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Subcommand};
use dr::bench::{PipelineOptions, PipelineResult, PipelineSetting, StorageBenchOptions};
use dr::core::{Codec, Encryptor, Error, ErrorKind, Result};
use dr::crypto::{AeadEncryptor, AgeEncryptor, Cipher, MasterKey};
use serde::Serialize;

use crate::args::RepoArgs;
use crate::output::{print_json, Output};

/// `drctl bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Encryption throughput (MB/s, MB = 10^6 bytes) of each cipher at several chunk sizes,
    /// on one core, the way a pipeline stage runs it (1 MiB updates, output buffer reused).
    Crypto {
        /// Megabytes (10^6 bytes) of plaintext per measurement.
        #[arg(long, default_value_t = 512)]
        mb: u64,
        /// Also run `openssl speed -evp aes-256-gcm` and print its 16 KiB figure beside ours
        /// (text output only).
        #[arg(long)]
        compare_openssl: bool,
    },
    /// The whole backup pipeline on your own data, per compression and cipher setting:
    /// ratio, MB/s per stage and end to end, CPU seconds, peak memory, a recommendation.
    Pipeline(PipelineArgs),
    /// Upload and download speed and request latency of a repository's storage, with its
    /// configured part size and parts in flight. Writes under bench/ and deletes it after.
    Storage {
        #[command(flatten)]
        repo: RepoArgs,
        /// Size of the object uploaded and downloaded (e.g. 256MiB, 1GB).
        #[arg(long, default_value = "256MiB")]
        size: String,
        /// Round trips of a 1 KiB object for the latency figures.
        #[arg(long, default_value_t = 20)]
        requests: usize,
    },
}

/// `drctl bench pipeline`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["input", "db", "sample"])))]
pub struct PipelineArgs {
    /// Measure on this file (e.g. a `pg_dump -Fc -Z0` archive), held in memory.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Measure on this database's dump (`pg_dump -Fc -Z0`, held in memory).
    #[arg(long)]
    db: Option<String>,
    /// Measure on this much synthetic dump-like text (e.g. 256MB).
    #[arg(long, value_name = "SIZE")]
    sample: Option<String>,
    /// Use at most this many bytes of the input (e.g. 512MB).
    #[arg(long, value_name = "SIZE")]
    limit: Option<String>,
    /// Compression settings to measure.
    #[arg(long, default_value = dr::bench::DEFAULT_CODECS)]
    codecs: String,
    /// Ciphers to measure.
    #[arg(long, default_value = "aes-256-gcm,chacha20-poly1305")]
    ciphers: String,
    /// Backup pipelines run at once, each on 1/N of the input (as N backup jobs would).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The CPU budget the recommendation respects, in CPU seconds per GB of dump.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS_PER_GB")]
    cpu_budget: f64,
    /// Also write the chart (throughput against ratio, one point per setting) as SVG.
    #[arg(long, value_name = "FILE.svg")]
    chart: Option<PathBuf>,
}

/// One measurement.
#[derive(Debug, Serialize)]
struct Row {
    cipher: String,
    chunk_bytes: usize,
    mb_per_s: f64,
}

const PIECE: usize = 1 << 20;
const CHUNKS: [usize; 3] = [16 * 1024, 64 * 1024, 1024 * 1024];

pub async fn run(out: Output, command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Crypto {
            mb,
            compare_openssl,
        } => crypto(out, mb, compare_openssl),
        BenchCommand::Pipeline(args) => pipeline(out, args).await,
        BenchCommand::Storage {
            repo,
            size,
            requests,
        } => storage(out, &repo, &size, requests).await,
    }
}

/// One setting's figures and whether it is the recommended one.
#[derive(Serialize)]
struct PipelineRow<'a> {
    #[serde(flatten)]
    result: &'a PipelineResult,
    recommended: bool,
}

async fn pipeline(out: Output, args: PipelineArgs) -> Result<()> {
    let codecs: Vec<Codec> = dr::bench::parse_list(&args.codecs)?;
    let ciphers: Vec<Cipher> = dr::bench::parse_list(&args.ciphers)?;
    if args.cpu_budget.is_nan() || args.cpu_budget <= 0.0 {
        return Err(Error::invalid("--cpu-budget must be a positive number"));
    }
    let limit = args
        .limit
        .as_deref()
        .map(dr::bench::parse_size)
        .transpose()?;
    let (input, what) = if let Some(path) = &args.input {
        (
            dr::bench::read_file(path, limit)?,
            path.display().to_string(),
        )
    } else if let Some(url) = &args.db {
        let dumper = dr::db::PgDumper::new(crate::args::db_config(url)?);
        let name = dumper_name(url);
        (dr::bench::dump_to_memory(&dumper, limit).await?, name)
    } else {
        let size = dr::bench::parse_size(args.sample.as_deref().expect("clap requires a source"))?;
        let size = limit.map_or(size, |l| l.min(size));
        let size = usize::try_from(size).map_err(|_| Error::invalid("--sample is too large"))?;
        (
            dr::bench::synthetic_dump(size),
            "synthetic dump-like text".into(),
        )
    };
    let settings = PipelineSetting::all(&codecs, &ciphers);
    let opts = PipelineOptions {
        threads: args.threads,
        ..Default::default()
    };
    eprintln!(
        "measuring {} settings on {} ({:.1} MB, {} pipeline(s) at once)",
        settings.len(),
        what,
        input.len() as f64 / 1e6,
        args.threads
    );
    let input_bytes = input.len();
    let progress = |r: &PipelineResult| {
        eprintln!(
            "  {:<34} ratio {:>5.2}  {:>7.0} MB/s",
            r.label(),
            r.ratio,
            r.mb_per_s
        );
    };
    let results = if settings.len() == 1 {
        dr::bench::measure_pipeline(input, &settings, opts, progress).await?
    } else {
        each_in_own_process(&input, &settings, args.threads, progress)?
    };
    let recommendation = dr::bench::recommend(&results, args.cpu_budget);
    if let Some(path) = &args.chart {
        let title = format!(
            "dr backup pipeline on {} ({:.0} MB), {} pipeline(s)",
            what,
            input_bytes as f64 / 1e6,
            args.threads
        );
        std::fs::write(path, dr::bench::pipeline_chart(&results, &title))
            .map_err(|e| Error::io(format!("writing the chart to {}", path.display()), e))?;
    }
    if out.is_json() {
        let rows: Vec<PipelineRow> = results
            .iter()
            .map(|r| PipelineRow {
                result: r,
                recommended: recommendation
                    .as_ref()
                    .is_some_and(|rec| rec.setting == r.label()),
            })
            .collect();
        print_json(&rows);
        return Ok(());
    }
    println!(
        "{:<34} {:>6} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8} {:>8} | {:>6} {:>7} {:>8}",
        "setting",
        "ratio",
        "backup",
        "restore",
        "compress",
        "encrypt",
        "sha256",
        "decrypt",
        "decomp",
        "CPU s",
        "CPU s/GB",
        "peak MiB"
    );
    for r in &results {
        let peak = r
            .peak_memory_bytes
            .map_or("?".to_string(), |b| format!("{:.1}", b as f64 / 1048576.0));
        println!(
            "{:<34} {:>6.2} {:>8.0} {:>8.0} | {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.0} | {:>6.2} {:>7.1} {:>8}",
            r.label(), r.ratio, r.mb_per_s, r.restore_mb_per_s, r.stages.compress,
            r.stages.encrypt, r.stages.hash, r.stages.decrypt, r.stages.decompress,
            r.cpu_seconds, r.cpu_seconds_per_gb, peak
        );
    }
    println!("MB/s, MB = 10^6 bytes: backup and restore of raw bytes end to end; stages alone on one core.");
    if let Some(rec) = recommendation {
        println!("{}", rec.line);
    }
    if let Some(path) = &args.chart {
        println!("chart written to {}", path.display());
    }
    Ok(())
}

/// Measure each setting in a `drctl bench pipeline` process of its own, on a copy of the
/// input in a temporary file. One process for all would report the peak memory of the
/// first setting only: the allocator keeps what a setting freed, and the next one reuses it
/// without growing the process (it showed 0.0 MiB). The price is compressing the input
/// once per setting instead of once per codec.
fn each_in_own_process(
    input: &[u8],
    settings: &[PipelineSetting],
    threads: usize,
    mut progress: impl FnMut(&PipelineResult),
) -> Result<Vec<PipelineResult>> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("finding drctl's own executable to run each setting", e))?;
    let mut file = tempfile::NamedTempFile::new()
        .map_err(|e| Error::io("creating a temporary file for the benchmark input", e))?;
    std::io::Write::write_all(&mut file, input)
        .map_err(|e| Error::io(format!("writing {}", file.path().display()), e))?;
    let mut results = Vec::with_capacity(settings.len());
    for setting in settings {
        let out = std::process::Command::new(&exe)
            .args(["--json", "bench", "pipeline", "--input"])
            .arg(file.path())
            .args(["--codecs", &setting.codec.to_string()])
            .args(["--ciphers", setting.cipher.as_str()])
            .args(["--threads", &threads.to_string()])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("running {}", exe.display()), e))?;
        if !out.status.success() {
            return Err(Error::new(
                ErrorKind::Other,
                format!(
                    "measuring {setting} in its own process failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        let mut rows: Vec<PipelineResult> = serde_json::from_slice(&out.stdout).map_err(|e| {
            Error::new(
                ErrorKind::Other,
                format!("reading the figures of {setting} from its own process: {e}"),
            )
        })?;
        let result = rows.pop().filter(|_| rows.is_empty()).ok_or_else(|| {
            Error::new(
                ErrorKind::Other,
                format!("the process measuring {setting} did not report one setting"),
            )
        })?;
        progress(&result);
        results.push(result);
    }
    Ok(results)
}

/// The database a URL names, for messages (never the URL itself: it may hold a password).
fn dumper_name(url: &str) -> String {
    url.parse::<tokio_postgres::Config>()
        .ok()
        .and_then(|c| c.get_dbname().map(|d| format!("database {d}")))
        .unwrap_or_else(|| "the database".into())
}

async fn storage(out: Output, repo: &RepoArgs, size: &str, requests: usize) -> Result<()> {
    let object_bytes = dr::bench::parse_size(size)?;
    let upload = crate::storage::open(&repo.repo, &repo.storage_opts)?.upload_config();
    let result = dr::bench::measure_storage(
        repo.storage()?,
        StorageBenchOptions {
            object_bytes,
            small_requests: requests,
        },
    )
    .await?;
    if out.is_json() {
        print_json(&serde_json::json!({
            "result": result,
            "part_size": upload.part_size_for(Some(object_bytes)),
            "parts_in_flight": upload.parts_in_flight,
            "upload_memory_budget_bytes": upload.memory_budget(Some(object_bytes)),
        }));
        return Ok(());
    }
    println!(
        "{}: {:.1} MB object, {} MiB parts, {} in flight",
        result.target,
        object_bytes as f64 / 1e6,
        upload.part_size_for(Some(object_bytes)) >> 20,
        upload.parts_in_flight
    );
    println!(
        "upload {:.1} MB/s, download {:.1} MB/s",
        result.upload_mb_per_s, result.download_mb_per_s
    );
    for l in &result.latency {
        println!(
            "{:<6} 1 KiB: median {:.1} ms, p95 {:.1} ms",
            l.request, l.median_ms, l.p95_ms
        );
    }
    Ok(())
}

fn crypto(out: Output, mb: u64, compare_openssl: bool) -> Result<()> {
    if mb == 0 {
        return Err(Error::invalid("--mb must be at least 1"));
    }
    let total = mb * 1_000_000;
    let piece: Vec<u8> = (0..PIECE).map(|i| (i * 31 % 251) as u8).collect();
    let key = MasterKey::generate()?;
    let mut rows = Vec::new();
    for cipher in Cipher::ALL {
        for chunk in CHUNKS {
            let enc = AeadEncryptor::new(cipher, vec![key.clone()])?.with_chunk_bytes(chunk);
            let mb_per_s = measure(&enc, &piece, total)?;
            rows.push(Row {
                cipher: cipher.as_str().into(),
                chunk_bytes: chunk,
                mb_per_s,
            });
        }
    }
    let age = AgeEncryptor::new(vec![dr::crypto::AgeIdentity::generate().recipient()])?;
    rows.push(Row {
        cipher: "age (chacha20-poly1305)".into(),
        chunk_bytes: 64 * 1024,
        mb_per_s: measure(&age, &piece, total)?,
    });
    if out.is_json() {
        print_json(&rows);
        return Ok(());
    }
    println!("encryption, one core, {mb} MB per measurement (MB = 10^6 bytes)");
    for r in &rows {
        println!(
            "{:>24}  {:>8} B chunks  {:>8.0} MB/s",
            r.cipher, r.chunk_bytes, r.mb_per_s
        );
    }
    if compare_openssl {
        let ours = rows
            .iter()
            .find(|r| r.cipher == "aes-256-gcm" && r.chunk_bytes == 64 * 1024)
            .map(|r| r.mb_per_s)
            .unwrap_or(0.0);
        let theirs = openssl_aes_gcm_16k()?;
        println!(
            "openssl speed -evp aes-256-gcm, 16 KiB blocks: {theirs:.0} MB/s; dr aes-256-gcm at \
             64 KiB chunks is {:.2}x that",
            ours / theirs
        );
    }
    Ok(())
}

fn measure(enc: &dyn Encryptor, piece: &[u8], total: u64) -> Result<f64> {
    let (_, mut sealer) = enc.encrypt_stream()?;
    let mut out = Vec::with_capacity(2 * PIECE);
    // Warm up (page in the buffers, spin up the CPU's clock).
    sealer.update(&piece[..PIECE / 4], &mut out)?;
    out.clear();
    let mut done = 0u64;
    let start = Instant::now();
    while done < total {
        let n = (total - done).min(piece.len() as u64) as usize;
        sealer.update(&piece[..n], &mut out)?;
        out.clear();
        done += n as u64;
    }
    sealer.finish(&mut out)?;
    Ok(total as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// The 16384-byte column of `openssl speed -evp aes-256-gcm`, in MB/s (openssl prints
/// thousands of bytes per second).
fn openssl_aes_gcm_16k() -> Result<f64> {
    let out = std::process::Command::new("openssl")
        .args([
            "speed",
            "-evp",
            "aes-256-gcm",
            "-bytes",
            "16384",
            "-seconds",
            "3",
        ])
        .output()
        .map_err(|e| {
            Error::new(
                ErrorKind::MissingPrerequisite,
                "openssl is not installed: apt-get install -y openssl",
            )
            .with_source(e)
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("aes-256-gcm"))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Other,
                "openssl speed printed no aes-256-gcm line",
            )
        })?;
    let k: f64 = line
        .split_whitespace()
        .last()
        .and_then(|v| v.trim_end_matches('k').parse().ok())
        .ok_or_else(|| Error::new(ErrorKind::Other, "cannot read openssl speed's figure"))?;
    Ok(k * 1000.0 / 1e6)
}
