//! Cron expressions in a time zone, maintenance windows, and the [`Schedule`] that combines
//! them with jitter and a policy for missed runs: plain arithmetic on wall-clock instants.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How many skipped ticks the window arithmetic walks before it gives up.
const MAX_STEPS: usize = 100_000;

/// A cron expression evaluated in a time zone.
///
/// croner is used because it is maintained, small, and complete: 5- and 6-field
/// expressions, `L`, `W` and `#`, names, and time-zone-aware evaluation through chrono
/// (including clock changes), which is what "02:00 in Europe/Berlin" and "the first Sunday of
/// the month" need. The `cron` crate needs 6 or 7 fields and lacks `#`; `saffron` is
/// unmaintained.
#[derive(Clone)]
pub struct CronExpr {
    text: String,
    cron: croner::Cron,
    tz: Tz,
}

impl CronExpr {
    /// Parse `expr` (5 fields, or 6 with seconds first) to be evaluated in `tz`.
    pub fn new(expr: &str, tz: Tz) -> Result<CronExpr> {
        let cron = croner::parser::CronParser::new().parse(expr).map_err(|e| {
            Error::invalid(format!(
                "'{expr}' is not a valid cron expression (5 fields: minute hour day-of-month month day-of-week, or 6 with seconds first)"
            ))
            .with_source(e)
        })?;
        let parsed = CronExpr {
            text: expr.trim().to_string(),
            cron,
            tz,
        };
        // A pattern that can never fire (30 February) is an error now, not a silent no-op.
        if parsed.next_after(Utc::now()).is_none() {
            return Err(Error::invalid(format!(
                "cron expression '{expr}' never fires"
            )));
        }
        Ok(parsed)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The time zone it is evaluated in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// Whether `t` is a tick (to the second).
    pub fn fires_at(&self, t: DateTime<Utc>) -> bool {
        self.cron
            .is_time_matching(&t.with_timezone(&self.tz))
            .unwrap_or(false)
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?} in {})", self.text, self.tz)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tz == Tz::UTC {
            f.write_str(&self.text)
        } else {
            write!(f, "{} ({})", self.text, self.tz)
        }
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.tz == other.tz
    }
}

/// A recurring window of time, such as "the first Sunday of each month, 02:00–04:00 UTC":
/// a cron expression for its start and a length. The start is inside, the end is not.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    start: CronExpr,
    length: Duration,
}

impl Window {
    /// A window opening at each tick of `start` and lasting `length` (more than zero).
    pub fn new(start: CronExpr, length: Duration) -> Result<Window> {
        if length < Duration::from_secs(1) {
            return Err(Error::invalid("a window must last at least one second"));
        }
        Ok(Window { start, length })
    }

    /// When the window opens.
    pub fn start(&self) -> &CronExpr {
        &self.start
    }

    /// How long it stays open.
    pub fn length(&self) -> Duration {
        self.length
    }

    fn length_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.length).unwrap_or(chrono::Duration::MAX)
    }

    /// The occurrence of the window that contains `t`, as `(start, end)`.
    pub fn containing(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        // If any occurrence contains t, the latest one that started by t does.
        let start = self.start.latest_at_or_before(t)?;
        let end = start + self.length_chrono();
        (t < end).then_some((start, end))
    }

    /// Whether `t` is inside an occurrence of the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.containing(t).is_some()
    }

    /// The next time the window opens, strictly after `t`.
    pub fn next_start_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.start.next_after(t)
    }
}

/// Where in time a job may run relative to a [`Window`].
#[derive(Debug, Clone, Default, PartialEq)]
pub enum WindowRule {
    /// At any time.
    #[default]
    Anytime,
    /// Only inside the window: ticks outside it are skipped.
    OnlyIn(Window),
    /// Never inside the window: ticks inside it are skipped.
    NotIn(Window),
}

impl WindowRule {
    /// Whether a run may happen at `t`.
    pub fn allows(&self, t: DateTime<Utc>) -> bool {
        match self {
            WindowRule::Anytime => true,
            WindowRule::OnlyIn(w) => w.contains(t),
            WindowRule::NotIn(w) => !w.contains(t),
        }
    }

    /// For an allowed `t`, the instant at which the rule stops allowing runs (the end of
    /// the containing window, or the start of the next one); `None` if never.
    pub fn allowed_until(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            WindowRule::Anytime => None,
            WindowRule::OnlyIn(w) => w.containing(t).map(|(_, end)| end),
            WindowRule::NotIn(w) => w.next_start_after(t),
        }
    }
}

/// What to do at start-up about ticks that passed while no process was running the job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedRuns {
    /// Run the job once at start (for the latest missed tick), if the window rule allows.
    #[default]
    RunOnce,
    /// Report the miss and wait for the next tick.
    Skip,
}

impl FromStr for MissedRuns {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "run_once" | "run-once" => Ok(MissedRuns::RunOnce),
            "skip" => Ok(MissedRuns::Skip),
            other => Err(Error::invalid(format!(
                "'{other}' is not a missed-run policy: use run_once or skip"
            ))),
        }
    }
}

/// When a job runs: cron ticks in a time zone, jitter, a window rule and a missed-run
/// policy. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The ticks.
    pub cron: CronExpr,
    /// Each run is delayed by a uniform random amount in `[0, jitter]` (bounded further by
    /// the window rule).
    pub jitter: Duration,
    /// Confinement to, or exclusion from, a window.
    pub window: WindowRule,
    /// What to do about runs missed while the process was down.
    pub missed: MissedRuns,
}

impl Schedule {
    /// Every tick of `cron`, no jitter, no window, missed runs run once at start.
    pub fn new(cron: CronExpr) -> Schedule {
        Schedule {
            cron,
            jitter: Duration::ZERO,
            window: WindowRule::Anytime,
            missed: MissedRuns::default(),
        }
    }

    /// Parse `expr` in UTC: shorthand for `Schedule::new(CronExpr::new(expr, UTC)?)`.
    pub fn cron_utc(expr: &str) -> Result<Schedule> {
        Ok(Schedule::new(CronExpr::new(expr, Tz::UTC)?))
    }

    /// With a random delay of up to `jitter` per run.
    pub fn jitter(mut self, jitter: Duration) -> Schedule {
        self.jitter = jitter;
        self
    }

    /// Only inside `window`.
    pub fn only_in(mut self, window: Window) -> Schedule {
        self.window = WindowRule::OnlyIn(window);
        self
    }

    /// Never inside `window`.
    pub fn not_in(mut self, window: Window) -> Schedule {
        self.window = WindowRule::NotIn(window);
        self
    }

    /// With the missed-run policy `missed`.
    pub fn missed(mut self, missed: MissedRuns) -> Schedule {
        self.missed = missed;
        self
    }

    /// The first tick strictly after `t` that the window rule allows; `None` if there is
    /// none within a long search (a window the ticks never fall into).
    pub fn next_tick_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let second = chrono::Duration::seconds(1);
        let mut from = t;
        for _ in 0..MAX_STEPS {
            let tick = self.cron.next_after(from)?;
            match &self.window {
                WindowRule::Anytime => return Some(tick),
                WindowRule::OnlyIn(w) => {
                    if w.contains(tick) {
                        return Some(tick);
                    }
                    // Jump to just before the next opening.
                    let open = w.next_start_after(tick)?;
                    from = (open - second).max(tick);
                }
                WindowRule::NotIn(w) => match w.containing(tick) {
                    None => return Some(tick),
                    // Jump to just before the window closes: a tick at its end is allowed.
                    Some((_, end)) => from = (end - second).max(tick),
                },
            }
        }
        None
    }

    /// The latest tick at or before `t` that the window rule allows.
    pub fn latest_tick_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let second = chrono::Duration::seconds(1);
        let mut at = t;
        for _ in 0..MAX_STEPS {
            let tick = self.cron.latest_at_or_before(at)?;
            match &self.window {
                WindowRule::Anytime => return Some(tick),
                WindowRule::OnlyIn(w) => {
                    if w.contains(tick) {
                        return Some(tick);
                    }
                    // The latest opening before the tick ended before it: look before its end.
                    let open = w.start().latest_at_or_before(tick)?;
                    let end = open + w.length_chrono();
                    at = (end - second).min(tick - second);
                }
                WindowRule::NotIn(w) => match w.containing(tick) {
                    None => return Some(tick),
                    Some((open, _)) => at = (open - second).min(tick - second),
                },
            }
        }
        None
    }

    /// The largest delay jitter may add to `tick`: the configured jitter, or less so that the
    /// run stays on the same side of every window boundary (strictly before the instant the
    /// rule stops allowing runs).
    pub fn jitter_bound(&self, tick: DateTime<Utc>) -> Duration {
        match self.window.allowed_until(tick) {
            None => self.jitter,
            Some(until) => {
                let room = (until - tick)
                    .to_std()
                    .unwrap_or_default()
                    .saturating_sub(Duration::from_millis(1));
                self.jitter.min(room)
            }
        }
    }

    /// When the run for `tick` happens, given `u`, a uniform sample from `[0, 1]`:
    /// `tick + u × jitter_bound(tick)`, rounded to the millisecond.
    pub fn run_time(&self, tick: DateTime<Utc>, u: f64) -> DateTime<Utc> {
        let bound = self.jitter_bound(tick).as_millis() as f64;
        let delay = (u.clamp(0.0, 1.0) * bound).floor() as i64;
        tick + chrono::Duration::milliseconds(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn maintenance() -> Window {
        Window::new(
            CronExpr::new("0 2 * * SUN#1", Tz::UTC).unwrap(),
            Duration::from_secs(7200),
        )
        .unwrap()
    }

    #[test]
    fn first_sunday_window_opens_on_the_first_sunday_only() {
        let w = maintenance();
        // 2026-12-06 is the first Sunday of December; 2026-12-13 the second.
        assert!(w.contains(utc(2026, 12, 6, 2, 0)));
        assert!(w.contains(utc(2026, 12, 6, 3, 59)));
        assert!(!w.contains(utc(2026, 12, 6, 4, 0)), "the end is exclusive");
        assert!(!w.contains(utc(2026, 12, 6, 1, 59)));
        assert!(!w.contains(utc(2026, 12, 13, 2, 30)));
        assert_eq!(
            w.next_start_after(utc(2026, 12, 6, 2, 0)),
            Some(utc(2027, 1, 3, 2, 0))
        );
    }

    #[test]
    fn cron_ticks_follow_the_time_zone_across_clock_changes() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let c = CronExpr::new("0 2 * * *", berlin).unwrap();
        // Winter: 02:00 CET is 01:00 UTC; summer: 02:00 CEST is 00:00 UTC.
        assert_eq!(
            c.next_after(utc(2026, 1, 10, 12, 0)),
            Some(utc(2026, 1, 11, 1, 0))
        );
        assert_eq!(
            c.next_after(utc(2026, 7, 10, 12, 0)),
            Some(utc(2026, 7, 11, 0, 0))
        );
    }

    #[test]
    fn only_in_skips_ticks_outside_the_window_and_not_in_skips_inside() {
        let hourly = Schedule::cron_utc("0 * * * *").unwrap();
        let inside = hourly.clone().only_in(maintenance());
        assert_eq!(
            inside.next_tick_after(utc(2026, 11, 25, 0, 0)),
            Some(utc(2026, 12, 6, 2, 0))
        );
        assert_eq!(
            inside.next_tick_after(utc(2026, 12, 6, 2, 0)),
            Some(utc(2026, 12, 6, 3, 0))
        );
        assert_eq!(
            inside.next_tick_after(utc(2026, 12, 6, 3, 0)),
            Some(utc(2027, 1, 3, 2, 0))
        );
        assert_eq!(
            inside.latest_tick_at_or_before(utc(2026, 12, 20, 0, 0)),
            Some(utc(2026, 12, 6, 3, 0))
        );
        let outside = hourly.not_in(maintenance());
        assert_eq!(
            outside.next_tick_after(utc(2026, 12, 6, 1, 0)),
            Some(utc(2026, 12, 6, 4, 0))
        );
        assert_eq!(
            outside.latest_tick_at_or_before(utc(2026, 12, 6, 3, 30)),
            Some(utc(2026, 12, 6, 1, 0))
        );
    }

    #[test]
    fn jitter_never_crosses_a_window_boundary() {
        let s = Schedule::cron_utc("30 * * * *")
            .unwrap()
            .jitter(Duration::from_secs(3600))
            .only_in(maintenance());
        // The 03:30 tick has 30 minutes left in the window.
        let tick = utc(2026, 12, 6, 3, 30);
        assert!(s.jitter_bound(tick) < Duration::from_secs(1800));
        assert!(s.run_time(tick, 1.0) < utc(2026, 12, 6, 4, 0));
        let s = Schedule::cron_utc("30 * * * *")
            .unwrap()
            .jitter(Duration::from_secs(3600))
            .not_in(maintenance());
        assert!(s.run_time(utc(2026, 12, 6, 1, 30), 1.0) < utc(2026, 12, 6, 2, 0));
        assert_eq!(
            s.jitter_bound(utc(2026, 12, 7, 1, 30)),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn invalid_cron_expressions_are_refused_with_the_expression() {
        for bad in ["", "* * *", "61 * * * *", "0 0 30 2 *"] {
            let e = CronExpr::new(bad, Tz::UTC).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
