//! Timeline history files: which timelines a timeline descends from, and where it forked.
//!
//! When a server is promoted or a point-in-time recovery ends, it starts timeline N+1 and
//! archives `0000000N+1.history`: one line per ancestor, oldest first,
//!
//! ```text
//! 1⇥0/5000158⇥no recovery target specified
//! 2⇥0/9000000⇥before 2026-11-25 02:00:00.000000+00
//! ```
//!
//! (⇥ is a tab) that is, the parent timeline, the position where the child forked off it (the parent's
//! end on this path), and a free-text reason. Timeline 1 has no history file. Recovery that
//! follows timeline N replays each ancestor up to its switch point, then the next one: a base
//! backup taken on timeline B can reach timeline N only if B is on N's path and the backup
//! was consistent (its stop position) before N's path left B. Violating that is PostgreSQL's
//! "requested timeline is not a child of this server's history", the most common
//! point-in-time-recovery failure; [`TimelineHistory::check_reachable`] explains it before
//! anything is restored.

use std::fmt;

use crate::error::{Error, Result};
use crate::wal::lsn::{Lsn, SegmentSize};
use crate::wal::name::TimelineId;

/// One ancestor in a history file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The ancestor timeline.
    pub timeline: TimelineId,
    /// Where the path left it: the first position of the next timeline on the path.
    pub switch_point: Lsn,
    /// PostgreSQL's free-text reason (`no recovery target specified`, `before …`).
    pub reason: String,
}

/// A stretch of one timeline on a path: positions `begin..end` (`end` open for the last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimelineSpan {
    /// The timeline.
    pub timeline: TimelineId,
    /// The first position on this path that belongs to the timeline.
    pub begin: Lsn,
    /// The first position that no longer does (`None` for the path's own timeline).
    pub end: Option<Lsn>,
}

/// The history of one timeline: its ancestors, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistory {
    /// The timeline this history describes.
    pub timeline: TimelineId,
    /// Its ancestors, oldest first (empty for timeline 1).
    pub ancestors: Vec<HistoryEntry>,
}

/// Why a base backup cannot reach a target timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreachable {
    /// The backup's timeline is not on the target timeline's path at all.
    NotOnPath {
        /// The backup's timeline.
        backup_timeline: TimelineId,
        /// The target timeline.
        target: TimelineId,
        /// The target's path, oldest first.
        path: Vec<TimelineId>,
    },
    /// The target's path left the backup's timeline before the backup was consistent.
    ForkedBefore {
        /// The backup's timeline.
        backup_timeline: TimelineId,
        /// Where the backup became consistent.
        backup_stop: Lsn,
        /// The target timeline.
        target: TimelineId,
        /// Where the target's path left the backup's timeline.
        switch_point: Lsn,
    },
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::NotOnPath {
                backup_timeline,
                target,
                path,
            } => write!(
                f,
                "timeline {target} does not descend from the backup's timeline {backup_timeline} \
                 (its history is {})",
                path.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" → ")
            ),
            Unreachable::ForkedBefore {
                backup_timeline,
                backup_stop,
                target,
                switch_point,
            } => write!(
                f,
                "timeline {target} forked off timeline {backup_timeline} at {switch_point}, \
                 before the backup was consistent at {backup_stop}"
            ),
        }
    }
}

impl TimelineHistory {
    /// The history of a timeline without ancestors (timeline 1, or a cluster whose earlier
    /// history is unknown).
    pub fn root(timeline: TimelineId) -> Self {
        TimelineHistory {
            timeline,
            ancestors: Vec::new(),
        }
    }

    /// Parse the text of `timeline`'s history file, as PostgreSQL does: blank lines and
    /// lines starting with `#` are skipped; each other line is `parent<TAB>X/Y<TAB>reason`.
    /// Ancestors must increase and come before `timeline`; switch points must not decrease.
    pub fn parse(timeline: TimelineId, text: &str) -> Result<TimelineHistory> {
        let mut ancestors: Vec<HistoryEntry> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let bad = |why: &str| {
                Error::corrupt(format!(
                    "history file of timeline {timeline}, line {}: {why}",
                    n + 1
                ))
            };
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let mut fields = trimmed.splitn(3, ['\t', ' ']);
            let tli: TimelineId = fields
                .next()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| bad("expected a timeline id"))?;
            let switch_point: Lsn = fields
                .next()
                .and_then(|l| l.trim().parse().ok())
                .ok_or_else(|| bad("expected a WAL position X/Y"))?;
            let reason = fields.next().unwrap_or("").trim().to_string();
            if let Some(prev) = ancestors.last() {
                if tli <= prev.timeline {
                    return Err(bad("timeline ids must increase"));
                }
                if switch_point < prev.switch_point {
                    return Err(bad("switch points must not decrease"));
                }
            }
            if tli >= timeline {
                return Err(bad(&format!(
                    "timeline {tli} cannot be an ancestor of timeline {timeline}"
                )));
            }
            ancestors.push(HistoryEntry {
                timeline: tli,
                switch_point,
                reason,
            });
        }
        if timeline > 1 && ancestors.is_empty() {
            return Err(Error::corrupt(format!(
                "history file of timeline {timeline} lists no parent timeline"
            )));
        }
        Ok(TimelineHistory {
            timeline,
            ancestors,
        })
    }

    /// The file's text as PostgreSQL writes it.
    pub fn to_text(&self) -> String {
        self.ancestors
            .iter()
            .map(|e| format!("{}\t{}\t{}\n", e.timeline, e.switch_point, e.reason))
            .collect()
    }

    /// The path from the oldest ancestor to this timeline, each with its stretch of WAL.
    pub fn spans(&self) -> Vec<TimelineSpan> {
        let mut out = Vec::with_capacity(self.ancestors.len() + 1);
        let mut begin = Lsn::ZERO;
        for e in &self.ancestors {
            out.push(TimelineSpan {
                timeline: e.timeline,
                begin,
                end: Some(e.switch_point),
            });
            begin = e.switch_point;
        }
        out.push(TimelineSpan {
            timeline: self.timeline,
            begin,
            end: None,
        });
        out
    }

    /// The timelines of the path, oldest first, ending with this one.
    pub fn path(&self) -> Vec<TimelineId> {
        self.ancestors
            .iter()
            .map(|e| e.timeline)
            .chain([self.timeline])
            .collect()
    }

    /// Whether `timeline` is this timeline or one of its ancestors.
    pub fn contains(&self, timeline: TimelineId) -> bool {
        timeline == self.timeline || self.ancestors.iter().any(|e| e.timeline == timeline)
    }

    /// Where this path leaves `timeline`: `Some(None)` for this timeline itself (it does not
    /// end), `Some(Some(lsn))` for an ancestor, `None` if `timeline` is not on the path.
    pub fn end_of(&self, timeline: TimelineId) -> Option<Option<Lsn>> {
        if timeline == self.timeline {
            return Some(None);
        }
        self.ancestors
            .iter()
            .find(|e| e.timeline == timeline)
            .map(|e| Some(e.switch_point))
    }

    /// The timeline that holds position `lsn` on this path.
    pub fn timeline_at(&self, lsn: Lsn) -> TimelineId {
        self.ancestors
            .iter()
            .find(|e| lsn < e.switch_point)
            .map_or(self.timeline, |e| e.timeline)
    }

    /// The timeline whose file recovery along this path reads for segment `number`: the
    /// newest timeline of the path that has begun by that segment. The segment holding a
    /// switch point is read from the new timeline, which copies the old one's part of it.
    pub fn segment_timeline(&self, number: u64, size: SegmentSize) -> TimelineId {
        self.spans()
            .iter()
            .rev()
            .find(|s| s.begin.segment(size) <= number)
            .map_or(self.timeline, |s| s.timeline)
    }

    /// Whether a base backup taken on `backup_timeline` and consistent at `backup_stop` can
    /// recover along this path: the backup's timeline is on it, and the path leaves that
    /// timeline no earlier than the backup's stop position.
    pub fn check_reachable(
        &self,
        backup_timeline: TimelineId,
        backup_stop: Lsn,
    ) -> std::result::Result<(), Unreachable> {
        match self.end_of(backup_timeline) {
            None => Err(Unreachable::NotOnPath {
                backup_timeline,
                target: self.timeline,
                path: self.path(),
            }),
            Some(Some(switch_point)) if switch_point < backup_stop => {
                Err(Unreachable::ForkedBefore {
                    backup_timeline,
                    backup_stop,
                    target: self.timeline,
                    switch_point,
                })
            }
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lsn(s: &str) -> Lsn {
        s.parse().unwrap()
    }

    const THREE: &str = "1\t0/5000158\tno recovery target specified\n\n\
                         # a comment\n\
                         2\t0/9000000\tbefore 2026-11-25 02:00:00.000000+00\n";

    #[test]
    fn parses_what_postgres_writes() {
        let h = TimelineHistory::parse(3, THREE).unwrap();
        assert_eq!(h.path(), [1, 2, 3]);
        assert_eq!(
            h.ancestors[1].reason,
            "before 2026-11-25 02:00:00.000000+00"
        );
        assert_eq!(h.end_of(1), Some(Some(lsn("0/5000158"))));
        assert_eq!(h.end_of(3), Some(None));
        assert_eq!(h.end_of(4), None);
        assert_eq!(h.timeline_at(lsn("0/5000157")), 1);
        assert_eq!(h.timeline_at(lsn("0/5000158")), 2);
        assert_eq!(h.timeline_at(lsn("0/9000000")), 3);
        let round = TimelineHistory::parse(3, &h.to_text()).unwrap();
        assert_eq!(round, h);
    }

    #[test]
    fn the_switch_segment_is_read_from_the_new_timeline() {
        let size = SegmentSize::DEFAULT;
        let h = TimelineHistory::parse(3, THREE).unwrap();
        assert_eq!(h.segment_timeline(4, size), 1);
        assert_eq!(h.segment_timeline(5, size), 2);
        assert_eq!(h.segment_timeline(8, size), 2);
        assert_eq!(h.segment_timeline(9, size), 3);
        assert_eq!(TimelineHistory::root(1).segment_timeline(9, size), 1);
    }

    #[test]
    fn reachability_explains_the_not_a_child_failure() {
        let h = TimelineHistory::parse(3, THREE).unwrap();
        assert!(h.check_reachable(1, lsn("0/4000000")).is_ok());
        assert!(h.check_reachable(1, lsn("0/5000158")).is_ok());
        let late = h.check_reachable(1, lsn("0/6000000")).unwrap_err();
        assert_eq!(
            late.to_string(),
            "timeline 3 forked off timeline 1 at 0/5000158, before the backup was consistent at 0/6000000"
        );
        assert!(h.check_reachable(3, lsn("5/0")).is_ok());
        let sibling = TimelineHistory::parse(4, "1\t0/5000158\tx\n").unwrap();
        assert_eq!(
            sibling
                .check_reachable(3, lsn("0/9000100"))
                .unwrap_err()
                .to_string(),
            "timeline 4 does not descend from the backup's timeline 3 (its history is 1 → 4)"
        );
    }

    #[test]
    fn malformed_histories_are_refused_with_the_line() {
        for (text, why) in [
            (
                "2\t0/1\tx\n1\t0/2\ty\n",
                "line 2: timeline ids must increase",
            ),
            (
                "1\t0/9\tx\n2\t0/1\ty\n",
                "line 2: switch points must not decrease",
            ),
            ("1\tnonsense\tx\n", "line 1: expected a WAL position"),
            ("3\t0/1\tx\n", "line 1: timeline 3 cannot be an ancestor"),
            ("", "lists no parent timeline"),
        ] {
            let e = TimelineHistory::parse(3, text).unwrap_err();
            assert!(e.to_string().contains(why), "{e} contains {why}");
        }
    }
}
