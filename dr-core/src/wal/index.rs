//! The state of an archive as a value: which files exist, and what follows from that —
//! contiguous ranges, gaps, how far a base backup can roll forward, the PITR window.
//!
//! Everything here is pure: build an [`ArchiveIndex`] from a listing (or by hand, in tests),
//! then ask it questions. Continuity is judged along a timeline's *path* (its history):
//! recovery that follows timeline 3 reads timeline 1's segments up to the first switch,
//! timeline 2's up to the next, and so on ([`TimelineHistory::segment_timeline`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::wal::history::TimelineHistory;
use crate::wal::layout::WalContents;
use crate::wal::lsn::{Lsn, SegmentSize};
use crate::wal::name::{SegmentId, TimelineId, WalFile};

/// What the index knows about one archived file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// When it was archived.
    pub archived_at: DateTime<Utc>,
    /// What its records say, when they were read at push time.
    pub contents: Option<WalContents>,
}

impl FileInfo {
    /// A file archived at `t` whose records were not read.
    pub fn at(t: DateTime<Utc>) -> Self {
        FileInfo {
            archived_at: t,
            contents: None,
        }
    }

    /// The newest time the file's data is known to reach: its last commit, else the time it
    /// was archived (an upper bound).
    pub fn time(&self) -> DateTime<Utc> {
        self.contents
            .as_ref()
            .and_then(|c| c.last_commit)
            .unwrap_or(self.archived_at)
    }
}

/// A base backup, as continuity and retention see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaseBackup {
    /// The backup id.
    pub id: String,
    /// The timeline it was taken on.
    pub timeline: TimelineId,
    /// Where its WAL starts (the checkpoint's redo position, from `pg_backup_start`).
    pub start_lsn: Lsn,
    /// Where it becomes consistent (from `pg_backup_stop`).
    pub stop_lsn: Lsn,
    /// When it started.
    pub start_time: DateTime<Utc>,
    /// When it became consistent: the earliest time it can be restored to.
    pub stop_time: DateTime<Utc>,
    /// The next transaction id when it started, if known (to choose a backup for a
    /// `--target-xid`).
    pub next_xid: Option<u64>,
}

/// A run of contiguous archived segments on one timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SegmentRange {
    /// The timeline.
    pub timeline: TimelineId,
    /// First segment's name.
    pub first: String,
    /// Last segment's name.
    pub last: String,
    /// Number of segments.
    pub segments: u64,
    /// Time of the first segment's data.
    pub from: DateTime<Utc>,
    /// Time of the last segment's data.
    pub to: DateTime<Utc>,
    /// Whether a partial segment follows the last complete one.
    pub partial_end: bool,
}

/// Segments missing between two archived ones on a recovery path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Gap {
    /// The timeline of the missing files.
    pub timeline: TimelineId,
    /// First missing segment's number.
    #[serde(skip)]
    pub first_number: u64,
    /// Last missing segment's number.
    #[serde(skip)]
    pub last_number: u64,
    /// First missing segment's name.
    pub first: String,
    /// Last missing segment's name.
    pub last: String,
    /// How many are missing.
    pub segments: u64,
    /// The time of the data before the gap (the last recoverable time across it).
    pub lost_from: DateTime<Utc>,
    /// The time of the data after it.
    pub lost_to: DateTime<Utc>,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.segments == 1 {
            write!(f, "segment {} is missing", self.first)?;
        } else {
            write!(
                f,
                "segments {} to {} ({}) are missing",
                self.first, self.last, self.segments
            )?;
        }
        write!(
            f,
            " (WAL from {} to {} is lost)",
            self.lost_from.format("%Y-%m-%d %H:%M:%S UTC"),
            self.lost_to.format("%Y-%m-%d %H:%M:%S UTC")
        )
    }
}

/// How far recovery along one path gets from a starting segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The path followed.
    pub timeline: TimelineId,
    /// The first segment read.
    pub first: u64,
    /// The last segment that can be read without a break (`None`: not even the first).
    pub last: Option<SegmentId>,
    /// Whether that last file is a partial segment (the newest data, incomplete).
    pub partial_end: bool,
    /// The time its data reaches.
    pub reaches: Option<DateTime<Utc>>,
    /// The gap that stopped it, if later segments of the path exist.
    pub gap: Option<Gap>,
}

/// An interval of times that can be recovered to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recoverable {
    /// Earliest time (a base backup's consistent point).
    pub from: DateTime<Utc>,
    /// Latest time (where the WAL after it ends or breaks).
    pub to: DateTime<Utc>,
}

/// How far one base backup recovers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupReach {
    /// The backup.
    pub id: String,
    /// Whether its own WAL (start → stop) is all archived: without it, it cannot be restored.
    pub consistent: bool,
    /// The missing part of its own WAL, if any.
    pub missing: Option<Gap>,
    /// The timeline whose path reaches furthest from it.
    pub timeline: TimelineId,
    /// The interval it recovers to (none if it is not consistent).
    pub recoverable: Option<Recoverable>,
}

/// The archived files of one cluster.
#[derive(Debug, Clone)]
pub struct ArchiveIndex {
    size: SegmentSize,
    segments: BTreeMap<SegmentId, FileInfo>,
    partials: BTreeMap<SegmentId, FileInfo>,
    histories: BTreeMap<TimelineId, (TimelineHistory, FileInfo)>,
    others: BTreeMap<WalFile, FileInfo>,
}

impl ArchiveIndex {
    /// An empty index of a cluster with segments of `size`.
    pub fn new(size: SegmentSize) -> Self {
        ArchiveIndex {
            size,
            segments: BTreeMap::new(),
            partials: BTreeMap::new(),
            histories: BTreeMap::new(),
            others: BTreeMap::new(),
        }
    }

    /// The segment size.
    pub fn segment_size(&self) -> SegmentSize {
        self.size
    }

    /// Record an archived segment, partial or backup history file. (History files go
    /// through [`ArchiveIndex::insert_history`], with their parsed contents.)
    pub fn insert(&mut self, file: WalFile, info: FileInfo) {
        match file {
            WalFile::Segment(s) => {
                self.segments.insert(s, info);
            }
            WalFile::Partial(s) => {
                self.partials.insert(s, info);
            }
            WalFile::History(_) | WalFile::Backup { .. } => {
                self.others.insert(file, info);
            }
        }
    }

    /// Record an archived timeline history.
    pub fn insert_history(&mut self, history: TimelineHistory, info: FileInfo) {
        self.histories.insert(history.timeline, (history, info));
    }

    /// Every archived file, in order, with what is known about it.
    pub fn files(&self) -> Vec<(WalFile, &FileInfo)> {
        let mut all: Vec<(WalFile, &FileInfo)> = self
            .segments
            .iter()
            .map(|(s, i)| (WalFile::Segment(*s), i))
            .chain(self.partials.iter().map(|(s, i)| (WalFile::Partial(*s), i)))
            .chain(
                self.histories
                    .iter()
                    .map(|(t, (_, i))| (WalFile::History(*t), i)),
            )
            .chain(self.others.iter().map(|(f, i)| (*f, i)))
            .collect();
        all.sort_by_key(|a| a.0);
        all.dedup_by(|a, b| a.0 == b.0);
        all
    }

    /// Whether nothing is archived.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
            && self.partials.is_empty()
            && self.histories.is_empty()
            && self.others.is_empty()
    }

    /// The complete segment `id`, if archived.
    pub fn segment(&self, id: SegmentId) -> Option<&FileInfo> {
        self.segments.get(&id)
    }

    /// The partial segment `id`, if archived.
    pub fn partial(&self, id: SegmentId) -> Option<&FileInfo> {
        self.partials.get(&id)
    }

    /// Every timeline with a history or a file in the archive, plus timeline 1.
    pub fn timelines(&self) -> BTreeSet<TimelineId> {
        let mut all: BTreeSet<TimelineId> = self.histories.keys().copied().collect();
        all.extend(self.segments.keys().map(|s| s.timeline));
        all.extend(self.partials.keys().map(|s| s.timeline));
        all.insert(1);
        all
    }

    /// The history of `timeline`: archived, or the root history for timeline 1. `None` for
    /// a later timeline whose history file is missing.
    pub fn history(&self, timeline: TimelineId) -> Option<TimelineHistory> {
        match self.histories.get(&timeline) {
            Some((h, _)) => Some(h.clone()),
            None if timeline == 1 => Some(TimelineHistory::root(1)),
            None => None,
        }
    }

    /// The highest timeline whose history exists, probing upwards from `from` one by one as
    /// PostgreSQL does for `recovery_target_timeline = 'latest'`.
    pub fn latest_timeline_from(&self, from: TimelineId) -> TimelineId {
        let mut t = from;
        while self.histories.contains_key(&(t + 1)) {
            t += 1;
        }
        t
    }

    /// The newest archived segment (complete or partial) of any timeline, by time.
    pub fn newest(&self) -> Option<(WalFile, &FileInfo)> {
        self.segments
            .iter()
            .map(|(s, i)| (WalFile::Segment(*s), i))
            .chain(self.partials.iter().map(|(s, i)| (WalFile::Partial(*s), i)))
            .max_by_key(|(f, i)| (i.archived_at, f.timeline(), f.segment().map(|s| s.number)))
    }

    /// The file recovery along `path` reads for segment `number`, if archived: the complete
    /// segment, else a partial one (which ends the chain).
    fn available(
        &self,
        path: &TimelineHistory,
        number: u64,
    ) -> Option<(SegmentId, &FileInfo, bool)> {
        let id = SegmentId::new(path.segment_timeline(number, self.size), number);
        if let Some(i) = self.segments.get(&id) {
            return Some((id, i, false));
        }
        self.partials.get(&id).map(|i| (id, i, true))
    }

    /// The highest segment number recovery along `path` could read from the archive.
    fn path_end(&self, path: &TimelineHistory) -> Option<u64> {
        let mut end = None;
        for span in path.spans() {
            let lo = span.begin.segment(self.size);
            let hi = span
                .end
                .map_or(u64::MAX, |e| e.last_segment_before(self.size));
            let in_span =
                |s: &SegmentId| s.timeline == span.timeline && (lo..=hi).contains(&s.number);
            let newest = self
                .segments
                .keys()
                .chain(self.partials.keys())
                .filter(|s| in_span(s))
                .map(|s| s.number)
                .max();
            end = end.max(newest);
        }
        end
    }

    /// Follow `path` from segment `first` until a segment is missing (or a partial segment
    /// ends it). The break is a [`Gap`] if the path has archived segments after it.
    pub fn chain(&self, path: &TimelineHistory, first: u64) -> Chain {
        let end = self.path_end(path);
        let mut chain = Chain {
            timeline: path.timeline,
            first,
            last: None,
            partial_end: false,
            reaches: None,
            gap: None,
        };
        let mut n = first;
        let mut before: Option<DateTime<Utc>> = None;
        loop {
            match self.available(path, n) {
                Some((id, info, partial)) => {
                    chain.last = Some(id);
                    chain.reaches = Some(info.time());
                    before = Some(info.time());
                    if partial {
                        chain.partial_end = true;
                        return chain;
                    }
                }
                None => {
                    if end.is_some_and(|e| e > n) {
                        chain.gap = self.gap_from(path, n, before);
                    }
                    return chain;
                }
            }
            if n == u64::MAX {
                return chain;
            }
            n += 1;
        }
    }

    /// The gap on `path` that begins with the missing segment `n`.
    fn gap_from(
        &self,
        path: &TimelineHistory,
        n: u64,
        before: Option<DateTime<Utc>>,
    ) -> Option<Gap> {
        let end = self.path_end(path)?;
        let mut m = n;
        while m < end && self.available(path, m + 1).is_none() {
            m += 1;
        }
        let after = self.available(path, m + 1)?;
        let timeline = path.segment_timeline(n, self.size);
        let lost_to = after
            .1
            .contents
            .as_ref()
            .and_then(|c| c.first_commit)
            .unwrap_or(after.1.time());
        Some(Gap {
            timeline,
            first_number: n,
            last_number: m,
            first: SegmentId::new(timeline, n).name(self.size),
            last: SegmentId::new(path.segment_timeline(m, self.size), m).name(self.size),
            segments: m - n + 1,
            lost_from: before.unwrap_or(lost_to),
            lost_to,
        })
    }

    /// Contiguous runs of complete segments, per timeline, in order.
    pub fn ranges(&self) -> Vec<SegmentRange> {
        let mut out: Vec<SegmentRange> = Vec::new();
        let mut prev: Option<SegmentId> = None;
        for (id, info) in &self.segments {
            let extends =
                prev.is_some_and(|p| p.timeline == id.timeline && p.number + 1 == id.number);
            if extends {
                let r = out.last_mut().expect("a range is open");
                r.last = id.name(self.size);
                r.segments += 1;
                r.to = info.time();
            } else {
                out.push(SegmentRange {
                    timeline: id.timeline,
                    first: id.name(self.size),
                    last: id.name(self.size),
                    segments: 1,
                    from: info.time(),
                    to: info.time(),
                    partial_end: false,
                });
            }
            prev = Some(*id);
        }
        for (id, info) in &self.partials {
            let follows = |r: &SegmentRange| {
                r.timeline == id.timeline
                    && SegmentId::parse(&r.last, self.size).is_ok_and(|l| l.number + 1 == id.number)
            };
            if let Some(r) = out.iter_mut().find(|r| follows(r)) {
                r.partial_end = true;
                r.to = r.to.max(info.time());
            }
        }
        out
    }

    /// Every gap on the path of every timeline: missing segments between two archived ones
    /// that recovery along that path would read. The archive's start (before the oldest
    /// segment) is not a gap.
    pub fn gaps(&self) -> Vec<Gap> {
        let mut found: BTreeSet<Gap> = BTreeSet::new();
        for t in self.timelines() {
            let Some(path) = self.history(t) else {
                continue;
            };
            let Some(end) = self.path_end(&path) else {
                continue;
            };
            // The lowest segment the path can read.
            let start = path
                .spans()
                .iter()
                .filter_map(|span| {
                    let lo = span.begin.segment(self.size);
                    let hi = span
                        .end
                        .map_or(u64::MAX, |e| e.last_segment_before(self.size));
                    self.segments
                        .keys()
                        .chain(self.partials.keys())
                        .filter(|s| s.timeline == span.timeline && (lo..=hi).contains(&s.number))
                        .map(|s| s.number)
                        .min()
                })
                .min();
            let Some(mut n) = start else { continue };
            while n <= end {
                let chain = self.chain(&path, n);
                match chain.gap {
                    Some(g) => {
                        n = g.last_number + 1;
                        found.insert(g);
                    }
                    None => break,
                }
            }
        }
        found.into_iter().collect()
    }

    /// The timelines whose recovery paths a backup on `timeline`, consistent at `stop`, can
    /// follow.
    pub fn reachable_timelines(&self, timeline: TimelineId, stop: Lsn) -> Vec<TimelineHistory> {
        self.timelines()
            .into_iter()
            .filter_map(|t| self.history(t))
            .filter(|h| h.check_reachable(timeline, stop).is_ok())
            .collect()
    }

    /// How far `backup` recovers: whether its own WAL is archived, and to which time the WAL
    /// after it reaches without a break, along the best path.
    pub fn reach(&self, backup: &BaseBackup) -> BackupReach {
        let first = backup.start_lsn.segment(self.size);
        let needed_last = backup.stop_lsn.last_segment_before(self.size);
        let mut best: Option<(Chain, TimelineId)> = None;
        for path in self.reachable_timelines(backup.timeline, backup.stop_lsn) {
            let chain = self.chain(&path, first);
            let better = match &best {
                None => true,
                Some((b, _)) => {
                    chain.last.map(|l| l.number) > b.last.map(|l| l.number)
                        || (chain.last.map(|l| l.number) == b.last.map(|l| l.number)
                            && chain.reaches > b.reaches)
                }
            };
            if better {
                best = Some((chain, path.timeline));
            }
        }
        let Some((chain, timeline)) = best else {
            return BackupReach {
                id: backup.id.clone(),
                consistent: false,
                missing: None,
                timeline: backup.timeline,
                recoverable: None,
            };
        };
        let consistent = chain.last.is_some_and(|l| l.number >= needed_last);
        let missing = if consistent {
            None
        } else {
            let path = self
                .history(timeline)
                .expect("reachable timelines have histories");
            let from = chain.last.map_or(first, |l| l.number + 1);
            let timeline_of = |n| path.segment_timeline(n, self.size);
            Some(chain.gap.clone().unwrap_or_else(|| Gap {
                timeline: timeline_of(from),
                first_number: from,
                last_number: needed_last,
                first: SegmentId::new(timeline_of(from), from).name(self.size),
                last: SegmentId::new(timeline_of(needed_last), needed_last).name(self.size),
                segments: needed_last.saturating_sub(from) + 1,
                lost_from: backup.start_time,
                lost_to: backup.stop_time,
            }))
        };
        let recoverable = consistent.then(|| Recoverable {
            from: backup.stop_time,
            to: chain
                .reaches
                .unwrap_or(backup.stop_time)
                .max(backup.stop_time),
        });
        BackupReach {
            id: backup.id.clone(),
            consistent,
            missing,
            timeline,
            recoverable,
        }
    }

    /// The times the archive can recover to with these base backups: the union of each
    /// consistent backup's reach, merged into disjoint intervals, oldest first.
    pub fn window(&self, backups: &[BaseBackup]) -> Vec<Recoverable> {
        let mut spans: Vec<Recoverable> = backups
            .iter()
            .filter_map(|b| self.reach(b).recoverable)
            .collect();
        spans.sort_by_key(|r| (r.from, r.to));
        let mut merged: Vec<Recoverable> = Vec::new();
        for s in spans {
            match merged.last_mut() {
                Some(m) if s.from <= m.to => m.to = m.to.max(s.to),
                _ => merged.push(s),
            }
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap() + chrono::Duration::minutes(min)
    }

    fn lsn(seg: u64, off: u64) -> Lsn {
        Lsn(seg * SegmentSize::DEFAULT.bytes() + off)
    }

    /// Segments `numbers` of `timeline`, archived at minute = number.
    fn index_with(segs: &[(TimelineId, std::ops::RangeInclusive<u64>)]) -> ArchiveIndex {
        let mut idx = ArchiveIndex::new(SegmentSize::DEFAULT);
        for (tl, r) in segs {
            for n in r.clone() {
                idx.insert(
                    WalFile::Segment(SegmentId::new(*tl, n)),
                    FileInfo::at(t(n as i64)),
                );
            }
        }
        idx
    }

    fn backup(id: &str, tl: TimelineId, start: u64, stop: u64) -> BaseBackup {
        BaseBackup {
            id: id.into(),
            timeline: tl,
            start_lsn: lsn(start, 0x28),
            stop_lsn: lsn(stop, 0x100),
            start_time: t(start as i64),
            stop_time: t(stop as i64),
            next_xid: None,
        }
    }

    #[test]
    fn ranges_and_gaps_on_one_timeline() {
        let idx = index_with(&[(1, 1..=3), (1, 6..=7)]);
        let ranges = idx.ranges();
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].first, "000000010000000000000001");
        assert_eq!(ranges[0].last, "000000010000000000000003");
        assert_eq!(ranges[1].segments, 2);
        let gaps = idx.gaps();
        assert_eq!(gaps.len(), 1);
        assert_eq!(
            gaps[0].to_string(),
            "segments 000000010000000000000004 to 000000010000000000000005 (2) are missing \
             (WAL from 2026-11-25 00:03:00 UTC to 2026-11-25 00:06:00 UTC is lost)"
        );
    }

    #[test]
    fn a_missing_first_segment_of_a_new_timeline_is_a_gap_on_its_path() {
        // Timeline 2 forks inside segment 5; its copy of segment 5 is missing.
        let mut idx = index_with(&[(1, 1..=5), (2, 6..=8)]);
        let h = TimelineHistory::parse(2, "1\t0/5000100\tpromoted\n").unwrap();
        idx.insert_history(h, FileInfo::at(t(5)));
        let gaps = idx.gaps();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!(gaps[0].first, "000000020000000000000005");
        // Timeline 1's own path has no gap; the switch segment of timeline 1 is there.
        let chain = idx.chain(&idx.history(1).unwrap(), 1);
        assert_eq!(chain.last, Some(SegmentId::new(1, 5)));
        assert!(chain.gap.is_none());
    }

    #[test]
    fn a_backup_reaches_across_a_timeline_switch_to_the_end() {
        // Timeline 1 went on to segment 6 after timeline 2 forked from it in segment 5.
        let mut idx = index_with(&[(1, 1..=6), (2, 5..=9)]);
        let h = TimelineHistory::parse(2, "1\t0/5000100\tpromoted\n").unwrap();
        idx.insert_history(h, FileInfo::at(t(5)));
        let reach = idx.reach(&backup("b", 1, 2, 3));
        assert!(reach.consistent);
        assert_eq!(reach.timeline, 2);
        assert_eq!(
            reach.recoverable,
            Some(Recoverable {
                from: t(3),
                to: t(9)
            })
        );
        // A backup consistent after the fork cannot follow timeline 2.
        let late = idx.reach(&backup("late", 1, 5, 6));
        assert_eq!(late.timeline, 1);
        assert_eq!(late.recoverable.unwrap().to, t(6));
    }

    #[test]
    fn a_backup_with_missing_wal_is_not_consistent() {
        let idx = index_with(&[(1, 1..=2), (1, 4..=6)]);
        let reach = idx.reach(&backup("b", 1, 1, 4));
        assert!(!reach.consistent);
        assert_eq!(reach.missing.unwrap().first, "000000010000000000000003");
        assert!(reach.recoverable.is_none());
        let after = idx.reach(&backup("c", 1, 4, 5));
        assert_eq!(after.recoverable.unwrap().to, t(6));
        assert_eq!(
            idx.window(&[backup("b", 1, 1, 4), backup("c", 1, 4, 5)]),
            vec![Recoverable {
                from: t(5),
                to: t(6)
            }]
        );
    }

    #[test]
    fn a_partial_segment_ends_the_chain_with_the_newest_data() {
        let mut idx = index_with(&[(1, 1..=3)]);
        idx.insert(WalFile::Partial(SegmentId::new(1, 4)), FileInfo::at(t(10)));
        let chain = idx.chain(&idx.history(1).unwrap(), 1);
        assert!(chain.partial_end);
        assert_eq!(chain.reaches, Some(t(10)));
        assert!(idx.ranges()[0].partial_end);
    }

    #[test]
    fn latest_timeline_probes_upwards_like_postgres() {
        let mut idx = index_with(&[(1, 1..=2)]);
        for (tl, text) in [
            (2, "1\t0/1000000\tx\n"),
            (3, "1\t0/1000000\tx\n2\t0/2000000\ty\n"),
            (5, "1\t0/1000000\tx\n"),
        ] {
            idx.insert_history(
                TimelineHistory::parse(tl, text).unwrap(),
                FileInfo::at(t(0)),
            );
        }
        assert_eq!(idx.latest_timeline_from(1), 3);
        assert_eq!(idx.latest_timeline_from(4), 5);
    }
}
