//! `drctl report` read the way people read it: the HTML page opened in a real headless
//! Chromium (text as the browser sees it, and a screenshot whose charts are drawn), and the
//! Markdown version.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Debian's headless Chromium.
fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|d| [d.join("chromium-headless-shell"), d.join("chromium")])
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("headless Chromium is missing; install it with: sudo apt-get install -y --no-install-recommends chromium-headless-shell fonts-dejavu-core (or run scripts/prereqs.sh)")
    })
}

/// Run Chromium on `page` with `args` (no network, throwaway profile); its stdout.
fn browse(page: &Path, args: &[&str]) -> Vec<u8> {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-extensions",
            "--window-size=1100,2200",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// RGB pixels of a PNG.
struct Image {
    width: usize,
    height: usize,
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn read(path: &Path) -> Image {
        let mut decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let channels = info.color_type.samples();
        let rgb = buf[..info.buffer_size()]
            .chunks(channels)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        Image {
            width: info.width as usize,
            height: info.height as usize,
            rgb,
        }
    }

    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        self.rgb[y * self.width + x]
    }

    /// Boxes (x0, y0, x1, y1) of the charts' plot areas: runs of rows with a long stretch
    /// of the plot background colour, merged across grid lines.
    fn plot_areas(&self) -> Vec<(usize, usize, usize, usize)> {
        let bg = hex(dr::report::svg::PLOT_BACKGROUND);
        let mut areas: Vec<(usize, usize, usize, usize)> = Vec::new();
        for y in 0..self.height {
            let xs: Vec<usize> = (0..self.width).filter(|&x| self.at(x, y) == bg).collect();
            if xs.len() < 200 {
                continue;
            }
            let (x0, x1) = (xs[0], *xs.last().unwrap());
            match areas.last_mut() {
                Some(a) if y <= a.3 + 8 => {
                    a.0 = a.0.min(x0);
                    a.2 = a.2.max(x1);
                    a.3 = y;
                }
                _ => areas.push((x0, y, x1, y)),
            }
        }
        areas.retain(|a| a.3 - a.1 > 50);
        areas
    }

    /// Pixels in `area` close to `color`.
    fn count_near(&self, area: (usize, usize, usize, usize), color: [u8; 3]) -> usize {
        let mut n = 0;
        for y in area.1..=area.3 {
            for x in area.0..=area.2 {
                let p = self.at(x, y);
                if (0..3).all(|i| p[i].abs_diff(color[i]) < 40) {
                    n += 1;
                }
            }
        }
        n
    }
}

fn hex(c: &str) -> [u8; 3] {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).unwrap();
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_report_shows_objectives_charts_results_and_failures_in_a_real_browser() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    let scratch = cluster.url("app_drill");
    for _ in 0..2 {
        repo.json(&["backup", "--db", &cluster.url("app")]);
        repo.json(&["verify"]);
        repo.json(&["drill", "--db", &scratch, "--rto", "1h", "--rpo", "1h"]);
    }
    // A drill that misses its objective: a failure the report must list.
    fails(&repo.run(&["drill", "--db", &scratch, "--rto", "0s"]), 1);

    // The reader's RTO of 5 s puts the objective line near the measured times (a second or
    // two each), so both are visible at the chart's scale.
    let page = repo.path().join("report.html");
    ok(&repo.run(&[
        "report",
        "--rpo",
        "1h",
        "--rto",
        "5s",
        "--output",
        page.to_str().unwrap(),
    ]));
    let html = std::fs::read_to_string(&page).unwrap();
    for fetch in ["src=", "href=", "<script", "@import", "url("] {
        assert!(!html.contains(fetch), "self-contained: no {fetch}");
    }

    // What the browser made of it.
    let dom = String::from_utf8(browse(&page, &["--dump-dom"])).unwrap();
    for text in [
        "Recoverability report",
        "Recovery point objective (RPO)</th><td>60 min",
        "Recovery time objective (RTO)</th><td>5 s",
        "Recovery time (restore and checks) per drill",
        "Recovery point (age of the restored data) per drill",
        "Stored size per backup",
        "Duration per backup",
        "RTO 5 s",
        "postgres:",
    ] {
        assert!(dom.contains(text), "the page shows {text:?}");
    }
    assert_eq!(dom.matches("<svg").count(), 4, "four charts");
    // Three drills (the RTO line crosses each), a failure listed with its reason.
    assert_eq!(dom.matches("<circle").count(), 2 * 3 + 2 * 2);
    let failures = &dom[dom.find("id=\"failures\"").unwrap()..];
    assert!(failures.contains("over the RTO of 0 s"), "{failures}");

    // And what it drew: four plot areas; the drill chart holds a line in the series colour
    // and the objective's dashed line in red.
    let shot = repo.path().join("report.png");
    browse(&page, &[&format!("--screenshot={}", shot.display())]);
    let image = Image::read(&shot);
    let areas = image.plot_areas();
    assert_eq!(areas.len(), 4, "plot areas found: {areas:?}");
    let rto_chart = areas[0];
    assert!(rto_chart.2 - rto_chart.0 > 500, "{rto_chart:?}");
    let blue = image.count_near(rto_chart, hex("#1f77b4"));
    let red = image.count_near(rto_chart, hex("#d62728"));
    assert!(blue > 40, "the recovery-time line is drawn ({blue} pixels)");
    assert!(red > 100, "the RTO objective line is drawn ({red} pixels)");

    // The Markdown version has the same facts.
    let out = repo.run(&["report", "--format", "md", "--rpo", "1h", "--rto", "1h"]);
    ok(&out);
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.starts_with("# Recoverability report"), "{md}");
    assert!(md.contains("| recovery time (RTO) | 60 min |"), "{md}");
    let drill_rows = md
        .split("## Drills")
        .nth(1)
        .and_then(|rest| rest.split("## Backups").next())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| 20"))
        .count();
    assert_eq!(drill_rows, 3, "{md}");
    assert!(md.contains("over the RTO of 0 s"), "{md}");
}

#[test]
fn a_report_of_an_empty_repository_says_so_and_draws_no_chart() {
    let repo = Repo::new();
    let page = repo.path().join("report.html");
    ok(&repo.run(&["report", "--output", page.to_str().unwrap()]));
    let dom = String::from_utf8(browse(&page, &["--dump-dom"])).unwrap();
    assert!(dom.contains("No complete backups."), "{dom}");
    assert!(dom.contains("No drills recorded yet"), "{dom}");
    assert!(!dom.contains("<svg"));
}
