//! How streaming uploads are cut into parts ([`UploadConfig`]), and the upload options
//! (`part_size`, `max_parts`, `parts_in_flight`) every scheme takes.

use dr_core::{Error, Result};

/// S3's smallest part (except the last): 5 MiB.
const S3_MIN_PART: usize = 5 << 20;
/// S3's largest part: 5 GiB.
const S3_MAX_PART: usize = 5 << 30;

/// How streaming uploads are cut into parts, and so how much memory they need.
///
/// An upload holds the part being filled plus up to [`parts_in_flight`](Self::parts_in_flight)
/// parts on their way to the store, so its memory is bounded by
///
/// ```text
/// budget = part size × (parts_in_flight + 1)
/// ```
///
/// whatever the object's size: 8 MiB × 4 = 32 MiB with the defaults. The part size is
/// [`part_size`](Self::part_size), raised when the expected size of the object is known and
/// would otherwise need more than [`max_parts`](Self::max_parts) parts. When the size is not
/// known in advance (a streamed dump), an object can hold at most `part_size × max_parts`
/// bytes (78 GiB with the defaults); a write beyond that fails at once with a message naming
/// the `part_size` option, instead of failing at the store after hours of uploading.
///
/// As storage options (`--storage-opt`): `part_size=16MiB`, `max_parts=1000`,
/// `parts_in_flight=4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadConfig {
    /// The smallest part, and the part size when an object's size is not known in advance.
    /// Between 5 MiB and 5 GiB (S3's limits). Default 8 MiB.
    pub part_size: usize,
    /// The most parts one object may have: 10,000 on S3 and GCS (the default); some
    /// S3-compatible stores allow 1,000.
    pub max_parts: u64,
    /// Parts uploading at once (at least 1). Default 3.
    pub parts_in_flight: usize,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            part_size: 8 << 20,
            max_parts: 10_000,
            parts_in_flight: 3,
        }
    }
}

impl UploadConfig {
    /// The defaults of a local directory: 1 MiB parts, one writing while the next fills.
    /// object_store writes a local upload's parts one at a time (they share the file), so
    /// more or larger parts in flight only hold memory: 4 × 8 MiB of a backup's 24 MiB peak.
    pub fn local() -> UploadConfig {
        UploadConfig {
            part_size: 1 << 20,
            parts_in_flight: 1,
            ..UploadConfig::default()
        }
    }

    /// The part size for an object of `expected` bytes (if known): [`Self::part_size`], or
    /// more (rounded up to whole MiB) so the object fits in [`Self::max_parts`] parts.
    pub fn part_size_for(&self, expected: Option<u64>) -> usize {
        let needed = expected.map_or(0, |n| n.div_ceil(self.max_parts.max(1)));
        let needed = needed.div_ceil(1 << 20).saturating_mul(1 << 20);
        usize::try_from(needed)
            .unwrap_or(usize::MAX)
            .max(self.part_size)
    }

    /// The memory an upload of an object of `expected` bytes holds at most:
    /// part size × (parts in flight + 1).
    pub fn memory_budget(&self, expected: Option<u64>) -> u64 {
        self.part_size_for(expected) as u64 * (self.parts_in_flight as u64 + 1)
    }

    /// The largest object an upload with this part size can hold.
    pub fn max_object_size(&self, part_size: usize) -> u64 {
        part_size as u64 * self.max_parts
    }

    /// Apply one storage option if it is an upload option; `Ok(false)` if `key` is not one.
    pub(crate) fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        let bad =
            |what: &str| Error::invalid(format!("storage option {key}={value}: expected {what}"));
        match key {
            "part_size" => {
                let n = parse_size(value)
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|n| (S3_MIN_PART..=S3_MAX_PART).contains(n))
                    .ok_or_else(|| bad("a size between 5MiB and 5GiB, e.g. 16MiB"))?;
                self.part_size = n;
            }
            "max_parts" => {
                self.max_parts = value
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("a positive number of parts, e.g. 1000"))?;
            }
            "parts_in_flight" => {
                self.parts_in_flight = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| bad("a number from 1 to 64"))?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Parse a byte size: `8388608`, `8MiB`, `8M`, `512KiB`, `1GiB` (binary units; `MB` is
/// taken as `MiB` too, since part sizes are always meant in binary units).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_core::ErrorKind;

    #[test]
    fn part_size_keeps_objects_under_the_part_limit() {
        let cfg = UploadConfig::default();
        assert_eq!(cfg.part_size_for(None), 8 << 20);
        assert_eq!(cfg.part_size_for(Some(1 << 30)), 8 << 20);
        let huge = 5u64 << 40; // 5 TiB, S3's largest object
        let p = cfg.part_size_for(Some(huge)) as u64;
        assert!(huge.div_ceil(p) <= cfg.max_parts, "{p}");
        assert_eq!(p % (1 << 20), 0, "whole MiB");
        let small_limit = UploadConfig {
            max_parts: 1000,
            ..cfg
        };
        let p = small_limit.part_size_for(Some(100 << 30)) as u64;
        assert!((100u64 << 30).div_ceil(p) <= 1000, "{p}");
    }

    #[test]
    fn upload_options_parse_and_reject_bad_values() {
        let mut cfg = UploadConfig::default();
        assert!(cfg.set("part_size", "16MiB").unwrap());
        assert!(cfg.set("max_parts", "1000").unwrap());
        assert!(cfg.set("parts_in_flight", "5").unwrap());
        assert_eq!(
            cfg,
            UploadConfig {
                part_size: 16 << 20,
                max_parts: 1000,
                parts_in_flight: 5
            }
        );
        assert!(!cfg.set("region", "eu-west-1").unwrap());
        for (k, v) in [
            ("part_size", "1MiB"),
            ("part_size", "big"),
            ("max_parts", "0"),
            ("parts_in_flight", "0"),
        ] {
            assert_eq!(
                cfg.set(k, v).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{k}={v}"
            );
        }
    }

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("8388608"), Some(8 << 20));
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("16M"), Some(16 << 20));
        assert_eq!(parse_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_size("512kib"), Some(512 << 10));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5TiB"), None);
    }
}
