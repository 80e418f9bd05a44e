//! Retention policies: restic's `forget` rules, one table case per rule, property tests over
//! random histories and policies, and a snapshot of the runbook policy over two years of
//! hourly backups.
//!
//! The snapshot lives in `tests/snapshots/`. When a change to the rules is intended, rewrite
//! it with `DR_UPDATE_SNAPSHOTS=1 cargo test -p dr-core --test retention`, then read the diff
//! before committing it: every changed line is a backup that would now be kept or deleted.

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use dr_core::retention::{
    BackupInfo, Decision, RetentionDuration, RetentionPolicy, SeriesPolicies,
};
use dr_core::ErrorKind;
use dr_core::Series;
use proptest::prelude::*;
use rstest::rstest;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

/// Complete, unlabelled backups named by their times.
fn history(times: &[&str]) -> Vec<BackupInfo> {
    times.iter().map(|t| BackupInfo::new(*t, at(t))).collect()
}

/// `(id, reasons)` of the kept backups, in input order.
fn kept(decisions: &[Decision]) -> Vec<(String, Vec<String>)> {
    decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| (d.id.clone(), d.reasons.clone()))
        .collect()
}

fn expect(pairs: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    pairs
        .iter()
        .map(|(id, r)| (id.to_string(), r.iter().map(|s| s.to_string()).collect()))
        .collect()
}

const NOW: &str = "2027-06-01T00:00:00Z";

#[rstest]
#[case::keep_last_keeps_the_most_recent(
    RetentionPolicy { keep_last: Some(2), ..Default::default() },
    &["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z"],
    &[("2026-01-03T00:00:00Z", &["last #2"][..]),
      ("2026-01-04T00:00:00Z", &["last #1", "newest complete backup"][..])],
)]
#[case::keep_hourly_counts_only_hours_that_have_a_backup(
    RetentionPolicy { keep_hourly: Some(3), ..Default::default() },
    &["2026-01-01T09:30:00Z", "2026-01-01T10:05:00Z", "2026-01-01T10:45:00Z", "2026-01-01T11:10:00Z",
      "2026-01-01T11:50:00Z", "2026-01-01T13:00:00Z"],
    &[("2026-01-01T10:45:00Z", &["hourly #3"][..]),
      ("2026-01-01T11:50:00Z", &["hourly #2"][..]),
      ("2026-01-01T13:00:00Z", &["hourly #1", "newest complete backup"][..])],
)]
#[case::keep_daily_on_weekly_backups_keeps_the_last_four_sundays_like_restics_docs(
    RetentionPolicy { keep_daily: Some(4), ..Default::default() },
    &["2019-09-01T11:00:00Z", "2019-09-08T11:00:00Z", "2019-09-15T11:00:00Z", "2019-09-22T11:00:00Z",
      "2019-09-29T11:00:00Z", "2019-10-06T11:00:00Z", "2019-10-13T11:00:00Z", "2019-10-20T11:00:00Z",
      "2019-10-27T11:00:00Z", "2019-11-03T11:00:00Z", "2019-11-10T11:00:00Z", "2019-11-17T11:00:00Z"],
    &[("2019-10-27T11:00:00Z", &["daily #4"][..]),
      ("2019-11-03T11:00:00Z", &["daily #3"][..]),
      ("2019-11-10T11:00:00Z", &["daily #2"][..]),
      ("2019-11-17T11:00:00Z", &["daily #1", "newest complete backup"][..])],
)]
#[case::keep_daily_keeps_the_newest_of_each_day(
    RetentionPolicy { keep_daily: Some(2), ..Default::default() },
    &["2026-01-01T01:00:00Z", "2026-01-01T23:00:00Z", "2026-01-02T00:00:00Z", "2026-01-02T12:00:00Z",
      "2026-01-03T06:00:00Z"],
    &[("2026-01-02T12:00:00Z", &["daily #2"][..]),
      ("2026-01-03T06:00:00Z", &["daily #1", "newest complete backup"][..])],
)]
#[case::keep_weekly_uses_iso_weeks_monday_to_sunday(
    RetentionPolicy { keep_weekly: Some(2), ..Default::default() },
    // Mon 16 Nov, Sun 22 Nov (same ISO week), Mon 23 Nov.
    &["2026-11-16T02:00:00Z", "2026-11-22T02:00:00Z", "2026-11-23T02:00:00Z"],
    &[("2026-11-22T02:00:00Z", &["weekly #2"][..]),
      ("2026-11-23T02:00:00Z", &["weekly #1", "newest complete backup"][..])],
)]
#[case::keep_weekly_treats_a_week_across_new_year_as_one_week(
    RetentionPolicy { keep_weekly: Some(2), ..Default::default() },
    // Mon 28 Dec 2026 and Fri 1 Jan 2027 are both in ISO week 53 of 2026.
    &["2026-12-28T02:00:00Z", "2027-01-01T02:00:00Z", "2027-01-04T02:00:00Z"],
    &[("2027-01-01T02:00:00Z", &["weekly #2"][..]),
      ("2027-01-04T02:00:00Z", &["weekly #1", "newest complete backup"][..])],
)]
#[case::keep_monthly_keeps_the_newest_of_each_month(
    RetentionPolicy { keep_monthly: Some(2), ..Default::default() },
    &["2026-01-31T02:00:00Z", "2026-02-01T02:00:00Z", "2026-02-28T02:00:00Z", "2026-03-15T02:00:00Z"],
    &[("2026-02-28T02:00:00Z", &["monthly #2"][..]),
      ("2026-03-15T02:00:00Z", &["monthly #1", "newest complete backup"][..])],
)]
#[case::keep_yearly_keeps_the_newest_of_each_year(
    RetentionPolicy { keep_yearly: Some(2), ..Default::default() },
    &["2024-06-01T00:00:00Z", "2025-01-01T00:00:00Z", "2025-12-31T23:00:00Z", "2026-03-01T00:00:00Z"],
    &[("2025-12-31T23:00:00Z", &["yearly #2"][..]),
      ("2026-03-01T00:00:00Z", &["yearly #1", "newest complete backup"][..])],
)]
#[case::keep_within_is_relative_to_the_newest_backup_not_now_and_excludes_the_boundary(
    RetentionPolicy { keep_within: Some("2d".parse().unwrap()), ..Default::default() },
    &["2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z", "2026-01-08T00:00:01Z", "2026-01-10T00:00:00Z"],
    &[("2026-01-08T00:00:01Z", &["within 2d"][..]),
      ("2026-01-10T00:00:00Z", &["within 2d", "newest complete backup"][..])],
)]
#[case::keep_within_daily_keeps_one_per_day_inside_the_window(
    RetentionPolicy { keep_within_daily: Some("3d".parse().unwrap()), ..Default::default() },
    &["2026-01-06T00:00:00Z", "2026-01-07T12:00:00Z", "2026-01-08T00:00:00Z", "2026-01-08T12:00:00Z",
      "2026-01-09T00:00:00Z", "2026-01-09T12:00:00Z", "2026-01-10T00:00:00Z", "2026-01-10T12:00:00Z"],
    &[("2026-01-08T12:00:00Z", &["within-daily 3d"][..]),
      ("2026-01-09T12:00:00Z", &["within-daily 3d"][..]),
      ("2026-01-10T12:00:00Z", &["within-daily 3d", "newest complete backup"][..])],
)]
#[case::keep_within_hourly_keeps_one_per_hour_inside_the_window(
    RetentionPolicy { keep_within_hourly: Some("2h".parse().unwrap()), ..Default::default() },
    &["2026-01-01T09:20:00Z", "2026-01-01T10:10:00Z", "2026-01-01T10:20:00Z", "2026-01-01T11:00:00Z",
      "2026-01-01T11:30:00Z"],
    &[("2026-01-01T10:20:00Z", &["within-hourly 2h"][..]),
      ("2026-01-01T11:30:00Z", &["within-hourly 2h", "newest complete backup"][..])],
)]
#[case::a_young_history_also_keeps_its_oldest_backup(
    RetentionPolicy { keep_daily: Some(5), ..Default::default() },
    &["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z", "2026-01-02T01:00:00Z", "2026-01-02T02:00:00Z"],
    &[("2026-01-01T01:00:00Z", &["oldest daily #3"][..]),
      ("2026-01-01T02:00:00Z", &["daily #2"][..]),
      ("2026-01-02T02:00:00Z", &["daily #1", "newest complete backup"][..])],
)]
#[case::rules_compose_as_a_union(
    RetentionPolicy { keep_last: Some(1), keep_daily: Some(2), ..Default::default() },
    &["2026-01-01T01:00:00Z", "2026-01-02T01:00:00Z", "2026-01-03T01:00:00Z", "2026-01-03T02:00:00Z"],
    &[("2026-01-02T01:00:00Z", &["daily #2"][..]),
      ("2026-01-03T02:00:00Z", &["last #1", "daily #1", "newest complete backup"][..])],
)]
#[case::backups_in_the_future_do_not_anchor_within_rules(
    RetentionPolicy { keep_within: Some("2d".parse().unwrap()), ..Default::default() },
    &["2026-01-01T00:00:00Z", "2026-01-10T00:00:00Z", "2030-01-01T00:00:00Z"],
    &[("2026-01-10T00:00:00Z", &["within 2d"][..]),
      ("2030-01-01T00:00:00Z", &["within 2d", "newest complete backup"][..])],
)]
fn each_rule_keeps_what_restic_keeps(
    #[case] policy: RetentionPolicy,
    #[case] times: &[&str],
    #[case] want: &[(&str, &[&str])],
) {
    let now = if times.iter().any(|t| t.starts_with("2030")) {
        at("2026-01-11T00:00:00Z")
    } else {
        at(NOW)
    };
    let decisions = policy.evaluate(&history(times), now);
    assert_eq!(kept(&decisions), expect(want), "policy: {policy}");
    for d in decisions.iter().filter(|d| !d.keep) {
        assert!(d.reasons.is_empty(), "{d:?}");
    }
}

#[rstest]
#[case::utc(Tz::UTC, &[("2026-06-01T10:00:00Z", &["oldest daily #2"][..]),
    ("2026-06-01T22:30:00Z", &["daily #1", "newest complete backup"][..])])]
#[case::berlin(chrono_tz::Europe::Berlin, &[("2026-06-01T21:30:00Z", &["daily #2"][..]),
    ("2026-06-01T22:30:00Z", &["daily #1", "newest complete backup"][..])])]
fn days_begin_at_midnight_in_the_policys_time_zone(
    #[case] time_zone: Tz,
    #[case] want: &[(&str, &[&str])],
) {
    // 21:30 and 22:30 UTC are one day in UTC, but 23:30 and 00:30 in Berlin (CEST).
    let policy = RetentionPolicy {
        keep_daily: Some(2),
        time_zone,
        ..Default::default()
    };
    let backups = history(&[
        "2026-06-01T10:00:00Z",
        "2026-06-01T21:30:00Z",
        "2026-06-01T22:30:00Z",
    ]);
    assert_eq!(kept(&policy.evaluate(&backups, at(NOW))), expect(want));
}

#[test]
fn pinned_backups_are_kept_whatever_the_rules_say() {
    let mut backups = history(&[
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
    ]);
    backups[0].pinned = true;
    let policy = RetentionPolicy {
        keep_last: Some(1),
        ..Default::default()
    };
    assert_eq!(
        kept(&policy.evaluate(&backups, at(NOW))),
        expect(&[
            ("2026-01-01T00:00:00Z", &["pinned"][..]),
            (
                "2026-01-03T00:00:00Z",
                &["last #1", "newest complete backup"][..]
            ),
        ])
    );
}

#[test]
fn labels_select_the_backups_a_policy_applies_to() {
    let mut backups = history(&[
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
        "2026-01-04T00:00:00Z",
    ]);
    backups[0].labels = vec!["app".into(), "hourly".into()];
    backups[1].labels = vec!["other".into()];
    backups[2].labels = vec!["app".into()];
    backups[3].labels = vec!["other".into()];
    let policy = RetentionPolicy {
        keep_last: Some(1),
        labels: vec!["app".into()],
        ..Default::default()
    };
    // The unselected backups neither count towards keep_last nor get deleted.
    assert_eq!(
        kept(&policy.evaluate(&backups, at(NOW))),
        expect(&[
            ("2026-01-02T00:00:00Z", &["not selected by labels"][..]),
            ("2026-01-03T00:00:00Z", &["last #1"][..]),
            (
                "2026-01-04T00:00:00Z",
                &["not selected by labels", "newest complete backup"][..]
            ),
        ])
    );
}

#[test]
fn the_newest_complete_backup_is_kept_and_incomplete_ones_are_left_to_prune() {
    let mut backups = history(&[
        "2026-01-01T00:00:00Z",
        "2026-01-02T00:00:00Z",
        "2026-01-03T00:00:00Z",
    ]);
    backups[2].complete = false;
    // A policy that keeps nothing of these (only the "other" label) still keeps the newest
    // complete backup.
    let policy = RetentionPolicy {
        keep_last: Some(1),
        labels: vec!["other".into()],
        ..Default::default()
    };
    let decisions = policy.evaluate(&backups, at(NOW));
    assert_eq!(
        kept(&decisions),
        expect(&[
            ("2026-01-01T00:00:00Z", &["not selected by labels"][..]),
            (
                "2026-01-02T00:00:00Z",
                &["not selected by labels", "newest complete backup"][..]
            ),
            (
                "2026-01-03T00:00:00Z",
                &["incomplete (prune removes it after the grace period)"][..]
            ),
        ])
    );
}

#[rstest]
#[case::nothing_set(RetentionPolicy::default())]
#[case::zero_counts_and_durations(RetentionPolicy {
    keep_last: Some(0), keep_daily: Some(0), keep_within: Some("0d".parse().unwrap()),
    labels: vec!["app".into()], ..Default::default() })]
fn an_empty_policy_deletes_nothing(#[case] policy: RetentionPolicy) {
    assert!(policy.is_empty());
    let mut backups = history(&["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]);
    for b in &mut backups {
        b.labels = vec!["app".into()];
    }
    assert!(policy.evaluate(&backups, at(NOW)).iter().all(|d| d.keep));
}

#[rstest]
#[case("24h", (0, 0, 0, 24))]
#[case("7d", (0, 0, 7, 0))]
#[case("28d", (0, 0, 28, 0))]
#[case("1y", (1, 0, 0, 0))]
#[case("1y2m3d", (1, 2, 3, 0))]
#[case("2y5m7d3h", (2, 5, 7, 3))]
#[case("3d1y", (1, 0, 3, 0))]
#[case(" 12m ", (0, 12, 0, 0))]
#[case("0d", (0, 0, 0, 0))]
fn durations_parse_in_restics_units(#[case] text: &str, #[case] want: (u32, u32, u32, u32)) {
    let d: RetentionDuration = text.parse().unwrap();
    assert_eq!((d.years, d.months, d.days, d.hours), want);
    // Display is canonical and parses back to the same duration.
    assert_eq!(d.to_string().parse::<RetentionDuration>().unwrap(), d);
}

#[rstest]
#[case("", "empty")]
#[case("7", "no unit")]
#[case("d", "expected a number")]
#[case("1w", "write 7d")]
#[case("7x", "unknown unit 'x'")]
#[case("-1d", "expected a number")]
#[case("99999999999d", "too large")]
#[case("1.5d", "unknown unit '.'")]
fn malformed_durations_are_refused_with_the_reason(#[case] text: &str, #[case] why: &str) {
    let e = text.parse::<RetentionDuration>().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains(why), "{text:?}: {e}");
}

#[rstest]
#[case::month_of_31_march_is_3_march("1m", "2026-03-31T12:00:00Z", "2026-03-03T12:00:00Z")]
#[case::year_before_29_february_is_1_march("1y", "2024-02-29T00:00:00Z", "2023-03-01T00:00:00Z")]
#[case::hours_are_elapsed_time("36h", "2026-01-02T12:00:00Z", "2026-01-01T00:00:00Z")]
#[case::all_units("1y2m3d4h", "2026-05-10T10:00:00Z", "2025-03-07T06:00:00Z")]
fn durations_step_back_like_restic(#[case] d: &str, #[case] from: &str, #[case] to: &str) {
    let d: RetentionDuration = d.parse().unwrap();
    assert_eq!(d.before(at(from), Tz::UTC), at(to));
}

#[test]
fn policies_round_trip_through_json_and_refuse_unknown_keys() {
    let policy = RetentionPolicy {
        keep_hourly: Some(24),
        keep_within_daily: Some("7d".parse().unwrap()),
        time_zone: chrono_tz::Europe::Berlin,
        labels: vec!["app".into()],
        ..Default::default()
    };
    let json = serde_json::to_value(&policy).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "keep_hourly": 24,
            "keep_within_daily": "7d",
            "time_zone": "Europe/Berlin",
            "labels": ["app"],
        })
    );
    assert_eq!(
        serde_json::from_value::<RetentionPolicy>(json).unwrap(),
        policy
    );
    let typo = serde_json::json!({ "keep_dayly": 7 });
    assert!(serde_json::from_value::<RetentionPolicy>(typo).is_err());
    let bad = serde_json::json!({ "keep_within": "1w" });
    assert!(serde_json::from_value::<RetentionPolicy>(bad).is_err());
}

#[test]
fn the_runbook_policy_over_two_years_of_hourly_backups_matches_the_snapshot() {
    // Hourly backups for two years, ending 2026-11-25 02:00 UTC; evaluated 30 minutes later.
    let end = at("2026-11-25T02:00:00Z");
    let hours = 2 * 365 * 24;
    let backups: Vec<BackupInfo> = (0..hours)
        .map(|h| {
            let t = end - Duration::hours(hours - 1 - h);
            BackupInfo::new(t.format("%Y%m%dT%H%M%SZ-pg").to_string(), t)
        })
        .collect();
    let policy = RetentionPolicy {
        keep_hourly: Some(24),
        keep_daily: Some(7),
        keep_weekly: Some(4),
        keep_monthly: Some(12),
        ..Default::default()
    };
    let decisions = policy.evaluate(&backups, end + Duration::minutes(30));
    let mut text = format!(
        "# {policy}\n# {} hourly backups, {} to {}; evaluated at {}\n# kept backups, oldest first, with their reasons:\n",
        backups.len(),
        backups[0].time.to_rfc3339(),
        end.to_rfc3339(),
        (end + Duration::minutes(30)).to_rfc3339()
    );
    for d in decisions.iter().filter(|d| d.keep) {
        text.push_str(&format!(
            "{}  {}  {}\n",
            d.time.format("%Y-%m-%d %H:%M %a"),
            d.id,
            d.reasons.join(", ")
        ));
    }
    let kept = decisions.iter().filter(|d| d.keep).count();
    text.push_str(&format!(
        "# kept {kept}, deleted {}\n",
        decisions.len() - kept
    ));
    assert_snapshot("runbook_two_years_hourly.txt", &text);
}

/// Compare `actual` with `tests/snapshots/<name>`; rewrite it when DR_UPDATE_SNAPSHOTS=1.
fn assert_snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("DR_UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the snapshot {} ({e}); create it with DR_UPDATE_SNAPSHOTS=1 cargo test -p dr-core --test retention",
            path.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the snapshot from line {}:\n--- expected\n{}\n--- actual\n{}\n\
             if the change is intended: DR_UPDATE_SNAPSHOTS=1 cargo test -p dr-core --test retention",
            path.display(),
            first + 1,
            expected.lines().skip(first).take(5).collect::<Vec<_>>().join("\n"),
            actual.lines().skip(first).take(5).collect::<Vec<_>>().join("\n"),
        );
    }
}

// ---- property tests ----

const ZONES: [Tz; 4] = [
    Tz::UTC,
    chrono_tz::Europe::Berlin,
    chrono_tz::America::New_York,
    chrono_tz::Asia::Kolkata,
];
const LABELS: [&str; 2] = ["app", "hourly"];

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

fn arb_backup() -> impl Strategy<Value = BackupInfo> {
    (
        // Up to ~400 days, minute resolution, with bursts in the same hour likely.
        0i64..(400 * 24 * 60),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.9),
        prop::collection::vec(prop::sample::select(&LABELS[..]), 0..2),
    )
        .prop_map(|(minutes, pinned, complete, labels)| {
            let time = base() + Duration::minutes(minutes);
            BackupInfo {
                id: format!("{}-{minutes}", time.format("%Y%m%dT%H%M%SZ")),
                time,
                labels: labels.into_iter().map(String::from).collect(),
                pinned,
                complete,
                series: Default::default(),
            }
        })
}

fn arb_history() -> impl Strategy<Value = Vec<BackupInfo>> {
    prop::collection::vec(arb_backup(), 0..80).prop_map(unique_ids)
}

/// A repository never holds two backups under one id (ids carry the time and a random
/// suffix), but two generated in the same minute get the same id here: keep the first.
fn unique_ids(mut backups: Vec<BackupInfo>) -> Vec<BackupInfo> {
    let mut seen = std::collections::HashSet::new();
    backups.retain(|b| seen.insert(b.id.clone()));
    backups
}

fn arb_count() -> impl Strategy<Value = Option<u32>> {
    prop::option::weighted(0.4, 0u32..8)
}

fn arb_duration() -> impl Strategy<Value = Option<RetentionDuration>> {
    prop::option::weighted(
        0.25,
        (0u32..2, 0u32..3, 0u32..20, 0u32..48).prop_map(|(years, months, days, hours)| {
            RetentionDuration {
                years,
                months,
                days,
                hours,
            }
        }),
    )
}

fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
    (
        proptest::array::uniform6(arb_count()),
        proptest::array::uniform6(arb_duration()),
        prop::sample::select(&ZONES[..]),
        prop::collection::vec(prop::sample::select(&LABELS[..]), 0..2),
    )
        .prop_map(|(c, d, time_zone, labels)| RetentionPolicy {
            keep_last: c[0],
            keep_hourly: c[1],
            keep_daily: c[2],
            keep_weekly: c[3],
            keep_monthly: c[4],
            keep_yearly: c[5],
            keep_within: d[0],
            keep_within_hourly: d[1],
            keep_within_daily: d[2],
            keep_within_weekly: d[3],
            keep_within_monthly: d[4],
            keep_within_yearly: d[5],
            // The PITR window decides about WAL, never about backups.
            keep_pitr: d[0],
            time_zone,
            labels: labels.into_iter().map(String::from).collect(),
        })
}

fn arb_now() -> impl Strategy<Value = DateTime<Utc>> {
    // Mostly after every backup; sometimes in the middle of the history (clock skew).
    (0i64..(500 * 24 * 60)).prop_map(|m| base() + Duration::minutes(m))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_newest_complete_backup_is_always_kept(
        backups in arb_history(), policy in arb_policy(), now in arb_now()
    ) {
        let decisions = policy.evaluate(&backups, now);
        prop_assert_eq!(decisions.len(), backups.len());
        let newest = backups
            .iter()
            .filter(|b| b.complete)
            .max_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        if let Some(newest) = newest {
            let d = decisions.iter().find(|d| d.id == newest.id).unwrap();
            prop_assert!(d.keep);
            prop_assert!(d.reasons.iter().any(|r| r == "newest complete backup"));
        }
    }

    #[test]
    fn pinned_and_incomplete_backups_are_always_kept(
        backups in arb_history(), policy in arb_policy(), now in arb_now()
    ) {
        for (b, d) in backups.iter().zip(policy.evaluate(&backups, now)) {
            prop_assert_eq!(&b.id, &d.id);
            if b.pinned || !b.complete {
                prop_assert!(d.keep, "{:?}", d);
            }
            // Every kept backup says why; every deleted one has no reason.
            prop_assert_eq!(d.keep, !d.reasons.is_empty());
        }
    }

    #[test]
    fn evaluating_the_kept_set_again_at_the_same_now_deletes_nothing(
        backups in arb_history(), policy in arb_policy(), now in arb_now()
    ) {
        let decisions = policy.evaluate(&backups, now);
        let kept: Vec<BackupInfo> = backups
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| d.keep)
            .map(|(b, _)| b.clone())
            .collect();
        for d in policy.evaluate(&kept, now) {
            prop_assert!(d.keep, "re-evaluation under {} would delete {:?}", policy, d);
        }
    }

    #[test]
    fn no_rule_keeps_more_than_its_count(
        backups in arb_history(), policy in arb_policy(), now in arb_now()
    ) {
        let decisions = policy.evaluate(&backups, now);
        for (name, n) in [
            ("last", policy.keep_last),
            ("hourly", policy.keep_hourly),
            ("daily", policy.keep_daily),
            ("weekly", policy.keep_weekly),
            ("monthly", policy.keep_monthly),
            ("yearly", policy.keep_yearly),
        ] {
            let used = decisions
                .iter()
                .flat_map(|d| &d.reasons)
                .filter(|r| {
                    r.strip_prefix("oldest ").unwrap_or(r).starts_with(&format!("{name} #"))
                })
                .count();
            prop_assert!(used as u32 <= n.unwrap_or(0), "{} used {} times under {}", name, used, policy);
        }
    }

    #[test]
    fn an_empty_policy_keeps_everything(backups in arb_history(), now in arb_now()) {
        let policy = RetentionPolicy::default();
        prop_assert!(policy.evaluate(&backups, now).iter().all(|d| d.keep));
    }
}

// ----- several series in one repository ---------------------------------------------------

const SERIES: [&str; 4] = [
    "postgres:7301:app",
    "postgres:7301:shop",
    "files:web1:/srv/uploads",
    "postgres::app",
];

fn arb_series_history() -> impl Strategy<Value = Vec<BackupInfo>> {
    prop::collection::vec(
        (arb_backup(), prop::sample::select(&SERIES[..])).prop_map(|(b, s)| {
            let series: Series = s.parse().unwrap();
            BackupInfo {
                id: format!("{}-{}", b.id, series.name),
                ..b
            }
            .in_series(series)
        }),
        0..120,
    )
    .prop_map(unique_ids)
}

fn arb_series_policies() -> impl Strategy<Value = SeriesPolicies> {
    (
        arb_policy(),
        prop::collection::vec(
            (
                prop::sample::select(&["app", "files", "postgres:*:shop", "postgres:7301:app"][..]),
                arb_policy(),
            ),
            0..3,
        ),
    )
        .prop_map(|(default, special)| {
            let mut p = SeriesPolicies::new(default);
            for (selector, policy) in special {
                p.set(selector.parse().unwrap(), policy);
            }
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Prune never deletes a backup that the policy keeps for its own series, nor the
    /// newest of any series: each series is decided exactly as if it were alone.
    #[test]
    fn each_series_is_kept_as_if_it_were_alone(
        backups in arb_series_history(), policies in arb_series_policies(), now in arb_now()
    ) {
        let decisions = policies.evaluate(&backups, now);
        prop_assert_eq!(decisions.len(), backups.len());
        for series in SERIES.iter().map(|s| s.parse::<Series>().unwrap()) {
            let alone: Vec<BackupInfo> =
                backups.iter().filter(|b| b.series == series).cloned().collect();
            let own = policies.policy_for(&series).evaluate(&alone, now);
            let mixed: Vec<&Decision> =
                decisions.iter().filter(|d| d.series == series).collect();
            prop_assert_eq!(own.len(), mixed.len());
            for (a, m) in own.iter().zip(&mixed) {
                prop_assert_eq!(a, *m, "series {}", series);
            }
            let newest = alone
                .iter()
                .filter(|b| b.complete)
                .max_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
            if let Some(newest) = newest {
                let d = decisions.iter().find(|d| d.id == newest.id).unwrap();
                prop_assert!(d.keep, "the newest backup of {} is kept", series);
            }
        }
    }
}
