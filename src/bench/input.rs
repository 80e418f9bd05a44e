//! The bytes a pipeline benchmark runs on: a file, a live database's dump, or synthetic
//! dump-like text. The input is held in memory so that every setting is measured on exactly
//! the same bytes, without the source's speed in the figures.

use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use dr_core::{Dumper, Error, Result};
use futures::StreamExt;

/// Parse a size in decimal or binary units: `64MB` (64 × 10^6), `1GiB`, `512k`, `1000000`.
/// MB means 10^6 here, as in the MB/s the benchmark prints.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || {
        Error::invalid(format!(
            "size {text:?}: expected a number with an optional unit, e.g. 256MB or 1GiB"
        ))
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|n| *n > 0).ok_or_else(bad)
}

/// Read up to `limit` bytes of `path` (all of it when `None`).
pub fn read_file(path: &Path, limit: Option<u64>) -> Result<Bytes> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut buf = Vec::new();
    file.take(limit.unwrap_or(u64::MAX))
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    if buf.is_empty() {
        return Err(Error::invalid(format!(
            "{} is empty: nothing to measure",
            path.display()
        )));
    }
    Ok(Bytes::from(buf))
}

/// The first `limit` bytes (all when `None`) of what `dumper` produces, e.g. a database's
/// `pg_dump -Fc -Z0` archive through [`dr_db::PgDumper`]. When the limit cuts the dump
/// short, the dump is stopped.
pub async fn dump_to_memory(dumper: &dyn Dumper, limit: Option<u64>) -> Result<Bytes> {
    let dump = dumper.start().await?;
    let limit = limit.unwrap_or(u64::MAX);
    let mut buf = Vec::with_capacity(dump.size_hint.unwrap_or(0).min(limit) as usize);
    let mut stream = dump.stream;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = (limit - buf.len() as u64).min(chunk.len() as u64) as usize;
        buf.extend_from_slice(&chunk[..room]);
        if buf.len() as u64 >= limit {
            // Cut short on purpose: the dumper's failure to finish is expected.
            drop(stream);
            let _ = dump.completion.finish().await;
            return Ok(Bytes::from(buf));
        }
    }
    drop(stream);
    dump.completion.finish().await?;
    Ok(Bytes::from(buf))
}

/// `len` bytes of synthetic dump-like text: COPY rows of ids, UUIDs, timestamps, IP
/// addresses, repeated user agents and, on every fourth row, a hex `bytea` of random bytes.
/// Deterministic; compresses about like the text part of a real `pg_dump`.
pub fn synthetic_dump(len: usize) -> Bytes {
    use std::fmt::Write;
    let agents = [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Safari/604.1",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/124.0 Mobile Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0 Safari/537.36",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
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
        let _ = write!(
            out,
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
        );
        if i % 4 == 0 {
            out.push_str("\\\\x");
            for _ in 0..64 {
                let _ = write!(out, "{:016x}", next());
            }
        }
        out.push('\n');
    }
    out.truncate(len);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_decimal_and_binary_units() {
        assert_eq!(parse_size("64MB").unwrap(), 64_000_000);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size(" 512k ").unwrap(), 512_000);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        for bad in ["", "MB", "0", "12 parsecs", "-5MB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn synthetic_dump_is_deterministic_rows() {
        let a = synthetic_dump(100_000);
        assert_eq!(a.len(), 100_000);
        assert_eq!(a, synthetic_dump(100_000));
        assert!(a.iter().filter(|b| **b == b'\n').count() > 100);
    }
}
