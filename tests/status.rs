//! `drctl status` against real repositories: verdicts and exit codes from backups, verify
//! and drill records, and Prometheus output that the real `promtool` accepts.

mod common;

use common::*;

fn status(repo: &Repo, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["--json", "status"];
    all.extend_from_slice(args);
    let out = repo.run(&all);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), json)
}

#[test]
fn status_judges_a_directory_series_by_age_and_verify_and_exits_like_a_monitoring_plugin() {
    let repo = Repo::new();
    let (code, empty) = status(&repo, &[]);
    assert_eq!((code, &empty["health"]), (3, &"unknown".into()), "{empty}");

    let dir = repo.path().join("uploads");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("a.txt"), "hello").unwrap();
    let backup = repo.json(&["backup", "--dir", dir.to_str().unwrap()]);

    // Never verified: a warning.
    let (code, s) = status(&repo, &["--rpo", "1h"]);
    assert_eq!(code, 1, "{s}");
    assert_eq!(s["series"][0]["reasons"][0], "never verified");
    assert_eq!(s["series"][0]["newest"]["id"], backup["id"]);
    assert_eq!(s["totals"]["backups"], 1);

    // Verified: a record appears and the series is ok.
    repo.json(&["verify"]);
    let (code, s) = status(&repo, &["--rpo", "1h"]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(s["series"][0]["last_verify"]["passed"], true);
    assert_eq!(s["series"][0]["last_verify"]["backup_id"], backup["id"]);
    assert_eq!(s["totals"]["records"], 1);

    // An RPO the newest backup is older than: breached, with the reason.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, s) = status(&repo, &["--rpo", "0s"]);
    assert_eq!(code, 2, "{s}");
    let reason = s["series"][0]["reasons"][0].as_str().unwrap();
    assert!(reason.contains("over the RPO of 0 s"), "{reason}");

    // The objectives can come from dr.toml; the command line overrides them.
    let config = repo.path().join("dr.toml");
    std::fs::write(
        &config,
        format!("[repository]\nurl = \"{}\"\n[objectives]\nrpo = \"1s\"\n[retention]\nkeep_last = 3\n[jobs.prune]\nkind = \"prune\"\n", repo.url),
    )
    .unwrap();
    let (code, s) = status(&repo, &["--config", config.to_str().unwrap()]);
    assert_eq!((code, &s["objectives"]["rpo_secs"]), (2, &1.into()), "{s}");
    let (code, _) = status(
        &repo,
        &["--config", config.to_str().unwrap(), "--rpo", "1d"],
    );
    assert_eq!(code, 0);

    // A damaged payload: the verify fails, is recorded, and status says breached.
    let payload = repo.payload(backup["id"].as_str().unwrap());
    let mut bytes = std::fs::read(&payload).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    std::fs::write(&payload, bytes).unwrap();
    assert!(!repo.run(&["verify"]).status.success());
    let (code, s) = status(&repo, &["--rpo", "1d"]);
    assert_eq!(code, 2, "{s}");
    assert_eq!(s["series"][0]["last_verify"]["passed"], false);
    let reason = s["series"][0]["reasons"][0].as_str().unwrap();
    assert!(reason.starts_with("the last verify"), "{reason}");
    assert_eq!(s["totals"]["records"], 2);

    // The same state as Prometheus metrics, accepted by promtool.
    let out = repo.run(&["status", "--prometheus", "--rpo", "1d"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    promtool_accepts(&text);
    assert!(text.contains("dr_status 2\n"), "{text}");
    assert!(text.contains("dr_objective_rpo_seconds 86400\n"), "{text}");
    assert!(
        text.contains("dr_verify_last_success{series=\"files:"),
        "{text}"
    );
    assert!(text.contains("dr_repository_backups 1\n"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("dr_backup_since_last_completion_seconds{")),
        "{text}"
    );
}

#[test]
fn a_repository_that_cannot_be_read_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let out = drctl(&["status", "--repo", missing.to_str().unwrap()], &[]);
    let err = fails(&out, 3);
    assert!(err.contains("does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_leave_records_that_status_judges_against_the_rto() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    repo.json(&["backup", "--db", &cluster.url("app")]);
    repo.json(&["verify"]);
    let (code, s) = status(&repo, &["--rpo", "1h", "--rto", "1h"]);
    assert_eq!(code, 1, "{s}");
    assert_eq!(s["series"][0]["reasons"][0], "never drilled");

    let report = repo.json(&["drill", "--db", &cluster.url("app_drill"), "--rto", "1h"]);
    let (code, s) = status(&repo, &["--rpo", "1h", "--rto", "1h"]);
    assert_eq!(code, 0, "{s}");
    let drill = &s["series"][0]["last_drill"];
    assert_eq!(drill["passed"], true);
    assert_eq!(drill["recovery_time_ms"], report["restore_ms"]);
    assert_eq!(drill["recovery_point_secs"], report["backup_age_secs"]);
    assert_eq!(drill["rto_secs"], 3600);
    assert_eq!(s["series"][0]["rto_met"], true);

    // Tighter objectives judge the same drill again: its recovery time is over 0 s.
    let (code, s) = status(&repo, &["--rpo", "1h", "--rto", "0s"]);
    assert_eq!(code, 2, "{s}");
    let reason = s["series"][0]["reasons"][0].as_str().unwrap();
    assert!(reason.contains("over the RTO of 0 s"), "{reason}");

    // A drill asked for wrongly (into the source database) leaves no record.
    fails(&repo.run(&["drill", "--db", &cluster.url("app")]), 2);
    let (_, s) = status(&repo, &["--rpo", "1h"]);
    assert_eq!(s["totals"]["records"], 2, "{s}");

    let out = repo.run(&["status", "--prometheus", "--rto", "1h"]);
    let text = String::from_utf8(out.stdout).unwrap();
    promtool_accepts(&text);
    assert!(
        text.lines()
            .any(|l| l.starts_with("dr_drill_last_recovery_time_seconds{series=\"postgres:")),
        "{text}"
    );
}
