//! `drctl bench pipeline` and `drctl bench storage` end to end: the real binary, a real
//! PostgreSQL dump as input, a real file repository. Only the output's shape and
//! consistency are asserted; speeds are figures for BENCHMARKS.md, not test outcomes.

mod common;

use std::collections::BTreeSet;

use common::*;

const CODECS: [&str; 3] = ["zstd:1", "gzip:1", "none"];
const CIPHERS: [&str; 2] = ["aes-256-gcm", "chacha20-poly1305"];

fn json_of(out: &std::process::Output) -> serde_json::Value {
    ok(out);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The (label, circle count) of every `<g class="point">` of an SVG document; panics if the
/// document is not well-formed XML.
fn chart_points(svg: &str) -> Vec<(String, usize)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(svg);
    let mut points = Vec::new();
    let mut depth_in_point = 0usize;
    let mut in_label = false;
    let mut label = String::new();
    let mut circles = 0usize;
    let mut saw_svg = false;
    loop {
        match reader.read_event().expect("the chart is well-formed XML") {
            Event::Start(e) => {
                let class = e
                    .try_get_attribute("class")
                    .unwrap()
                    .map(|a| String::from_utf8_lossy(&a.value).into_owned());
                if e.name().as_ref() == b"svg" {
                    saw_svg = true;
                }
                if depth_in_point > 0 {
                    depth_in_point += 1;
                    in_label = e.name().as_ref() == b"text" && class.as_deref() == Some("label");
                } else if e.name().as_ref() == b"g" && class.as_deref() == Some("point") {
                    depth_in_point = 1;
                    label.clear();
                    circles = 0;
                }
            }
            Event::Empty(e) if depth_in_point > 0 && e.name().as_ref() == b"circle" => circles += 1,
            Event::Text(t) if in_label => label.push_str(&t.decode().unwrap()),
            Event::End(_) if depth_in_point > 0 => {
                in_label = false;
                depth_in_point -= 1;
                if depth_in_point == 0 {
                    points.push((label.clone(), circles));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(saw_svg, "no <svg> element");
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_reports_every_setting_and_charts_one_labelled_point_each() {
    let cluster = cluster_with_sample(1).await;
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("chart.svg");
    let out = drctl(
        &[
            "--json",
            "bench",
            "pipeline",
            "--db",
            &cluster.url("app"),
            "--limit",
            "2MB",
            "--codecs",
            &CODECS.join(","),
            "--ciphers",
            &CIPHERS.join(","),
            "--chart",
            chart.to_str().unwrap(),
        ],
        &[],
    );
    let rows = json_of(&out);
    let rows = rows.as_array().expect("an array, one object per setting");
    assert_eq!(rows.len(), CODECS.len() * CIPHERS.len());
    let mut seen = BTreeSet::new();
    for r in rows {
        let codec = r["codec"].as_str().expect("codec");
        let cipher = r["cipher"].as_str().expect("cipher");
        assert!(seen.insert((codec.to_string(), cipher.to_string())));
        let ratio = r["ratio"].as_f64().expect("ratio");
        let mb_per_s = r["mb_per_s"].as_f64().expect("mb_per_s");
        assert!(mb_per_s > 0.0, "{r}");
        assert_eq!(r["input_bytes"], 2_000_000, "--limit applies");
        let stored = r["stored_bytes"].as_f64().unwrap();
        assert!((ratio - 2e6 / stored).abs() < 1e-9, "{r}");
        for stage in ["compress", "encrypt", "hash", "decrypt", "decompress"] {
            assert!(r["stages"][stage].as_f64().unwrap() > 0.0, "{stage}: {r}");
        }
        // Each setting is measured in a process of its own, so each shows the memory its
        // pipeline added (in one process, later settings reused the first one's and showed 0).
        assert!(
            r["peak_memory_bytes"].as_u64().expect("peak memory") > 0,
            "{r}"
        );
        // /proc counts CPU time in 10 ms ticks: a tiny run may show 0.
        assert!(r["cpu_seconds"].as_f64().unwrap() >= 0.0, "{r}");
        if codec == "none" {
            // Encryption only adds its header and tags.
            assert!(ratio < 1.0 && ratio > 0.99, "{r}");
        } else {
            // A pg_dump archive of the sample (text, bytea) compresses.
            assert!(ratio > 1.2, "{r}");
        }
    }
    let expected: BTreeSet<(String, String)> = CODECS
        .iter()
        .flat_map(|c| CIPHERS.iter().map(move |k| (c.to_string(), k.to_string())))
        .collect();
    assert_eq!(seen, expected);
    let cpu: f64 = rows
        .iter()
        .map(|r| r["cpu_seconds"].as_f64().unwrap())
        .sum();
    assert!(cpu > 0.0, "compressing 2 MB six ways costs measurable CPU");
    assert_eq!(
        rows.iter().filter(|r| r["recommended"] == true).count(),
        1,
        "exactly one setting is recommended"
    );

    let svg = std::fs::read_to_string(&chart).unwrap();
    let points = chart_points(&svg);
    assert_eq!(points.len(), rows.len(), "one point per setting");
    let labels: BTreeSet<&str> = points.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels.len(), rows.len(), "every label differs: {labels:?}");
    for (label, circles) in &points {
        assert_eq!(*circles, 1, "{label}");
        assert!(
            CODECS.iter().any(|c| label.starts_with(c)),
            "label {label:?} names its codec"
        );
    }

    let text = drctl(
        &[
            "bench",
            "pipeline",
            "--sample",
            "1MB",
            "--codecs",
            "zstd:1",
            "--ciphers",
            "aes-256-gcm",
            "--cpu-budget",
            "1000",
        ],
        &[],
    );
    ok(&text);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.contains("Recommended for a CPU budget of 1000.0 CPU-s/GB: zstd:1 + aes-256-gcm"),
        "{stdout}"
    );
}

#[test]
fn pipeline_refuses_bad_settings_clearly() {
    let out = drctl(
        &[
            "bench",
            "pipeline",
            "--sample",
            "1MB",
            "--codecs",
            "zstd:1,lz4",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "invalid input");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lz4"), "{err}");
    let out = drctl(&["bench", "pipeline", "--codecs", "zstd:1"], &[]);
    assert!(!out.status.success(), "an input source is required");
}

#[test]
fn storage_bench_measures_a_file_repository_and_cleans_up() {
    let repo = Repo::new();
    let out = repo.run(&[
        "--json",
        "bench",
        "storage",
        "--size",
        "3MiB",
        "--requests",
        "3",
    ]);
    let v = json_of(&out);
    assert!(
        v["result"]["upload_mb_per_s"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert!(
        v["result"]["download_mb_per_s"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    assert_eq!(v["result"]["latency"].as_array().unwrap().len(), 4);
    assert!(v["upload_memory_budget_bytes"].as_u64().unwrap() > 0);
    assert!(
        !std::path::Path::new(&repo.url)
            .join("bench")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "the benchmark's objects are deleted"
    );
}
