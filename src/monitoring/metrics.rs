//! Metrics of a running scheduler: counters and histograms of job runs fed from its events,
//! and the repository's status (backup age, objectives, last checks) judged at each scrape.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::Utc;

use dr_core::schedule::{JobOutcome, SchedulerEvent};

use crate::drill::Objectives;
use crate::report::exposition::{Exposition, MetricType};
use crate::status::{assess, Facts};

/// Upper bounds (seconds) of the job-duration histogram: seconds to hours.
const DURATION_BUCKETS: [f64; 11] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
];

/// One job's counters.
#[derive(Debug, Clone, Default)]
struct JobCounters {
    kind: String,
    succeeded: u64,
    failed: u64,
    skipped: BTreeMap<String, u64>,
    bytes: u64,
    buckets: [u64; DURATION_BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    last_success: Option<f64>,
    last_failure: Option<f64>,
}

/// What `/metrics` serves. Shared between the event loop and the HTTP server.
#[derive(Debug)]
pub struct Metrics {
    objectives: Objectives,
    jobs: Mutex<BTreeMap<String, JobCounters>>,
    facts: Mutex<Option<Facts>>,
}

impl Metrics {
    /// Metrics judged against `objectives`.
    pub fn new(objectives: Objectives) -> Metrics {
        Metrics {
            objectives,
            jobs: Mutex::new(BTreeMap::new()),
            facts: Mutex::new(None),
        }
    }

    /// Count a scheduler event.
    pub fn observe(&self, event: &SchedulerEvent) {
        let mut jobs = self.jobs.lock().unwrap();
        match event {
            SchedulerEvent::Succeeded(o) | SchedulerEvent::Failed(o) => {
                let c = jobs.entry(o.job.clone()).or_default();
                c.kind = o.kind.clone();
                record_outcome(c, o);
            }
            SchedulerEvent::Skipped { job, reason, .. } => {
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                *jobs
                    .entry(job.clone())
                    .or_default()
                    .skipped
                    .entry(reason)
                    .or_default() += 1;
            }
            _ => {}
        }
    }

    /// Replace the repository facts the status gauges are judged from.
    pub fn set_facts(&self, facts: Facts) {
        *self.facts.lock().unwrap() = Some(facts);
    }

    /// The text exposition: job counters and histograms, then the status now.
    pub fn render(&self) -> String {
        let mut e = Exposition::new();
        let jobs = self.jobs.lock().unwrap().clone();
        e.family(
            "dr_job_runs_total",
            MetricType::Counter,
            "Job runs by outcome (succeeded, failed).",
        );
        for (job, c) in &jobs {
            for (outcome, n) in [("succeeded", c.succeeded), ("failed", c.failed)] {
                e.sample(
                    "dr_job_runs_total",
                    &[("job_name", job), ("kind", &c.kind), ("outcome", outcome)],
                    n as f64,
                );
            }
        }
        // One sample a job, labelled with the job's name and kind.
        let per_job =
            |e: &mut Exposition, name: &str, help: &str, value: fn(&JobCounters) -> u64| {
                e.family(name, MetricType::Counter, help);
                for (job, c) in &jobs {
                    e.sample(
                        name,
                        &[("job_name", job), ("kind", &c.kind)],
                        value(c) as f64,
                    );
                }
            };
        per_job(&mut e, "dr_job_failures_total", "Failed job runs.", |c| {
            c.failed
        });
        e.family(
            "dr_job_skipped_total",
            MetricType::Counter,
            "Ticks that did not run, by reason (locked, already_ran, missed, overran).",
        );
        for (job, c) in &jobs {
            for (reason, n) in &c.skipped {
                e.sample(
                    "dr_job_skipped_total",
                    &[("job_name", job), ("reason", reason)],
                    *n as f64,
                );
            }
        }
        per_job(
            &mut e,
            "dr_job_bytes_total",
            "Bytes stored or copied by successful job runs.",
            |c| c.bytes,
        );
        e.family(
            "dr_job_duration_seconds",
            MetricType::Histogram,
            "Wall time of job runs.",
        );
        for (job, c) in &jobs {
            let mut cumulative = 0;
            for (bound, n) in DURATION_BUCKETS.iter().zip(c.buckets) {
                cumulative += n;
                e.sample(
                    "dr_job_duration_seconds_bucket",
                    &[("job_name", job), ("le", &bound.to_string())],
                    cumulative as f64,
                );
            }
            e.sample(
                "dr_job_duration_seconds_bucket",
                &[("job_name", job), ("le", "+Inf")],
                c.duration_count as f64,
            );
            e.sample(
                "dr_job_duration_seconds_sum",
                &[("job_name", job)],
                c.duration_sum,
            );
            e.sample(
                "dr_job_duration_seconds_count",
                &[("job_name", job)],
                c.duration_count as f64,
            );
        }
        for (name, help, pick) in [
            (
                "dr_job_last_success_timestamp_seconds",
                "When the job last succeeded (Unix time).",
                (|c: &JobCounters| c.last_success) as fn(&JobCounters) -> Option<f64>,
            ),
            (
                "dr_job_last_failure_timestamp_seconds",
                "When the job last failed (Unix time).",
                |c: &JobCounters| c.last_failure,
            ),
        ] {
            let values: Vec<_> = jobs
                .iter()
                .filter_map(|(j, c)| pick(c).map(|v| (j, c, v)))
                .collect();
            if values.is_empty() {
                continue;
            }
            e.family(name, MetricType::Gauge, help);
            for (job, c, v) in values {
                e.sample(name, &[("job_name", job), ("kind", &c.kind)], v);
            }
        }
        let mut text = e.finish();
        if let Some(facts) = self.facts.lock().unwrap().as_ref() {
            let status = assess(facts, &self.objectives, Utc::now());
            text.push_str(&crate::report::prometheus::status_metrics(&status));
        }
        text
    }
}

fn record_outcome(c: &mut JobCounters, o: &JobOutcome) {
    let secs = o.duration_ms as f64 / 1000.0;
    let at = o.finished_at.timestamp_millis() as f64 / 1000.0;
    if o.ok {
        c.succeeded += 1;
        c.last_success = Some(at);
        let figures = o.summary.as_ref().map(|s| &s.figures);
        let bytes = figures.and_then(|f| f.get("stored_bytes").or_else(|| f.get("bytes_copied")));
        c.bytes += bytes.and_then(|b| b.as_u64()).unwrap_or(0);
    } else {
        c.failed += 1;
        c.last_failure = Some(at);
    }
    if let Some(i) = DURATION_BUCKETS.iter().position(|b| secs <= *b) {
        c.buckets[i] += 1;
    }
    c.duration_sum += secs;
    c.duration_count += 1;
}
