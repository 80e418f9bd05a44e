//! The report as Markdown, to paste into the runbook's "document results": the same
//! sections as the HTML page, with tables where the page has charts.

use std::fmt::Write;

use super::{verdict_reasons, when, Report};
use crate::status::secs;

/// The whole report.
pub fn render(report: &Report) -> String {
    let status = &report.status;
    let o = &status.objectives;
    let objective = |s: Option<u64>| s.map_or("none set".into(), |s| secs(s as i64));
    let mut m = String::new();
    let _ = writeln!(m, "# Recoverability report\n");
    let _ = writeln!(
        m,
        "Repository `{}`, generated {}. Verdict: **{}**.\n",
        status.repository,
        when(status.at),
        status.health.as_str()
    );
    for r in status.reasons() {
        let _ = writeln!(m, "- {}", cell(&r));
    }
    let _ = writeln!(
        m,
        "\n## Objectives\n\n| objective | value |\n|---|---|\n| recovery point (RPO) | {} |\n| recovery time (RTO) | {} |\n",
        objective(o.rpo_secs),
        objective(o.rto_secs)
    );

    let _ = writeln!(
        m,
        "## Status by series\n\n| series | verdict | newest backup | age | last verify | last drill |\n|---|---|---|---|---|---|"
    );
    for s in &status.series {
        let check = |r: &Option<dr_core::records::CheckRecord>| {
            r.as_ref().map_or("never".into(), |r| {
                format!(
                    "{} {}",
                    when(r.finished_at),
                    if r.passed { "passed" } else { "FAILED" }
                )
            })
        };
        let _ = writeln!(
            m,
            "| `{}` | {} | `{}` | {} | {} | {} |",
            cell(&s.series.to_string()),
            s.health.as_str(),
            s.newest.id,
            secs(s.backup_age_secs),
            check(&s.last_verify),
            check(&s.last_drill)
        );
    }

    let _ = writeln!(
        m,
        "\n## Drills\n\n| finished | series | backup | recovery time | recovery point | result |\n|---|---|---|---|---|---|"
    );
    let drills: Vec<_> = report.drills().collect();
    for d in drills.iter().rev() {
        let _ = writeln!(
            m,
            "| {} | `{}` | `{}` | {} | {} | {} |",
            when(d.finished_at),
            cell(&d.series.to_string()),
            d.backup_id,
            d.recovery_time_ms
                .map_or("–".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
            d.recovery_point_secs.map_or("–".into(), secs),
            cell(&verdict_reasons(d))
        );
    }
    if drills.is_empty() {
        let _ = writeln!(m, "| – | no drills recorded | | | | |");
    }

    let _ = writeln!(
        m,
        "\n## Backups\n\n| finished | series | backup | stored bytes | duration |\n|---|---|---|---|---|"
    );
    for (series, b) in report.backups.iter().rev().take(50) {
        let _ = writeln!(
            m,
            "| {} | `{}` | `{}` | {} | {:.1} s |",
            when(b.finished_at),
            cell(&series.to_string()),
            b.id,
            b.stored_bytes,
            b.duration_ms as f64 / 1000.0
        );
    }

    let _ = writeln!(m, "\n## Failures\n");
    let mut any = false;
    for r in report.failures() {
        any = true;
        let _ = writeln!(
            m,
            "- {} {} of backup `{}` (`{}`): {}",
            when(r.finished_at),
            r.kind,
            r.backup_id,
            cell(&r.series.to_string()),
            cell(&verdict_reasons(r))
        );
    }
    if !any {
        let _ = writeln!(m, "No failed verify or drill recorded.");
    }
    m
}

/// Text safe in a table cell: pipes escaped, on one line.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
