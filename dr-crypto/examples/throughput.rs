//! Single-core throughput of the dr-aead-v1 stream, per cipher, at 64 KiB chunks.
//!
//! `cargo run -p dr-crypto --release --example throughput [MiB]` (default 1024 MiB per run).
//! Input is fed in 1 MiB pieces, the way `spawn_transform` feeds it, and the output buffer is
//! reused, as a pipeline stage would.

use std::time::Instant;

use dr_core::{Decryptor, Encryptor};
use dr_crypto::{AeadDecryptor, AeadEncryptor, Cipher, MasterKey};

const PIECE: usize = 1 << 20;

fn main() -> dr_core::Result<()> {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let piece: Vec<u8> = (0..PIECE).map(|i| (i * 31 % 251) as u8).collect();
    let key = MasterKey::generate()?;
    println!("{mib} MiB per run, 64 KiB chunks, 1 MiB updates, one thread");
    for cipher in Cipher::ALL {
        let enc = AeadEncryptor::new(cipher, vec![key.clone()])?;
        let dec = AeadDecryptor::new(vec![key.clone()]);

        // Encrypt.
        let (_info, mut sealer) = enc.encrypt_stream()?;
        let mut out = Vec::with_capacity(2 * PIECE);
        let start = Instant::now();
        for _ in 0..mib {
            out.clear();
            sealer.update(&piece, &mut out)?;
        }
        sealer.finish(&mut out)?;
        let seal_rate = rate(mib, start);

        // Decrypt a whole stream of the same size, built first (not timed).
        let (info2, mut s2) = enc.encrypt_stream()?;
        let mut whole = Vec::with_capacity(mib * (PIECE + PIECE / 64));
        for _ in 0..mib {
            s2.update(&piece, &mut whole)?;
        }
        s2.finish(&mut whole)?;
        let mut opener = dec.decrypt_stream(&info2)?;
        let start = Instant::now();
        for stored_piece in whole.chunks(PIECE) {
            out.clear();
            opener.update(stored_piece, &mut out)?;
        }
        opener.finish(&mut out)?;
        let open_rate = rate(mib, start);
        println!("{cipher:>18}: encrypt {seal_rate:>6.0} MB/s   decrypt {open_rate:>6.0} MB/s");
    }
    Ok(())
}

fn rate(mib: usize, start: Instant) -> f64 {
    (mib * PIECE) as f64 / start.elapsed().as_secs_f64() / 1e6
}
