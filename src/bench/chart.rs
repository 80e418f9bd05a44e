//! The pipeline benchmark's picture: throughput against compression ratio, one labelled
//! point per setting, as a standalone SVG file.
//!
//! Written by hand (about 200 lines) rather than with a plotting crate: the chart is one
//! scatter plot, the output is plain text that diffs well when committed under `docs/`,
//! and plotting crates pull in font and image stacks that dr does not otherwise need.

use std::fmt::Write;

use super::pipeline::PipelineResult;

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 60.0;
/// Estimated advance of one label character at the labels' 12 px font.
const CHAR_W: f64 = 6.8;
const LABEL_H: f64 = 13.0;

/// One point: where it goes and what it says.
#[derive(Debug, Clone)]
pub struct ChartPoint {
    /// The label drawn next to the point.
    pub label: String,
    /// Horizontal value (compression ratio).
    pub x: f64,
    /// Vertical value (MB/s).
    pub y: f64,
    /// The series the point belongs to (its colour and legend entry), e.g. the cipher.
    pub series: String,
}

/// The chart of a pipeline benchmark: end-to-end backup MB/s against ratio, one point per
/// setting, coloured by cipher and labelled with its codec (and, when several ciphers are
/// measured, the cipher's short name, so every label names its setting).
pub fn pipeline_chart(results: &[PipelineResult], title: &str) -> String {
    let one_cipher = results.iter().all(|r| r.cipher == results[0].cipher);
    let points: Vec<ChartPoint> = results
        .iter()
        .map(|r| ChartPoint {
            label: if one_cipher {
                r.codec.clone()
            } else {
                format!("{} {}", r.codec, short_cipher(&r.cipher))
            },
            x: r.ratio,
            y: r.mb_per_s,
            series: r.cipher.clone(),
        })
        .collect();
    scatter(
        &points,
        title,
        "compression ratio (raw bytes / stored bytes)",
        "backup pipeline throughput, MB/s (log scale)",
    )
}

/// `aes-256-gcm` → `AES`, `chacha20-poly1305` → `ChaCha`.
fn short_cipher(cipher: &str) -> &str {
    match cipher {
        "aes-256-gcm" => "AES",
        "chacha20-poly1305" => "ChaCha",
        other => other,
    }
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// A labelled scatter plot as an SVG document.
pub fn scatter(points: &[ChartPoint], title: &str, x_label: &str, y_label: &str) -> String {
    let (x0, x1, x_step) = axis_range(points.iter().map(|p| p.x), false);
    let (y_ticks, ly0, ly1) = log_axis(points.iter().map(|p| p.y));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_w;
    // Throughputs span orders of magnitude (gzip:6 to none): a log scale keeps the slow
    // settings apart.
    let py = |y: f64| TOP + plot_h - (y.max(1e-9).log10() - ly0) / (ly1 - ly0) * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text class="title" x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid, ticks and axis titles.
    let mut v = x0;
    while v <= x1 + x_step / 2.0 {
        let x = px(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 16.0,
            tick(v, x_step)
        );
        v += x_step;
    }
    for &v in &y_ticks {
        let y = py(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            tick(v, v)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text class="axis" x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 18.0,
        escape(x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text class="axis" x="0" y="0" font-size="13" text-anchor="middle" transform="translate(22 {:.1}) rotate(-90)">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(y_label)
    );

    // Legend: one entry per series, in order of first appearance.
    let mut series: Vec<&str> = Vec::new();
    for p in points {
        if !series.contains(&p.series.as_str()) {
            series.push(&p.series);
        }
    }
    let colour =
        |s: &str| COLOURS[series.iter().position(|x| *x == s).unwrap_or(0) % COLOURS.len()];
    let mut x = LEFT;
    for s in &series {
        let y = TOP - 12.0;
        let _ = writeln!(
            svg,
            r#"<g class="legend"><circle cx="{:.1}" cy="{:.1}" r="5" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12">{}</text></g>"#,
            x,
            y - 4.0,
            colour(s),
            x + 10.0,
            y,
            escape(s)
        );
        x += 30.0 + s.chars().count() as f64 * CHAR_W;
    }

    // Points, then labels placed where they overlap neither other labels nor points.
    let centres: Vec<(f64, f64)> = points.iter().map(|p| (px(p.x), py(p.y))).collect();
    let mut taken: Vec<Rect> = centres
        .iter()
        .map(|&(x, y)| Rect::new(x - 5.0, y - 5.0, 10.0, 10.0))
        .collect();
    let bounds = Rect::new(LEFT, TOP, plot_w, plot_h);
    for (p, &(cx, cy)) in points.iter().zip(&centres) {
        let w = p.label.chars().count() as f64 * CHAR_W;
        let (lx, ly) = place_label(cx, cy, w, &taken, &bounds);
        taken.push(Rect::new(lx, ly - LABEL_H + 3.0, w, LABEL_H));
        // A label pushed away from its point gets a thin line back to it.
        let leader = if (ly - 4.0 - cy).abs() > LABEL_H {
            let ax = if lx > cx { lx - 2.0 } else { lx + w + 2.0 };
            format!(
                r##"<line x1="{cx:.1}" y1="{cy:.1}" x2="{ax:.1}" y2="{:.1}" stroke="#999" stroke-width="0.7"/>"##,
                ly - 4.0
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            svg,
            r#"<g class="point"><title>{} ({}): ratio {:.2}, {:.0} MB/s</title>{leader}<circle cx="{cx:.1}" cy="{cy:.1}" r="5" fill="{}"/><text class="label" x="{lx:.1}" y="{ly:.1}" font-size="12">{}</text></g>"#,
            escape(&p.label),
            escape(&p.series),
            p.x,
            p.y,
            colour(&p.series),
            escape(&p.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[derive(Debug, Clone, Copy)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn new(x: f64, y: f64, w: f64, h: f64) -> Self {
        Rect { x, y, w, h }
    }
    fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
    fn inside(&self, o: &Rect) -> bool {
        self.x >= o.x
            && self.y >= o.y
            && self.x + self.w <= o.x + o.w
            && self.y + self.h <= o.y + o.h
    }
}

/// The baseline position of a label `w` wide for the point at (cx, cy): the first of a ring
/// of candidates around the point that stays in the plot and clear of what is `taken`.
fn place_label(cx: f64, cy: f64, w: f64, taken: &[Rect], bounds: &Rect) -> (f64, f64) {
    let mut candidates = Vec::new();
    for step in 0..14 {
        let d = step as f64 * LABEL_H;
        for (dx, dy) in [
            (8.0, 4.0 - d),
            (8.0, 4.0 + d),
            (-8.0 - w, 4.0 - d),
            (-8.0 - w, 4.0 + d),
        ] {
            candidates.push((cx + dx, cy + dy));
        }
    }
    candidates
        .iter()
        .copied()
        .find(|&(x, y)| {
            let r = Rect::new(x, y - LABEL_H + 3.0, w, LABEL_H);
            r.inside(bounds) && !taken.iter().any(|t| t.overlaps(&r))
        })
        .unwrap_or((cx + 8.0, cy + 4.0))
}

/// An axis from a "nice" number below the values to one above, and its tick step.
/// `from_zero` starts it at 0 (throughput); otherwise it hugs the data (ratios).
fn axis_range(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.08
    } else {
        hi.abs().max(1.0) * 0.1
    };
    let (lo, hi) = (if from_zero { lo } else { lo - pad }, hi + pad);
    let step = nice_step((hi - lo) / 6.0);
    let lo = (lo / step).floor() * step;
    let hi = (hi / step).ceil() * step;
    (lo.max(if from_zero { 0.0 } else { f64::MIN }), hi, step)
}

/// A log axis over positive `values`: ticks at 1, 2 and 5 times powers of ten, and the
/// axis's ends as log10.
fn log_axis(values: impl Iterator<Item = f64>) -> (Vec<f64>, f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo.is_finite() {
        (lo, hi)
    } else {
        (1.0, 10.0)
    };
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi * 10.0 {
        for m in [1.0, 2.0, 5.0] {
            ticks.push(m * decade);
        }
        decade *= 10.0;
    }
    let below = ticks
        .iter()
        .copied()
        .filter(|t| *t <= lo)
        .fold(ticks[0], f64::max);
    let above = ticks
        .iter()
        .copied()
        .find(|t| *t >= hi * 1.15)
        .unwrap_or(hi * 2.0);
    ticks.retain(|t| *t >= below && *t <= above);
    (ticks, below.log10(), above.log10())
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

fn tick(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_covers_the_data_with_round_ticks() {
        let (ticks, lo, hi) = log_axis([23.0, 1400.0].into_iter());
        assert_eq!(ticks.first(), Some(&20.0));
        assert_eq!(ticks.last(), Some(&2000.0));
        assert!(lo <= 23f64.log10() && hi >= 1400f64.log10());
    }

    #[test]
    fn steps_are_round_and_cover_the_data() {
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(nice_step(37.0), 50.0);
        let (lo, hi, step) = axis_range([1.0, 2.71].into_iter(), false);
        assert!(lo <= 1.0 && hi >= 2.71 && step > 0.0, "{lo} {hi} {step}");
        let (lo, hi, _) = axis_range([120.0, 900.0].into_iter(), true);
        assert_eq!(lo, 0.0);
        assert!(hi >= 900.0);
    }

    #[test]
    fn labels_do_not_overlap_when_points_coincide() {
        let bounds = Rect::new(0.0, 0.0, 800.0, 400.0);
        let mut taken = vec![Rect::new(395.0, 195.0, 10.0, 10.0)];
        let mut placed = Vec::new();
        for _ in 0..3 {
            let (x, y) = place_label(400.0, 200.0, 60.0, &taken, &bounds);
            let r = Rect::new(x, y - LABEL_H + 3.0, 60.0, LABEL_H);
            assert!(!taken.iter().any(|t| t.overlaps(&r)));
            taken.push(r);
            placed.push((x, y));
        }
        assert_eq!(placed.len(), 3);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
