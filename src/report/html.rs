//! The report as one self-contained HTML page: inline CSS and SVG, no scripts, nothing
//! fetched, so it opens from a mail attachment or an air-gapped share as it was written.

use std::fmt::Write;

use super::svg::{escape, Line, LineChart, Threshold};
use super::{verdict_reasons, when, Report};
use crate::status::{secs, Health};

/// Colours of the series lines, in series order.
const PALETTE: [&str; 6] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
];
/// Colour of objective lines.
const OBJECTIVE: &str = "#d62728";

const STYLE: &str =
    "body{font-family:sans-serif;margin:2em auto;max-width:64em;color:#1b1f24;padding:0 1em}\
h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #d0d7de}\
table{border-collapse:collapse;width:100%;font-size:.92em}\
th,td{border:1px solid #d0d7de;padding:.3em .5em;text-align:left;vertical-align:top}\
th{background:#f0f3f6}.ok{color:#1a7f37}.warning{color:#9a6700}.breached,.failed{color:#cf222e}\
.unknown{color:#57606a}.verdict{font-weight:bold;text-transform:uppercase}\
figure{margin:1em 0}figcaption{font-weight:bold;margin-bottom:.3em}.muted{color:#57606a}";

/// The whole page.
pub fn render(report: &Report) -> String {
    let status = &report.status;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>dr recoverability report</title><style>{STYLE}</style></head><body>\n"
    );
    let _ = write!(
        h,
        "<h1>Recoverability report</h1>\n<p class=\"muted\">{} · generated {}</p>\n\
         <p>Verdict: <span id=\"verdict\" class=\"verdict {}\">{}</span></p>\n",
        escape(&status.repository),
        when(status.at),
        status.health.as_str(),
        status.health.as_str()
    );
    for r in status.reasons() {
        let _ = writeln!(h, "<p class=\"breached\">{}</p>", escape(&r));
    }

    objectives(&mut h, report);
    series_table(&mut h, report);
    drill_charts(&mut h, report);
    backup_charts(&mut h, report);
    last_results(&mut h, report);
    failures(&mut h, report);
    h.push_str("</body></html>\n");
    h
}

fn objective(s: Option<u64>) -> String {
    s.map_or("none set".into(), |s| secs(s as i64))
}

fn objectives(h: &mut String, report: &Report) {
    let o = &report.status.objectives;
    let _ = write!(
        h,
        "<h2>Objectives</h2>\n<table id=\"objectives\"><tr><th>Recovery point objective (RPO)</th><td>{}</td></tr>\
         <tr><th>Recovery time objective (RTO)</th><td>{}</td></tr></table>\n",
        objective(o.rpo_secs),
        objective(o.rto_secs)
    );
}

fn health(h: Health) -> String {
    format!("<span class=\"verdict {0}\">{0}</span>", h.as_str())
}

fn series_table(h: &mut String, report: &Report) {
    h.push_str("<h2>Status by series</h2>\n");
    if report.status.series.is_empty() {
        h.push_str("<p>No complete backups.</p>\n");
        return;
    }
    h.push_str(
        "<table id=\"series\"><tr><th>Series</th><th>Verdict</th><th>Newest backup</th>\
         <th>Last verify</th><th>Last drill</th><th>Findings</th></tr>\n",
    );
    for s in &report.status.series {
        let check = |r: &Option<dr_core::records::CheckRecord>| match r {
            Some(r) => format!(
                "{} <span class=\"{}\">{}</span>",
                when(r.finished_at),
                if r.passed { "ok" } else { "failed" },
                if r.passed { "passed" } else { "failed" }
            ),
            None => "never".into(),
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}<br><span class=\"muted\">{} old, {} backups</span></td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.series.to_string()),
            health(s.health),
            escape(&s.newest.id),
            secs(s.backup_age_secs),
            s.backups,
            check(&s.last_verify),
            check(&s.last_drill),
            escape(&s.reasons.join("; "))
        );
    }
    let t = &report.status.totals;
    let _ = writeln!(
        h,
        "</table>\n<p class=\"muted\">{} complete backups ({} incomplete) in {} series, {} bytes stored; {} check records.</p>",
        t.backups, t.incomplete, t.series, t.stored_bytes, t.records
    );
}

fn figure(h: &mut String, id: &str, caption: &str, chart: &LineChart, empty: &str) {
    let _ = write!(
        h,
        "<figure id=\"{id}\"><figcaption>{}</figcaption>",
        escape(caption)
    );
    if chart.is_empty() {
        let _ = write!(h, "<p class=\"muted\">{}</p>", escape(empty));
    } else {
        h.push_str(&chart.to_svg(caption));
    }
    h.push_str("</figure>\n");
}

fn drill_charts(h: &mut String, report: &Report) {
    h.push_str("<h2>Recovery time and recovery point measured by drills</h2>\n");
    let series = report.series();
    let lines = |pick: &dyn Fn(&dr_core::records::CheckRecord) -> Option<f64>| -> Vec<Line> {
        series
            .iter()
            .enumerate()
            .map(|(i, s)| Line {
                name: s.name.clone(),
                color: PALETTE[i % PALETTE.len()],
                points: report
                    .drills()
                    .filter(|d| &&d.series == s)
                    .filter_map(|d| pick(d).map(|v| (d.finished_at, v)))
                    .collect(),
            })
            .filter(|l| !l.points.is_empty())
            .collect()
    };
    let o = &report.status.objectives;
    let threshold = |name: &str, v: Option<u64>| {
        v.map(|v| Threshold {
            name: format!("{name} {}", secs(v as i64)),
            color: OBJECTIVE,
            value: v as f64,
        })
        .into_iter()
        .collect()
    };
    let rto = LineChart {
        unit: "s".into(),
        lines: lines(&|d| d.recovery_time_ms.map(|ms| ms as f64 / 1000.0)),
        thresholds: threshold("RTO", o.rto_secs),
    };
    figure(
        h,
        "chart-rto",
        "Recovery time (restore and checks) per drill",
        &rto,
        "No drills recorded yet: run drctl drill.",
    );
    let rpo = LineChart {
        unit: "s".into(),
        lines: lines(&|d| d.recovery_point_secs.map(|s| s as f64)),
        thresholds: threshold("RPO", o.rpo_secs),
    };
    figure(
        h,
        "chart-rpo",
        "Recovery point (age of the restored data) per drill",
        &rpo,
        "No drills recorded yet: run drctl drill.",
    );
}

fn backup_charts(h: &mut String, report: &Report) {
    h.push_str("<h2>Backups over time</h2>\n");
    let series = report.series();
    let lines = |pick: &dyn Fn(&crate::status::BackupBrief) -> f64| -> Vec<Line> {
        series
            .iter()
            .enumerate()
            .map(|(i, s)| Line {
                name: s.name.clone(),
                color: PALETTE[i % PALETTE.len()],
                points: report
                    .backups
                    .iter()
                    .filter(|(bs, _)| &bs == s)
                    .map(|(_, b)| (b.finished_at, pick(b)))
                    .collect(),
            })
            .filter(|l| !l.points.is_empty())
            .collect()
    };
    let size = LineChart {
        unit: "MB".into(),
        lines: lines(&|b| b.stored_bytes as f64 / 1e6),
        thresholds: Vec::new(),
    };
    figure(
        h,
        "chart-size",
        "Stored size per backup",
        &size,
        "No complete backups.",
    );
    let duration = LineChart {
        unit: "s".into(),
        lines: lines(&|b| b.duration_ms as f64 / 1000.0),
        thresholds: Vec::new(),
    };
    figure(
        h,
        "chart-duration",
        "Duration per backup",
        &duration,
        "No complete backups.",
    );
}

fn last_results(h: &mut String, report: &Report) {
    h.push_str("<h2>Last verify and drill results</h2>\n");
    if report.records.is_empty() {
        h.push_str("<p>No verify or drill has been recorded.</p>\n");
        return;
    }
    h.push_str(
        "<table id=\"results\"><tr><th>Finished</th><th>Check</th><th>Series</th><th>Backup</th>\
         <th>Recovery time</th><th>Recovery point</th><th>Result</th></tr>\n",
    );
    for r in report.records.iter().take(30) {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            when(r.finished_at),
            r.kind,
            escape(&r.series.to_string()),
            escape(&r.backup_id),
            r.recovery_time_ms
                .map_or("–".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
            r.recovery_point_secs.map_or("–".into(), secs),
            if r.passed { "ok" } else { "failed" },
            escape(&verdict_reasons(r))
        );
    }
    h.push_str("</table>\n");
}

fn failures(h: &mut String, report: &Report) {
    h.push_str("<h2>Failures</h2>\n");
    let failed: Vec<_> = report.failures().collect();
    if failed.is_empty() {
        h.push_str("<p id=\"failures\">No failed verify or drill recorded.</p>\n");
        return;
    }
    h.push_str("<ul id=\"failures\">\n");
    for r in failed {
        let _ = writeln!(
            h,
            "<li class=\"failed\">{} {} of backup {} ({}): {}</li>",
            when(r.finished_at),
            r.kind,
            escape(&r.backup_id),
            escape(&r.series.to_string()),
            escape(&verdict_reasons(r))
        );
    }
    h.push_str("</ul>\n");
}
