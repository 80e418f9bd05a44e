//! The one-line answer to "which setting should I use": the best compression a CPU budget
//! buys.

use serde::Serialize;

use super::pipeline::PipelineResult;

/// Settings whose ratios differ by less than this fraction count as equal, and the cheaper
/// one wins: a 1 % smaller backup is not worth twice the CPU.
const SAME_RATIO: f64 = 0.01;

/// The recommended setting for a CPU budget.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    /// `codec + cipher`.
    pub setting: String,
    /// The budget, in CPU seconds per GB of raw dump.
    pub cpu_budget_seconds_per_gb: f64,
    /// False when no setting fits the budget and the cheapest one is recommended instead.
    pub within_budget: bool,
    /// The sentence to print.
    pub line: String,
}

/// The setting with the highest ratio among those costing at most `budget` CPU seconds
/// per GB (near-equal ratios: the cheaper); if none fits, the cheapest. `None` for no
/// results.
pub fn recommend(results: &[PipelineResult], budget: f64) -> Option<Recommendation> {
    let fitting: Vec<&PipelineResult> = results
        .iter()
        .filter(|r| r.cpu_seconds_per_gb <= budget)
        .collect();
    let (pick, within_budget) = if fitting.is_empty() {
        let cheapest = results
            .iter()
            .min_by(|a, b| a.cpu_seconds_per_gb.total_cmp(&b.cpu_seconds_per_gb))?;
        (cheapest, false)
    } else {
        let best = fitting.iter().map(|r| r.ratio).fold(0.0, f64::max);
        let pick = fitting
            .iter()
            .filter(|r| r.ratio >= best * (1.0 - SAME_RATIO))
            .min_by(|a, b| a.cpu_seconds_per_gb.total_cmp(&b.cpu_seconds_per_gb))
            .copied()?;
        (pick, true)
    };
    let figures = format!(
        "ratio {:.2}x, {:.0} MB/s, {:.1} CPU-s/GB",
        pick.ratio, pick.mb_per_s, pick.cpu_seconds_per_gb
    );
    let line = if within_budget {
        format!(
            "Recommended for a CPU budget of {budget:.1} CPU-s/GB: {} ({figures})",
            pick.label()
        )
    } else {
        format!(
            "No setting fits a CPU budget of {budget:.1} CPU-s/GB; the cheapest is {} ({figures})",
            pick.label()
        )
    };
    Some(Recommendation {
        setting: pick.label(),
        cpu_budget_seconds_per_gb: budget,
        within_budget,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::pipeline::StageSpeeds;

    fn result(codec: &str, ratio: f64, cpu: f64) -> PipelineResult {
        PipelineResult {
            codec: codec.into(),
            cipher: "aes-256-gcm".into(),
            input_bytes: 1_000_000_000,
            stored_bytes: (1e9 / ratio) as u64,
            ratio,
            mb_per_s: 1000.0 / cpu,
            restore_mb_per_s: 0.0,
            stages: StageSpeeds {
                compress: 0.0,
                encrypt: 0.0,
                hash: 0.0,
                decrypt: 0.0,
                decompress: 0.0,
            },
            cpu_seconds: cpu,
            cpu_seconds_per_gb: cpu,
            peak_memory_bytes: None,
        }
    }

    #[test]
    fn best_ratio_within_budget_and_cheaper_of_near_equals() {
        let results = [
            result("none", 1.0, 1.0),
            result("zstd:1", 2.60, 5.0),
            result("zstd:3", 2.61, 15.0),
            result("zstd:9", 2.90, 40.0),
        ];
        let r = recommend(&results, 20.0).unwrap();
        assert_eq!(r.setting, "zstd:1 + aes-256-gcm");
        assert!(r.within_budget);
        assert!(r.line.contains("20.0 CPU-s/GB"), "{}", r.line);
        assert_eq!(
            recommend(&results, 50.0).unwrap().setting,
            "zstd:9 + aes-256-gcm"
        );
        let none = recommend(&results, 0.5).unwrap();
        assert!(!none.within_budget);
        assert_eq!(none.setting, "none + aes-256-gcm");
        assert!(recommend(&[], 1.0).is_none());
    }
}
