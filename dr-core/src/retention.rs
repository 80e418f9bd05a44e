//! Retention: which backups to keep, as a pure function of `(backups, now)`.
//!
//! The rules are restic's documented `forget` rules, so that people who know restic get no
//! surprises:
//!
//! - `keep_last N`: the N most recent backups.
//! - `keep_hourly/daily/weekly/monthly/yearly N`: for the N most recent hours (days, ISO weeks
//!   Monday–Sunday, months, years) **that have a backup**, the newest backup of each. Periods
//!   are calendar periods in the policy's time zone (UTC by default), not windows ending now.
//! - `keep_within D`: every backup made within `D` before the **newest backup** (not before
//!   `now`: a repository whose backups stopped a month ago does not lose them all).
//! - `keep_within_hourly/daily/weekly/monthly/yearly D`: the newest backup of each period, for
//!   the backups made within `D` before the newest backup.
//! - Durations count years, months, days and hours ([`RetentionDuration`]: `24h`, `7d`,
//!   `1y2m3d`); years, months and days are calendar steps, hours are elapsed time.
//! - A backup is kept if any rule keeps it (a union). When fewer periods have backups than a
//!   rule asks for, the oldest backup is kept too (restic's "oldest" rule), so a young
//!   repository keeps its whole history rather than only the newest backup of each period.
//! - Backups in the future (after `now`, clock skew) never define "the newest backup" for the
//!   `within` rules.
//!
//! On top of the rules, three protections no policy can switch off: pinned backups are never
//! deleted, the newest complete backup is never deleted, and an empty policy deletes nothing.
//! A policy's [`labels`](RetentionPolicy::labels) select the backups it applies to; others are
//! kept untouched and do not count towards any rule.
//!
//! Every decision carries its reasons (`hourly #3`, `within-daily 7d`, `pinned`, `newest
//! complete backup`), so a plan can be read, previewed (`drctl retention plan`) and trusted.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use dr_core::retention::{BackupInfo, RetentionPolicy};
//!
//! let policy = RetentionPolicy { keep_daily: Some(2), ..Default::default() };
//! let backups: Vec<BackupInfo> = (0..4)
//!     .map(|d| BackupInfo::new(format!("b{d}"), Utc.with_ymd_and_hms(2026, 11, 20 + d, 2, 0, 0).unwrap()))
//!     .collect();
//! let decisions = policy.evaluate(&backups, Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap());
//! let kept: Vec<&str> = decisions.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect();
//! assert_eq!(kept, ["b2", "b3"]);
//! assert_eq!(decisions[3].reasons, ["daily #1", "newest complete backup"]);
//! ```

use std::cmp::Ordering;
use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::series::{Series, SeriesSelector};

mod duration;
pub use duration::RetentionDuration;

/// A retention policy: restic's `forget` rules plus a time zone and a label filter.
///
/// Construct it with struct update syntax (`RetentionPolicy { keep_daily: Some(7),
/// ..Default::default() }`), deserialize it (it lives in `dr-repo.json` and `dr.toml`; unknown
/// keys are refused, so a misspelt rule is an error rather than a silently different policy),
/// or build it from `drctl` flags. A count of `0` or a zero duration switches a rule off, as
/// in restic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Keep the N most recent backups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the N most recent hours that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the N most recent days that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the N most recent ISO weeks that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the N most recent months that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the N most recent years that have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// Keep every backup made within this duration before the newest backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<RetentionDuration>,
    /// Keep the newest backup of each hour, within this duration before the newest backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_hourly: Option<RetentionDuration>,
    /// Keep the newest backup of each day, within this duration before the newest backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_daily: Option<RetentionDuration>,
    /// Keep the newest backup of each ISO week, within this duration before the newest backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_weekly: Option<RetentionDuration>,
    /// Keep the newest backup of each month, within this duration before the newest backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_monthly: Option<RetentionDuration>,
    /// Keep the newest backup of each year, within this duration before the newest backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_within_yearly: Option<RetentionDuration>,
    /// The PITR window of a physical series: archived WAL stays recoverable to any point of
    /// this last stretch (and the backup anchoring it is kept), separately from which
    /// backups the rules above keep. It keeps no backup by itself: a policy with only this
    /// is empty ([`RetentionPolicy::is_empty`]). See [`crate::wal::retention`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_pitr: Option<RetentionDuration>,
    /// The time zone in which hours, days, weeks, months and years begin (an IANA name such
    /// as `Europe/Berlin`; UTC by default). Calendar steps of durations are taken in it too.
    ///
    /// chrono-tz is used rather than a fixed offset: a fixed offset gets days wrong for half
    /// the year wherever clocks change, and chrono-tz (the chrono project's own IANA database,
    /// compiled in) gives the same answer on every machine, unlike the host's zoneinfo files.
    #[serde(skip_serializing_if = "is_utc")]
    pub time_zone: Tz,
    /// Apply the policy only to backups that carry **all** of these labels (none: every
    /// backup). Backups not selected are kept and count towards no rule.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

fn is_utc(tz: &Tz) -> bool {
    *tz == Tz::UTC
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            keep_last: None,
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            keep_within: None,
            keep_within_hourly: None,
            keep_within_daily: None,
            keep_within_weekly: None,
            keep_within_monthly: None,
            keep_pitr: None,
            keep_within_yearly: None,
            time_zone: Tz::UTC,
            labels: Vec::new(),
        }
    }
}

/// What retention knows about one backup: enough to decide, nothing to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The backup id.
    pub id: String,
    /// When the backup was taken (its start time).
    pub time: DateTime<Utc>,
    /// Its labels, for the policy's label filter.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Pinned backups are never deleted.
    #[serde(default)]
    pub pinned: bool,
    /// Whether the backup is committed (has a manifest). Incomplete backups are neither
    /// counted nor deleted by a policy; prune removes them after a grace period.
    pub complete: bool,
    /// The source it belongs to. [`SeriesPolicies::evaluate`] applies a policy to each
    /// series on its own; [`RetentionPolicy::evaluate`] treats its input as one series.
    #[serde(default)]
    pub series: Series,
}

impl BackupInfo {
    /// A complete, unpinned, unlabelled backup.
    pub fn new(id: impl Into<String>, time: DateTime<Utc>) -> Self {
        BackupInfo {
            id: id.into(),
            time,
            labels: Vec::new(),
            pinned: false,
            complete: true,
            series: Series::default(),
        }
    }

    /// The same backup, in `series`.
    pub fn in_series(mut self, series: Series) -> Self {
        self.series = series;
        self
    }
}

impl From<&Manifest> for BackupInfo {
    fn from(m: &Manifest) -> Self {
        BackupInfo {
            id: m.id.clone(),
            time: m.started_at,
            labels: m.labels.clone(),
            pinned: m.pinned,
            complete: true,
            series: m.series.clone(),
        }
    }
}

/// The verdict on one backup, with every reason that applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The backup id.
    pub id: String,
    /// The backup's time.
    pub time: DateTime<Utc>,
    /// Keep (`true`) or delete.
    pub keep: bool,
    /// Why it is kept (`hourly #3`, `within-daily 7d`, `pinned`, `newest complete backup`,
    /// `not selected by labels`), in rule order; empty for a backup to delete.
    pub reasons: Vec<String>,
    /// The series it belongs to (its rules counted only that series' backups).
    #[serde(default)]
    pub series: Series,
}

/// The calendar periods of the `keep_hourly`… and `keep_within_hourly`… rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    const ALL: [Period; 5] = [
        Period::Hour,
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Year,
    ];

    fn name(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// A number that two times share exactly when they fall in the same period.
    fn key(self, t: &DateTime<Tz>) -> i64 {
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Period::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
            Period::Day => (y * 100 + m) * 100 + d,
            Period::Week => {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Period::Month => y * 100 + m,
            Period::Year => y,
        }
    }
}

/// One `keep_last`/`keep_<period>` rule while it walks the backups, newest first.
struct CountRule {
    name: &'static str,
    period: Option<Period>,
    left: u32,
    taken: u32,
    last_key: Option<i64>,
}

/// One `keep_within_<period>` rule while it walks the backups, newest first.
struct WithinRule {
    name: String,
    period: Period,
    cutoff: Option<DateTime<Utc>>,
    last_key: Option<i64>,
}

impl RetentionPolicy {
    /// Whether no rule is set (every count is absent or zero, every duration absent or
    /// zero). An empty policy keeps every backup. Labels and time zone alone do not count.
    pub fn is_empty(&self) -> bool {
        self.counts().iter().all(|(_, n)| n.unwrap_or(0) == 0)
            && self
                .durations()
                .iter()
                .all(|(_, d)| d.is_none_or(|d| d.is_zero()))
    }

    fn counts(&self) -> [(Option<Period>, Option<u32>); 6] {
        [
            (None, self.keep_last),
            (Some(Period::Hour), self.keep_hourly),
            (Some(Period::Day), self.keep_daily),
            (Some(Period::Week), self.keep_weekly),
            (Some(Period::Month), self.keep_monthly),
            (Some(Period::Year), self.keep_yearly),
        ]
    }

    fn durations(&self) -> [(Option<Period>, Option<RetentionDuration>); 6] {
        [
            (None, self.keep_within),
            (Some(Period::Hour), self.keep_within_hourly),
            (Some(Period::Day), self.keep_within_daily),
            (Some(Period::Week), self.keep_within_weekly),
            (Some(Period::Month), self.keep_within_monthly),
            (Some(Period::Year), self.keep_within_yearly),
        ]
    }

    /// Whether the policy applies to a backup with these labels.
    pub fn selects(&self, labels: &[String]) -> bool {
        self.labels.iter().all(|l| labels.contains(l))
    }

    /// Decide, for every backup, whether to keep it and why. Pure: the same input always
    /// gives the same output, and nothing is read or deleted.
    ///
    /// Returns one decision per backup, in the order of `backups`. Ties in time are broken
    /// by id (the greater id counts as newer). `now` only tells which backups lie in the
    /// future; periods and `within` windows are anchored on the backups themselves.
    pub fn evaluate(&self, backups: &[BackupInfo], now: DateTime<Utc>) -> Vec<Decision> {
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); backups.len()];
        let newer = |a: usize, b: usize| -> Ordering {
            backups[b]
                .time
                .cmp(&backups[a].time)
                .then_with(|| backups[b].id.cmp(&backups[a].id))
        };

        // The backups the rules walk: complete, selected by labels; newest first.
        let mut order: Vec<usize> = (0..backups.len())
            .filter(|&i| backups[i].complete && self.selects(&backups[i].labels))
            .collect();
        order.sort_by(|&a, &b| newer(a, b));

        if self.is_empty() {
            for &i in &order {
                reasons[i].push("empty policy keeps everything".into());
            }
        } else {
            self.apply_rules(backups, &order, now, &mut reasons);
        }

        for (i, b) in backups.iter().enumerate() {
            if !b.complete {
                reasons[i].push("incomplete (prune removes it after the grace period)".into());
            } else if !self.selects(&b.labels) {
                reasons[i].push("not selected by labels".into());
            }
            if b.pinned {
                reasons[i].push("pinned".into());
            }
        }
        let newest_complete = (0..backups.len())
            .filter(|&i| backups[i].complete)
            .min_by(|&a, &b| newer(a, b));
        if let Some(i) = newest_complete {
            reasons[i].push("newest complete backup".into());
        }

        backups
            .iter()
            .zip(reasons)
            .map(|(b, reasons)| Decision {
                id: b.id.clone(),
                time: b.time,
                keep: !reasons.is_empty(),
                reasons,
                series: b.series.clone(),
            })
            .collect()
    }

    /// The restic rules over `order` (selected complete backups, newest first).
    fn apply_rules(
        &self,
        backups: &[BackupInfo],
        order: &[usize],
        now: DateTime<Utc>,
        reasons: &mut [Vec<String>],
    ) {
        let tz = self.time_zone;
        // "The newest backup" of the within rules: never one in the future. With none
        // before `now`, every backup counts as within (restic's zero time).
        let latest = order
            .iter()
            .map(|&i| backups[i].time)
            .filter(|t| *t <= now)
            .max();
        let cutoff = |d: RetentionDuration| latest.map(|l| d.before(l, tz));
        let inside = |t: DateTime<Utc>, cutoff: Option<DateTime<Utc>>| cutoff.is_none_or(|c| t > c);

        let mut counts: Vec<CountRule> = self
            .counts()
            .into_iter()
            .filter_map(|(period, n)| {
                let n = n.filter(|n| *n > 0)?;
                Some(CountRule {
                    name: period.map_or("last", Period::name),
                    period,
                    left: n,
                    taken: 0,
                    last_key: None,
                })
            })
            .collect();
        let within = self
            .keep_within
            .filter(|d| !d.is_zero())
            .map(|d| (d, cutoff(d)));
        let mut withins: Vec<WithinRule> = Period::ALL
            .into_iter()
            .zip(self.durations().into_iter().skip(1))
            .filter_map(|(period, (_, d))| {
                let d = d.filter(|d| !d.is_zero())?;
                Some(WithinRule {
                    name: format!("within-{} {d}", period.name()),
                    period,
                    cutoff: cutoff(d),
                    last_key: None,
                })
            })
            .collect();

        for (pos, &i) in order.iter().enumerate() {
            let oldest = pos + 1 == order.len();
            let time = backups[i].time;
            let local = time.with_timezone(&tz);
            let why = &mut reasons[i];

            for rule in counts.iter_mut().filter(|r| r.left > 0) {
                let key = rule.period.map(|p| p.key(&local));
                let new_period = key.is_none() || key != rule.last_key;
                if new_period || oldest {
                    rule.left -= 1;
                    rule.taken += 1;
                    rule.last_key = key;
                    let prefix = if new_period { "" } else { "oldest " };
                    why.push(format!("{prefix}{} #{}", rule.name, rule.taken));
                }
            }
            if let Some((d, c)) = within {
                if inside(time, c) {
                    why.push(format!("within {d}"));
                }
            }
            for rule in withins.iter_mut() {
                if inside(time, rule.cutoff) {
                    let key = Some(rule.period.key(&local));
                    let new_period = key != rule.last_key;
                    if new_period || oldest {
                        rule.last_key = key;
                        let prefix = if new_period { "" } else { "oldest " };
                        why.push(format!("{prefix}{}", rule.name));
                    }
                }
            }
        }
    }
}

impl fmt::Display for RetentionPolicy {
    /// `keep 24 hourly, 7 daily, within-daily 7d (Europe/Berlin; labels: app)`, or `keep
    /// everything (empty policy)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (period, n) in self.counts() {
            if let Some(n) = n.filter(|n| *n > 0) {
                match period {
                    None => parts.push(format!("last {n}")),
                    Some(p) => parts.push(format!("{n} {}", p.name())),
                }
            }
        }
        for (period, d) in self.durations() {
            if let Some(d) = d.filter(|d| !d.is_zero()) {
                match period {
                    None => parts.push(format!("within {d}")),
                    Some(p) => parts.push(format!("within-{} {d}", p.name())),
                }
            }
        }
        if parts.is_empty() {
            f.write_str("keep everything (empty policy)")?;
        } else {
            write!(f, "keep {}", parts.join(", "))?;
        }
        if let Some(d) = self.keep_pitr.filter(|d| !d.is_zero()) {
            write!(f, ", WAL for point-in-time recovery over the last {d}")?;
        }
        let mut notes = Vec::new();
        if self.time_zone != Tz::UTC {
            notes.push(self.time_zone.name().to_string());
        }
        if !self.labels.is_empty() {
            notes.push(format!("labels: {}", self.labels.join(", ")));
        }
        if !notes.is_empty() {
            write!(f, " ({})", notes.join("; "))?;
        }
        Ok(())
    }
}

/// Retention for a repository that holds several series: a default policy, and policies
/// for the series that need their own (the uploads directory kept 30 days, the database by
/// the runbook's 24/7/4/12).
///
/// [`evaluate`](SeriesPolicies::evaluate) groups the backups by [`Series`] and applies to
/// each group, on its own, the first policy whose selector matches it (else the default):
/// every series gets its own hourly, daily, weekly and monthly slots and its own "newest
/// complete backup" protection, as restic groups snapshots by host and paths. A backup of
/// one source never takes a slot from another's.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use dr_core::retention::{BackupInfo, RetentionPolicy, SeriesPolicies};
///
/// let db = "postgres:7301:app".parse().unwrap();
/// let uploads = "files:web1:/srv/uploads".parse().unwrap();
/// let at = |h| Utc.with_ymd_and_hms(2026, 11, 20, h, 0, 0).unwrap();
/// let backups = vec![
///     BackupInfo::new("db-1", at(1)).in_series(db),
///     BackupInfo::new("up-1", at(2)).in_series(uploads),
/// ];
/// let policies = SeriesPolicies::new(RetentionPolicy { keep_last: Some(1), ..Default::default() });
/// let decisions = policies.evaluate(&backups, at(3));
/// assert!(decisions.iter().all(|d| d.keep)); // each is the newest of its own series
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesPolicies {
    /// The policy of every series no entry of `series` selects.
    pub default: RetentionPolicy,
    /// Policies for particular series; the first whose selector matches applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<SeriesPolicy>,
}

impl From<RetentionPolicy> for SeriesPolicies {
    fn from(default: RetentionPolicy) -> Self {
        SeriesPolicies::new(default)
    }
}

/// A policy for the series a selector picks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesPolicy {
    /// Which series (`postgres:*:app`, `/srv/app/uploads`, `files`).
    pub selector: SeriesSelector,
    /// Their policy.
    pub policy: RetentionPolicy,
}

impl SeriesPolicies {
    /// One policy for every series.
    pub fn new(default: RetentionPolicy) -> Self {
        SeriesPolicies {
            default,
            series: Vec::new(),
        }
    }

    /// Add (or, for the same selector, replace) the policy of the series `selector` picks.
    pub fn set(&mut self, selector: SeriesSelector, policy: RetentionPolicy) {
        match self.series.iter_mut().find(|p| p.selector == selector) {
            Some(p) => p.policy = policy,
            None => self.series.push(SeriesPolicy { selector, policy }),
        }
    }

    /// The policy that applies to `series`.
    pub fn policy_for(&self, series: &Series) -> &RetentionPolicy {
        self.series
            .iter()
            .find(|p| p.selector.matches(series))
            .map_or(&self.default, |p| &p.policy)
    }

    /// Whether every policy is empty (so nothing would ever be deleted).
    pub fn is_empty(&self) -> bool {
        self.default.is_empty() && self.series.iter().all(|p| p.policy.is_empty())
    }

    /// Decide for every backup, each series on its own under its own policy. Returns one
    /// decision per backup, in the order of `backups`; pure, like
    /// [`RetentionPolicy::evaluate`].
    pub fn evaluate(&self, backups: &[BackupInfo], now: DateTime<Utc>) -> Vec<Decision> {
        let mut groups: std::collections::BTreeMap<&Series, Vec<usize>> = Default::default();
        for (i, b) in backups.iter().enumerate() {
            groups.entry(&b.series).or_default().push(i);
        }
        let mut out: Vec<Option<Decision>> = vec![None; backups.len()];
        for (series, members) in groups {
            let group: Vec<BackupInfo> = members.iter().map(|&i| backups[i].clone()).collect();
            let decisions = self.policy_for(series).evaluate(&group, now);
            for (i, d) in members.into_iter().zip(decisions) {
                out[i] = Some(d);
            }
        }
        out.into_iter()
            .map(|d| d.expect("every backup is in one group"))
            .collect()
    }
}

/// Parse an IANA time-zone name (`UTC`, `Europe/Berlin`) into a [`Tz`].
pub fn parse_time_zone(name: &str) -> Result<Tz> {
    name.trim().parse::<Tz>().map_err(|_| {
        Error::invalid(format!(
            "unknown time zone '{name}' (expected an IANA name such as UTC or Europe/Berlin)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn month_steps_normalise_overflowing_days_like_go() {
        let d: RetentionDuration = "1m".parse().unwrap();
        assert_eq!(
            d.before(at("2026-03-31T12:00:00Z"), Tz::UTC),
            at("2026-03-03T12:00:00Z")
        );
    }

    #[test]
    fn day_steps_keep_the_local_time_across_a_clock_change() {
        let d = RetentionDuration::days(1);
        // 2026-03-29 is the spring-forward day in Berlin: one calendar day is 23 hours.
        let t = at("2026-03-29T10:00:00Z"); // 12:00 CEST
        assert_eq!(
            d.before(t, chrono_tz::Europe::Berlin),
            at("2026-03-28T11:00:00Z") // 12:00 CET
        );
    }
}
