//! `drctl bench crypto`: single-core encryption throughput per cipher and chunk size.

use std::time::Instant;

use clap::Subcommand;
use dr::core::{Encryptor, Error, ErrorKind, Result};
use dr::crypto::{AeadEncryptor, AgeEncryptor, Cipher, MasterKey};
use serde::Serialize;

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

pub fn run(out: Output, command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Crypto {
            mb,
            compare_openssl,
        } => crypto(out, mb, compare_openssl),
    }
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
