//! The Prometheus text exposition format (version 0.0.4), written by hand: a few families of
//! gauges, counters and histograms need no client library.

use std::fmt::Write;

/// Builds one exposition: families in the order added, each with its `# HELP` and `# TYPE`.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (its name ends in `_total`).
    Counter,
    /// Observations counted into buckets (`_bucket`, `_sum`, `_count` samples).
    Histogram,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Start the family `name` (its samples follow).
    pub fn family(&mut self, name: &str, kind: MetricType, help: &str) -> &mut Self {
        let kind = match kind {
            MetricType::Gauge => "gauge",
            MetricType::Counter => "counter",
            MetricType::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self
    }

    /// One sample `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
        self
    }

    /// The text, ready to serve as `text/plain; version=0.0.4`.
    pub fn finish(self) -> String {
        self.text
    }
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: integers without a fraction, `+Inf`, `-Inf`, `NaN` spelled as Prometheus
/// reads them.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_spelled_as_prometheus_reads_them() {
        let mut e = Exposition::new();
        e.family("x_seconds", MetricType::Gauge, "A test.")
            .sample("x_seconds", &[("path", "a\"b\\c\nd")], 1.5)
            .sample("x_seconds", &[], f64::INFINITY)
            .sample("x_seconds", &[("k", "v")], 3.0);
        assert_eq!(
            e.finish(),
            "# HELP x_seconds A test.\n# TYPE x_seconds gauge\n\
             x_seconds{path=\"a\\\"b\\\\c\\nd\"} 1.5\nx_seconds +Inf\nx_seconds{k=\"v\"} 3\n"
        );
    }
}
