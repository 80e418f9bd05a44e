//! Backup series: which source a backup belongs to.
//!
//! A repository may hold backups of several sources: a database dumped every hour, the
//! uploads directory every hour at :30, a second database. Retention, `latest` and status
//! are questions about one source at a time ("keep 24 hourly backups *of the database*",
//! "restore the newest backup *of the database*"), so every backup records its [`Series`]:
//! the source's kind, where it lives (its origin) and what it is called there.
//!
//! | source | kind | origin | name |
//! |---|---|---|---|
//! | a PostgreSQL database (logical dump) | `postgres` | the cluster's system identifier | the database name |
//! | a directory | `files` | the host name | the absolute path |
//!
//! A database is identified by its cluster's system identifier rather than by the host name
//! used to reach it, so a failover to a replica (same system identifier) continues the
//! series, while two clusters that happen to have a database of the same name do not mix.
//!
//! Manifests written before series existed carry none; [`Series::legacy`] assigns them one
//! from what they do record (kind and name, origin unknown), and
//! [`Series::adopt_legacy`] joins them to the one known series of the same kind and name.
//!
//! [`SeriesSelector`] picks series on the command line and in configuration: `--series app`
//! (a kind or a name), `--series postgres:*:app` (kind, origin, name; `*` or empty for any).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::source::SourceInfo;

/// The source a backup belongs to. Displayed (and parsed) as `kind:origin:name`, e.g.
/// `postgres:7301234567890123456:app` or `files:web1:/srv/app/uploads`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Series {
    /// The source's kind, as [`SourceInfo::kind`]: `postgres`, `files`, …
    pub kind: String,
    /// Where the source lives: a cluster's system identifier, a host name. Empty when
    /// unknown (a backup written before series existed).
    pub origin: String,
    /// What it is called there: a database name, a directory's absolute path.
    pub name: String,
}

impl Series {
    /// The series of a dump of `source`. Colons in the kind and origin become `_`, so that
    /// the text form stays `kind:origin:name` (an IPv6 host, say).
    pub fn of(source: &SourceInfo) -> Series {
        Series {
            kind: source.kind.replace(':', "_"),
            origin: source
                .origin
                .as_deref()
                .unwrap_or_default()
                .replace(':', "_"),
            name: source.name.clone(),
        }
    }

    /// The series of a manifest written before series existed: its kind and name, origin
    /// unknown.
    pub fn legacy(source: &SourceInfo) -> Series {
        Series {
            kind: source.kind.clone(),
            origin: String::new(),
            name: source.name.clone(),
        }
    }

    /// Whether the origin is unknown (a legacy manifest).
    pub fn is_legacy(&self) -> bool {
        self.origin.is_empty()
    }

    /// Give each legacy series (origin unknown) the origin of the one known series with the
    /// same kind and name, if there is exactly one; others stay as they are.
    ///
    /// Before series existed every backup of a repository was one series, so a database's
    /// old backups belong with its new ones. Only when the name is ambiguous (two clusters
    /// both have an `app` database) do the old backups stay a series of their own, which
    /// retention then keeps at least one of — never a loss.
    pub fn adopt_legacy<'a>(all: impl IntoIterator<Item = &'a mut Series>) {
        let all: Vec<&mut Series> = all.into_iter().collect();
        let mut origins: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for s in all.iter().filter(|s| !s.is_legacy()) {
            origins
                .entry((s.kind.clone(), s.name.clone()))
                .or_default()
                .insert(s.origin.clone());
        }
        for s in all.into_iter().filter(|s| s.is_legacy()) {
            if let Some(known) = origins.get(&(s.kind.clone(), s.name.clone())) {
                if known.len() == 1 {
                    s.origin = known.iter().next().cloned().unwrap_or_default();
                }
            }
        }
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.origin, self.name)
    }
}

impl FromStr for Series {
    type Err = Error;

    /// `kind:origin:name`; the name may itself contain colons.
    fn from_str(s: &str) -> Result<Series> {
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(kind), Some(origin), Some(name)) if !kind.is_empty() => Ok(Series {
                kind: kind.into(),
                origin: origin.into(),
                name: name.into(),
            }),
            _ => Err(Error::invalid(format!(
                "'{s}' is not a series (expected kind:origin:name, e.g. postgres:7301234567890123456:app)"
            ))),
        }
    }
}

impl Serialize for Series {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Series {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message().to_string()))
    }
}

/// Picks series: every series (the default), a kind or a name, or a `kind:origin:name`
/// pattern whose parts may be `*` (or empty) for "any".
///
/// | text | selects |
/// |---|---|
/// | `postgres` | every series of that kind |
/// | `app`, `/srv/app/uploads` | every series of that name (a word that is not a known kind) |
/// | `postgres:*:app` | kind `postgres`, any origin, name `app` |
/// | `postgres:7301234567890123456:app` | exactly that series |
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SeriesSelector {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this origin.
    pub origin: Option<String>,
    /// Only this name.
    pub name: Option<String>,
    /// A bare word: matches a series whose kind or name it is.
    pub word: Option<String>,
}

impl SeriesSelector {
    /// Every series.
    pub fn any() -> SeriesSelector {
        SeriesSelector::default()
    }

    /// Every series of one kind (what a restorer can read).
    pub fn kind(kind: impl Into<String>) -> SeriesSelector {
        SeriesSelector {
            kind: Some(kind.into()),
            ..Default::default()
        }
    }

    /// Exactly this series.
    pub fn exactly(series: &Series) -> SeriesSelector {
        SeriesSelector {
            kind: Some(series.kind.clone()),
            origin: Some(series.origin.clone()),
            name: Some(series.name.clone()),
            word: None,
        }
    }

    /// Both this selector's and `other`'s conditions.
    pub fn and(mut self, other: &SeriesSelector) -> Result<SeriesSelector> {
        fn merge(mine: &mut Option<String>, theirs: &Option<String>) -> bool {
            match (mine.as_ref(), theirs) {
                (Some(a), Some(b)) => a == b,
                (None, Some(b)) => {
                    *mine = Some(b.clone());
                    true
                }
                _ => true,
            }
        }
        let consistent = merge(&mut self.kind, &other.kind)
            && merge(&mut self.origin, &other.origin)
            && merge(&mut self.name, &other.name)
            && merge(&mut self.word, &other.word);
        if consistent {
            Ok(self)
        } else {
            Err(Error::invalid(format!(
                "the series selectors '{self}' and '{other}' exclude each other"
            )))
        }
    }

    /// Whether `series` is selected.
    pub fn matches(&self, series: &Series) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.kind, &series.kind)
            && is(&self.origin, &series.origin)
            && is(&self.name, &series.name)
            && self
                .word
                .as_deref()
                .is_none_or(|w| w == series.kind || w == series.name)
    }

    /// Whether it selects every series.
    pub fn is_any(&self) -> bool {
        *self == SeriesSelector::default()
    }
}

impl fmt::Display for SeriesSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(w) = &self.word {
            if self.kind.is_none() && self.origin.is_none() && self.name.is_none() {
                return f.write_str(w);
            }
        }
        let part = |p: &Option<String>| p.clone().unwrap_or_else(|| "*".into());
        write!(
            f,
            "{}:{}:{}",
            part(&self.kind),
            part(&self.origin),
            part(&self.name)
        )
    }
}

impl FromStr for SeriesSelector {
    type Err = Error;

    fn from_str(s: &str) -> Result<SeriesSelector> {
        let s = s.trim();
        if s.is_empty() || s == "*" {
            return Ok(SeriesSelector::any());
        }
        if !s.contains(':') {
            return Ok(SeriesSelector {
                word: Some(s.into()),
                ..Default::default()
            });
        }
        let mut parts = s.splitn(3, ':');
        let part = |p: Option<&str>| match p {
            None | Some("") | Some("*") => None,
            Some(p) => Some(p.to_string()),
        };
        Ok(SeriesSelector {
            kind: part(parts.next()),
            origin: part(parts.next()),
            name: part(parts.next()),
            word: None,
        })
    }
}

impl Serialize for SeriesSelector {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SeriesSelector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(s: &str) -> Series {
        s.parse().unwrap()
    }

    #[test]
    fn series_round_trip_through_text_with_colons_in_the_name() {
        let s = series("files:web1:/srv/a:b");
        assert_eq!(s.kind, "files");
        assert_eq!(s.origin, "web1");
        assert_eq!(s.name, "/srv/a:b");
        assert_eq!(s.to_string(), "files:web1:/srv/a:b");
        assert!("nokind".parse::<Series>().is_err());
    }

    #[test]
    fn selectors_match_by_word_or_by_parts() {
        let db = series("postgres:73:app");
        let other_db = series("postgres:74:app");
        let dir = series("files:web1:/srv/uploads");
        let sel = |s: &str| s.parse::<SeriesSelector>().unwrap();
        assert!(sel("postgres").matches(&db) && !sel("postgres").matches(&dir));
        assert!(sel("app").matches(&db) && sel("app").matches(&other_db));
        assert!(sel("/srv/uploads").matches(&dir));
        assert!(sel("postgres:*:app").matches(&other_db));
        assert!(sel("postgres:73:app").matches(&db) && !sel("postgres:73:app").matches(&other_db));
        assert!(sel("*").matches(&dir) && sel("").is_any());
        assert_eq!(sel("postgres:*:app").to_string(), "postgres:*:app");
        assert_eq!(sel("app").to_string(), "app");
    }

    #[test]
    fn legacy_series_join_the_one_known_series_of_their_name() {
        let mut all = [
            series("postgres::app"),
            series("postgres:73:app"),
            series("postgres::shop"),
            series("postgres:1:shop"),
            series("postgres:2:shop"),
        ];
        Series::adopt_legacy(all.iter_mut());
        assert_eq!(all[0], series("postgres:73:app"));
        // Two clusters have a `shop`: the old backups stay apart.
        assert_eq!(all[2], series("postgres::shop"));
    }
}
