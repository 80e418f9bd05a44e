//! Line charts as inline SVG: values over time, with horizontal objective lines. Enough for
//! a report that must open anywhere without fetching a charting library.

use std::fmt::Write;

use chrono::{DateTime, Utc};

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line {
    /// Legend text.
    pub name: String,
    /// CSS colour.
    pub color: &'static str,
    /// `(time, value)` points, in time order.
    pub points: Vec<(DateTime<Utc>, f64)>,
}

/// A horizontal line across the chart (an objective).
#[derive(Debug, Clone)]
pub struct Threshold {
    /// Legend text, e.g. `RTO 1 h`.
    pub name: String,
    /// CSS colour.
    pub color: &'static str,
    /// Its value.
    pub value: f64,
}

/// A chart of lines over time.
#[derive(Debug, Clone)]
pub struct LineChart {
    /// The unit of the values, shown on the axis (`s`, `MB`).
    pub unit: String,
    /// The lines.
    pub lines: Vec<Line>,
    /// The thresholds.
    pub thresholds: Vec<Threshold>,
}

/// Background of the plot area; the report's browser test finds charts by it.
pub const PLOT_BACKGROUND: &str = "#f4f7fb";

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 70.0;

impl LineChart {
    /// Whether there is anything to draw.
    pub fn is_empty(&self) -> bool {
        self.lines.iter().all(|l| l.points.is_empty())
    }

    /// The chart as an `<svg>` element; `title` is its accessible name.
    pub fn to_svg(&self, title: &str) -> String {
        let points = self.lines.iter().flat_map(|l| l.points.iter());
        let (mut t0, mut t1) = (i64::MAX, i64::MIN);
        let mut ymax: f64 = 0.0;
        for (t, v) in points {
            t0 = t0.min(t.timestamp_millis());
            t1 = t1.max(t.timestamp_millis());
            ymax = ymax.max(*v);
        }
        for th in &self.thresholds {
            ymax = ymax.max(th.value);
        }
        if t0 > t1 {
            let now = Utc::now().timestamp_millis();
            (t0, t1) = (now, now);
        }
        if t1 - t0 < 60_000 {
            // One point (or all within a minute): a one-hour span around them.
            let mid = t0 + (t1 - t0) / 2;
            (t0, t1) = (mid - 1_800_000, mid + 1_800_000);
        }
        let ymax = nice_ceiling(if ymax > 0.0 { ymax * 1.1 } else { 1.0 });
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * pw;
        let y = |v: f64| TOP + ph - v / ymax * ph;

        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}" font-family="sans-serif" font-size="11">"#,
            escape(title)
        );
        let _ = write!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="{PLOT_BACKGROUND}" stroke="#c8d0da"/>"##
        );
        for i in 0..=4 {
            let v = ymax * f64::from(i) / 4.0;
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#dde3ea"/><text x="{}" y="{:.1}" text-anchor="end">{} {}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y(v) + 4.0,
                short_number(v),
                escape(&self.unit),
                y = y(v),
            );
        }
        for i in 0..=3 {
            let t = t0 + (t1 - t0) * i / 3;
            let when = DateTime::from_timestamp_millis(t).unwrap_or_default();
            let anchor = match i {
                0 => "start",
                3 => "end",
                _ => "middle",
            };
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                x(t),
                TOP + ph + 16.0,
                when.format("%Y-%m-%d %H:%M")
            );
        }
        for th in &self.thresholds {
            let _ = write!(
                s,
                r#"<line x1="{LEFT}" x2="{}" y1="{yv:.1}" y2="{yv:.1}" stroke="{}" stroke-width="2" stroke-dasharray="6 4"><title>{}</title></line>"#,
                LEFT + pw,
                th.color,
                escape(&th.name),
                yv = y(th.value),
            );
        }
        for line in &self.lines {
            let path: Vec<String> = line
                .points
                .iter()
                .map(|(t, v)| format!("{:.1},{:.1}", x(t.timestamp_millis()), y(*v)))
                .collect();
            if path.len() > 1 {
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{}" stroke-width="2.5" points="{}"/>"#,
                    line.color,
                    path.join(" ")
                );
            }
            for (t, v) in &line.points {
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"><title>{}: {} {} at {}</title></circle>"#,
                    x(t.timestamp_millis()),
                    y(*v),
                    line.color,
                    escape(&line.name),
                    short_number(*v),
                    escape(&self.unit),
                    t.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
        // Legend below the time axis.
        let mut lx = LEFT;
        let ly = HEIGHT - 18.0;
        let legend = self
            .lines
            .iter()
            .map(|l| (l.name.as_str(), l.color, false))
            .chain(
                self.thresholds
                    .iter()
                    .map(|t| (t.name.as_str(), t.color, true)),
            );
        for (name, color, dashed) in legend {
            let dash = if dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = write!(
                s,
                r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2.5"{dash}/><text x="{}" y="{}">{}</text>"#,
                lx + 22.0,
                lx + 27.0,
                ly + 4.0,
                escape(name)
            );
            lx += 40.0 + 6.5 * name.chars().count() as f64;
        }
        s.push_str("</svg>");
        s
    }
}

/// The smallest 1, 2 or 5 × 10^n at or above `v`: round axis maxima.
fn nice_ceiling(v: f64) -> f64 {
    let exp = v.log10().floor();
    let base = 10f64.powf(exp);
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * base >= v {
            return m * base;
        }
    }
    10.0 * base
}

/// `1.5`, `12`, `1200`: axis and tooltip numbers without noise.
fn short_number(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Text safe inside HTML and SVG elements and attributes.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(3.3), 5.0);
        assert_eq!(nice_ceiling(3960.0), 5000.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }

    #[test]
    fn names_are_escaped_and_thresholds_drawn_dashed() {
        let t: DateTime<Utc> = "2026-12-01T01:00:00Z".parse().unwrap();
        let chart = LineChart {
            unit: "s".into(),
            lines: vec![Line {
                name: "<app>".into(),
                color: "#1f77b4",
                points: vec![(t, 4.0)],
            }],
            thresholds: vec![Threshold {
                name: "RTO 1 h".into(),
                color: "#d62728",
                value: 3600.0,
            }],
        };
        let svg = chart.to_svg("a & b");
        assert!(svg.contains("aria-label=\"a &amp; b\""));
        assert!(svg.contains("&lt;app&gt;") && !svg.contains("<app>"));
        assert!(svg.contains("stroke-dasharray=\"6 4\""));
        assert!(
            svg.contains("5000 s"),
            "the axis reaches past the objective"
        );
    }
}
