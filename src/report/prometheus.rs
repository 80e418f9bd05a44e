//! A [`Status`] as Prometheus metrics (`drctl status --prometheus`, for the node exporter's
//! textfile collector or a pushgateway). Names follow what people already scrape:
//! `dr_backup_since_last_completion_seconds` is pgbackrest_exporter's
//! `pgbackrest_backup_since_last_completion_seconds` for dr.

use super::exposition::{Exposition, MetricType};
use crate::status::{Health, Status};

/// The status as text exposition: health, per-series backup age, size, count, last verify
/// and drill, objectives, repository totals and leases.
pub fn status_metrics(status: &Status) -> String {
    let mut e = Exposition::new();
    let now = status.at;
    let ts = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis() as f64 / 1000.0;

    e.family(
        "dr_status",
        MetricType::Gauge,
        "Recoverability verdict: 0 ok, 1 warning, 2 objective breached, 3 unknown.",
    )
    .sample("dr_status", &[], status.health.exit_code() as f64);
    if let Some(rpo) = status.objectives.rpo_secs {
        e.family(
            "dr_objective_rpo_seconds",
            MetricType::Gauge,
            "Recovery point objective.",
        )
        .sample("dr_objective_rpo_seconds", &[], rpo as f64);
    }
    if let Some(rto) = status.objectives.rto_secs {
        e.family(
            "dr_objective_rto_seconds",
            MetricType::Gauge,
            "Recovery time objective.",
        )
        .sample("dr_objective_rto_seconds", &[], rto as f64);
    }

    type Pick = fn(&crate::status::SeriesStatus, chrono::DateTime<chrono::Utc>) -> Option<f64>;
    let per_series: [(&str, &str, Pick); 17] = [
        (
            "dr_series_status",
            "The series' verdict: 0 ok, 1 warning, 2 objective breached, 3 unknown.",
            |s, _| Some(health_code(s.health)),
        ),
        (
            "dr_backup_since_last_completion_seconds",
            "Seconds since the newest complete backup of the series was committed.",
            |s, now| Some((now - s.newest.finished_at).num_milliseconds() as f64 / 1000.0),
        ),
        (
            "dr_backup_age_seconds",
            "Age of the newest complete backup's data: what a disaster now would lose.",
            |s, _| Some(s.backup_age_secs as f64),
        ),
        (
            "dr_backup_last_stored_bytes",
            "Bytes stored by the newest complete backup.",
            |s, _| Some(s.newest.stored_bytes as f64),
        ),
        (
            "dr_backup_last_duration_seconds",
            "Wall time of the newest complete backup.",
            |s, _| Some(s.newest.duration_ms as f64 / 1000.0),
        ),
        (
            "dr_series_backups",
            "Complete backups of the series.",
            |s, _| Some(s.backups as f64),
        ),
        (
            "dr_series_stored_bytes",
            "Bytes stored by the series' complete backups.",
            |s, _| Some(s.stored_bytes as f64),
        ),
        (
            "dr_verify_last_success",
            "Whether the last verify of the series passed (1) or failed (0).",
            |s, _| {
                s.last_verify
                    .as_ref()
                    .map(|v| f64::from(u8::from(v.passed)))
            },
        ),
        (
            "dr_drill_last_success",
            "Whether the last restore drill of the series passed (1) or failed (0).",
            |s, _| s.last_drill.as_ref().map(|d| f64::from(u8::from(d.passed))),
        ),
        (
            "dr_drill_last_recovery_time_seconds",
            "Recovery time the last restore drill measured (restore and checks).",
            |s, _| {
                s.last_drill
                    .as_ref()
                    .and_then(|d| d.recovery_time_ms)
                    .map(|ms| ms as f64 / 1000.0)
            },
        ),
        (
            "dr_drill_last_recovery_point_seconds",
            "Recovery point the last restore drill measured (its backup's data age).",
            |s, _| {
                s.last_drill
                    .as_ref()
                    .and_then(|d| d.recovery_point_secs)
                    .map(|v| v as f64)
            },
        ),
        (
            "dr_wal_newest_age_seconds",
            "Seconds since the newest WAL segment of a physical series' cluster was archived: what a disaster now would lose.",
            |s, _| {
                s.wal
                    .as_ref()
                    .and_then(|w| w.newest_age_secs)
                    .map(|v| v as f64)
            },
        ),
        (
            "dr_wal_pitr_window_seconds",
            "Length of the newest continuous stretch of time the archive can recover to.",
            |s, _| s.wal.as_ref().and_then(|w| w.window_secs).map(|v| v as f64),
        ),
        (
            "dr_wal_pitr_window_start_timestamp_seconds",
            "The earliest time the archive can recover to (Unix time).",
            |s, _| {
                s.wal
                    .as_ref()
                    .and_then(|w| w.window_from)
                    .map(|t| t.timestamp_millis() as f64 / 1000.0)
            },
        ),
        (
            "dr_wal_gaps",
            "Places where the WAL archive misses segments between archived ones.",
            |s, _| s.wal.as_ref().map(|w| w.gaps as f64),
        ),
        (
            "dr_wal_push_failing",
            "1 while a WAL push has failed and archiving has not got past it (PostgreSQL keeps retrying; WAL piles up on the database host), else 0.",
            |s, _| s.wal.as_ref().map(|w| f64::from(u8::from(w.push_failure.is_some()))),
        ),
        (
            "dr_wal_push_failure_timestamp_seconds",
            "When the WAL push that archiving has not got past failed (Unix time).",
            |s, _| {
                s.wal
                    .as_ref()
                    .and_then(|w| w.push_failure.as_ref())
                    .map(|f| f.at.timestamp_millis() as f64 / 1000.0)
            },
        ),
    ];
    for (name, help, pick) in per_series {
        let values: Vec<_> = status
            .series
            .iter()
            .filter_map(|s| pick(s, now).map(|v| (s, v)))
            .collect();
        if values.is_empty() {
            continue;
        }
        e.family(name, MetricType::Gauge, help);
        for (s, v) in values {
            let text = s.series.to_string();
            e.sample(
                name,
                &[
                    ("series", &text),
                    ("kind", &s.series.kind),
                    ("origin", &s.series.origin),
                    ("name", &s.series.name),
                ],
                v,
            );
        }
    }
    for (name, help, kind, pick) in [
        (
            "dr_verify_last_timestamp_seconds",
            "When the last verify of the series finished (Unix time).",
            0,
            ts as fn(_) -> f64,
        ),
        (
            "dr_drill_last_timestamp_seconds",
            "When the last restore drill of the series finished (Unix time).",
            1,
            ts,
        ),
    ] {
        let values: Vec<_> = status
            .series
            .iter()
            .filter_map(|s| {
                let r = if kind == 0 {
                    &s.last_verify
                } else {
                    &s.last_drill
                };
                r.as_ref().map(|r| (s, pick(r.finished_at)))
            })
            .collect();
        if values.is_empty() {
            continue;
        }
        e.family(name, MetricType::Gauge, help);
        for (s, v) in values {
            e.sample(name, &[("series", &s.series.to_string())], v);
        }
    }

    let t = &status.totals;
    for (name, help, v) in [
        (
            "dr_repository_backups",
            "Complete backups in the repository.",
            t.backups,
        ),
        (
            "dr_repository_incomplete_backups",
            "Uploads without a manifest: running or failed backups.",
            t.incomplete,
        ),
        (
            "dr_repository_series",
            "Backup series in the repository.",
            t.series,
        ),
        (
            "dr_repository_check_records",
            "Verify and drill records in the repository.",
            t.records,
        ),
    ] {
        e.family(name, MetricType::Gauge, help)
            .sample(name, &[], v as f64);
    }
    for (name, help, v) in [
        (
            "dr_repository_stored_bytes",
            "Bytes stored by complete backups.",
            t.stored_bytes,
        ),
        (
            "dr_repository_raw_bytes",
            "Bytes of complete backups before compression and encryption.",
            t.raw_bytes,
        ),
    ] {
        e.family(name, MetricType::Gauge, help)
            .sample(name, &[], v as f64);
    }
    e.family(
        "dr_leases",
        MetricType::Gauge,
        "Leases in the repository by state (held, expired, released).",
    );
    for state in ["held", "expired", "released"] {
        let n = status.leases.iter().filter(|l| l.state == state).count();
        e.sample("dr_leases", &[("state", state)], n as f64);
    }
    e.finish()
}

fn health_code(h: Health) -> f64 {
    f64::from(h.exit_code())
}
