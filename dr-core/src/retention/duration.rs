//! [`RetentionDuration`]: restic's calendar durations (`24h`, `7d`, `1y2m3d`), parsed,
//! printed and stepped back from a time in the policy's time zone.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration as TimeDelta, LocalResult, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A calendar duration in restic's units: years, months, days and hours.
///
/// Parsed from strings such as `24h`, `7d`, `28d`, `1y`, `1y2m3d` (units in any order, each
/// a whole number; restic has no weeks: write `7d`). Years, months and days are calendar
/// steps, so `1m` before 31 March is 3 March (Go's and restic's normalisation of 31
/// February), and a day is a calendar day across a clock change; hours are elapsed time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RetentionDuration {
    /// Calendar years.
    pub years: u32,
    /// Calendar months.
    pub months: u32,
    /// Calendar days.
    pub days: u32,
    /// Hours of elapsed time.
    pub hours: u32,
}

impl RetentionDuration {
    /// A duration of `hours` hours.
    pub fn hours(hours: u32) -> Self {
        RetentionDuration {
            hours,
            ..Default::default()
        }
    }

    /// A duration of `days` calendar days.
    pub fn days(days: u32) -> Self {
        RetentionDuration {
            days,
            ..Default::default()
        }
    }

    /// Whether every part is zero (a rule with a zero duration is off).
    pub fn is_zero(&self) -> bool {
        *self == RetentionDuration::default()
    }

    /// The instant this duration before `t`, with calendar steps taken in `tz`.
    ///
    /// Years, months and days are subtracted from `t`'s local date and the day overflow is
    /// normalised forward as Go's `AddDate` does (restic's semantics); the local time of day
    /// is kept (the earlier instant if it is ambiguous, the next valid one if it falls in a
    /// clock change's gap); then the hours are subtracted as elapsed time. Saturates at the
    /// earliest representable instant.
    pub fn before(&self, t: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        self.try_before(t, tz).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    fn try_before(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&tz).naive_local();
        let month0 = i64::from(local.month0()) - i64::from(self.months);
        let year = i64::from(local.year()) - i64::from(self.years) + month0.div_euclid(12);
        let month = u32::try_from(month0.rem_euclid(12)).ok()? + 1;
        let first = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, 1)?;
        let day_offset = i64::from(local.day()) - 1 - i64::from(self.days);
        let date = first.checked_add_signed(TimeDelta::try_days(day_offset)?)?;
        let naive = date.and_time(local.time());
        let shifted = resolve_local(tz, naive)?;
        shifted.checked_sub_signed(TimeDelta::try_hours(i64::from(self.hours))?)
    }
}

/// A local wall-clock time as an instant: the earlier of two in a fold, the first valid one
/// after a gap.
fn resolve_local(tz: Tz, naive: chrono::NaiveDateTime) -> Option<DateTime<Utc>> {
    let mut probe = naive;
    for _ in 0..4 {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => return Some(a.min(b).with_timezone(&Utc)),
            LocalResult::None => probe = probe.checked_add_signed(TimeDelta::minutes(30))?,
        }
    }
    Some(tz.from_utc_datetime(&naive).with_timezone(&Utc))
}

impl fmt::Display for RetentionDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for RetentionDuration {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(format!(
                "invalid duration '{s}': {why} (expected whole numbers of y, m, d and h, e.g. 24h, 7d, 1y2m3d)"
            ))
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(bad("it is empty"));
        }
        let mut d = RetentionDuration::default();
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad("expected a number"));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad("a number is too large"))?;
            let unit = rest[digits..]
                .chars()
                .next()
                .ok_or_else(|| bad("the last number has no unit"))?;
            let slot = match unit {
                'y' => &mut d.years,
                'm' => &mut d.months,
                'd' => &mut d.days,
                'h' => &mut d.hours,
                'w' => return Err(bad("weeks are not a unit, as in restic: write 7d")),
                _ => return Err(bad(&format!("unknown unit '{unit}'"))),
            };
            *slot = slot
                .checked_add(n)
                .ok_or_else(|| bad("a number is too large"))?;
            rest = &rest[digits + unit.len_utf8()..];
        }
        Ok(d)
    }
}

impl Serialize for RetentionDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RetentionDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message().to_string()))
    }
}
