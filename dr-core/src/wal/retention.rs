//! WAL-aware retention: which archived files to keep, as a pure function of the base
//! backups, the backup retention's verdicts, the archive and a PITR window.
//!
//! Rules, each giving its reason (so `drctl prune --dry-run` can show why a file stays):
//!
//! 1. **Every kept backup stays restorable**: the segments from its start to its stop, on its
//!    timeline, are kept (`backup <id> (start → stop)`).
//! 2. **The PITR window**: with `keep_pitr` set, the window is `[now − keep_pitr, now]`; without
//!    it, every kept backup's time onwards (point-in-time recovery from every kept backup,
//!    WAL-G's `retain` semantics). To reach every point of the window, the *anchors* — on
//!    each timeline path, the newest backup consistent at or before the window's start, or the
//!    oldest backup when none is that old — and
//!    every kept backup after
//!    it keep their **chain**: the segments from their start to the start of the next kept
//!    backup on every timeline path that descends from them, or to the end of the archive for
//!    the newest (`PITR from <id>`). If backup retention did not keep an anchor, it is
//!    protected (`anchor of the PITR window 7d`): the window would otherwise begin only at the
//!    next backup.
//! 3. **Recent WAL is never deleted**: every file whose data is newer than the window's start
//!    (or, without `keep_pitr`, than the oldest kept backup) is kept, whatever paths say
//!    (`within the PITR window`). This protects segments still being archived out of order,
//!    WAL of a timeline no backup leads to yet, and a server whose newest backup is older
//!    than the window.
//! 4. **Timeline histories** are always kept: they are tiny and recovery needs them to find
//!    its way.
//! 5. With no (kept) base backup at all, everything is kept: there is nothing to anchor a
//!    window (archiving usually starts before the first base backup).
//!
//! Everything else is deleted: WAL between old backups outside the window, which is exactly
//! what a PITR window shorter than backup retention is for. Gaps do not end a chain: a
//! segment after a gap is kept as long as its chain is (a segment still in flight must not
//! make its successors deletable).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::retention::RetentionDuration;
use crate::wal::index::{ArchiveIndex, BaseBackup};
use crate::wal::name::{SegmentId, TimelineId, WalFile};

/// A base backup and whether backup retention keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetainedBackup {
    /// The backup.
    pub backup: BaseBackup,
    /// Whether backup retention (or a pin) keeps it.
    pub kept: bool,
}

/// The verdict on one archived file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalDecision {
    /// The file.
    #[serde(skip)]
    pub file: WalFile,
    /// Its name.
    pub name: String,
    /// Keep (`true`) or delete.
    pub keep: bool,
    /// Why it is kept; empty for a file to delete.
    pub reasons: Vec<String>,
}

/// What WAL-aware retention decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalPlan {
    /// The start of the PITR window (`None`: no window, nothing anchored).
    pub window_start: Option<DateTime<Utc>>,
    /// The anchors of the window: per timeline path `(timeline, backup id)`, the newest backup
    /// consistent at or before the window's start.
    pub anchors: Vec<(TimelineId, String)>,
    /// Backups that backup retention would delete but the window needs: `(id, reason)`.
    pub protected: Vec<(String, String)>,
    /// One decision per archived file, in file order.
    pub files: Vec<WalDecision>,
}

impl WalPlan {
    /// The files to delete.
    pub fn deletions(&self) -> impl Iterator<Item = &WalDecision> {
        self.files.iter().filter(|d| !d.keep)
    }
}

/// Decide which archived files to keep. See the [module docs](self) for the rules.
pub fn evaluate(
    index: &ArchiveIndex,
    backups: &[RetainedBackup],
    keep_pitr: Option<RetentionDuration>,
    now: DateTime<Utc>,
) -> WalPlan {
    let size = index.segment_size();
    let mut reasons: BTreeMap<WalFile, Vec<String>> = BTreeMap::new();
    let mut keep = |f: WalFile, why: &str| {
        let r = reasons.entry(f).or_default();
        if !r.iter().any(|x| x == why) {
            r.push(why.to_string());
        }
    };
    let pitr = keep_pitr.filter(|d| !d.is_zero());

    // The backups that stay, after protecting the window's anchor.
    let mut kept: Vec<&BaseBackup> = backups
        .iter()
        .filter(|b| b.kept)
        .map(|b| &b.backup)
        .collect();
    let window_start = match pitr {
        Some(d) => Some(d.before(now, Tz::UTC)),
        None => kept.iter().map(|b| b.start_time).min(),
    };
    // The anchors: per timeline path, the newest backup consistent by the window's start.
    let mut protected = Vec::new();
    let mut anchors: Vec<(TimelineId, &BaseBackup)> = Vec::new();
    if let (Some(d), Some(w)) = (pitr, window_start) {
        for t in index.timelines() {
            let Some(path) = index.history(t) else {
                continue;
            };
            let on_path: Vec<&BaseBackup> = backups
                .iter()
                .map(|b| &b.backup)
                .filter(|b| path.check_reachable(b.timeline, b.stop_lsn).is_ok())
                .collect();
            // When no backup is that old, the oldest one: the points between it and the next
            // backup are inside the window too.
            let anchor = on_path
                .iter()
                .filter(|b| b.stop_time <= w)
                .max_by(|a, b| (a.stop_time, &a.id).cmp(&(b.stop_time, &b.id)))
                .or_else(|| {
                    on_path
                        .iter()
                        .min_by(|a, b| (a.stop_time, &a.id).cmp(&(b.stop_time, &b.id)))
                })
                .copied();
            let Some(a) = anchor else { continue };
            anchors.push((t, a));
            if !kept.iter().any(|k| k.id == a.id) {
                protected.push((a.id.clone(), format!("anchor of the PITR window {d}")));
                kept.push(a);
            }
        }
    }

    if kept.is_empty() {
        let why = if backups.is_empty() {
            "no base backup yet"
        } else {
            "no kept base backup"
        };
        for (f, _) in index.files() {
            keep(f, why);
        }
    }

    // 1. Every kept backup's own WAL.
    for b in &kept {
        let why = format!("backup {} (start → stop)", b.id);
        let path = index
            .history(b.timeline)
            .unwrap_or_else(|| crate::wal::history::TimelineHistory::root(b.timeline));
        for n in b.start_lsn.segment(size)..=b.stop_lsn.last_segment_before(size) {
            let id = SegmentId::new(path.segment_timeline(n, size), n);
            keep(WalFile::Segment(id), &why);
            keep(WalFile::Partial(id), &why);
        }
    }

    // 2. Chains: along each path, of its anchor and every kept backup consistent inside the
    // window (of every kept backup, without a window).
    let all_files = index.files();
    for b in &kept {
        let why = format!("PITR from {}", b.id);
        for path in index.reachable_timelines(b.timeline, b.stop_lsn) {
            let chained = match (pitr, window_start) {
                (Some(_), Some(w)) => {
                    b.stop_time > w
                        || anchors
                            .iter()
                            .any(|(t, a)| *t == path.timeline && a.id == b.id)
                }
                _ => true,
            };
            if !chained {
                continue;
            }
            // The next kept backup on this path, by start position.
            let next = kept
                .iter()
                .filter(|n| n.id != b.id && n.start_lsn > b.start_lsn)
                .filter(|n| path.check_reachable(n.timeline, n.stop_lsn).is_ok())
                .map(|n| n.start_lsn.segment(size))
                .min();
            let end = next.or_else(|| {
                all_files
                    .iter()
                    .filter_map(|(f, _)| f.segment())
                    .filter(|s| {
                        path.contains(s.timeline)
                            && path.segment_timeline(s.number, size) == s.timeline
                    })
                    .map(|s| s.number)
                    .max()
            });
            let Some(end) = end else { continue };
            for n in b.start_lsn.segment(size)..=end {
                let id = SegmentId::new(path.segment_timeline(n, size), n);
                keep(WalFile::Segment(id), &why);
                keep(WalFile::Partial(id), &why);
            }
        }
    }

    // 3, 4. Recent files and histories.
    for (f, info) in &all_files {
        if matches!(f, WalFile::History(_)) {
            keep(*f, "timeline history");
        } else if window_start.is_some_and(|w| info.time() >= w) {
            keep(*f, "within the PITR window");
        }
    }

    // A backup history file goes with its segment.
    let mut files = Vec::with_capacity(all_files.len());
    for (f, _) in &all_files {
        let mut why = reasons.get(f).cloned().unwrap_or_default();
        if let WalFile::Backup { segment, .. } = f {
            if why.is_empty() && reasons.contains_key(&WalFile::Segment(*segment)) {
                why.push("its segment is kept".into());
            }
        }
        files.push(WalDecision {
            file: *f,
            name: f.name(size),
            keep: !why.is_empty(),
            reasons: why,
        });
    }
    WalPlan {
        window_start: if backups.is_empty() {
            None
        } else {
            window_start
        },
        anchors: anchors.iter().map(|(t, a)| (*t, a.id.clone())).collect(),
        protected,
        files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::index::FileInfo;
    use crate::wal::lsn::{Lsn, SegmentSize};
    use chrono::TimeZone;

    fn t(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(hours)
    }

    fn lsn(seg: u64) -> Lsn {
        Lsn(seg * SegmentSize::DEFAULT.bytes() + 0x28)
    }

    /// One segment per hour on timeline 1 for `hours` hours; backups every 24 h taking one
    /// segment.
    fn setup(hours: u64) -> (ArchiveIndex, Vec<RetainedBackup>) {
        let mut idx = ArchiveIndex::new(SegmentSize::DEFAULT);
        for n in 0..hours {
            idx.insert(
                WalFile::Segment(SegmentId::new(1, n)),
                FileInfo::at(t(n as i64)),
            );
        }
        let backups = (0..hours)
            .step_by(24)
            .map(|n| RetainedBackup {
                backup: BaseBackup {
                    id: format!("b{n}"),
                    timeline: 1,
                    start_lsn: lsn(n),
                    stop_lsn: lsn(n + 1),
                    start_time: t(n as i64),
                    stop_time: t(n as i64 + 1),
                    next_xid: None,
                },
                kept: true,
            })
            .collect();
        (idx, backups)
    }

    fn kept_numbers(plan: &WalPlan) -> Vec<u64> {
        plan.files
            .iter()
            .filter(|d| d.keep)
            .filter_map(|d| d.file.segment().map(|s| s.number))
            .collect()
    }

    #[test]
    fn without_a_window_every_kept_backup_keeps_its_chain() {
        let (idx, mut backups) = setup(24 * 5);
        backups[0].kept = false; // b0 deleted by backup retention
        let plan = evaluate(&idx, &backups, None, t(24 * 5));
        let kept = kept_numbers(&plan);
        assert_eq!(
            kept.first(),
            Some(&24),
            "WAL before the oldest kept backup goes"
        );
        assert_eq!(kept.len(), 24 * 4);
    }

    #[test]
    fn a_short_window_deletes_wal_between_old_backups_but_not_their_own() {
        let (idx, backups) = setup(24 * 10);
        // A window of 2 days before hour 240 starts at hour 192; b192 is consistent only at
        // 193, so the anchor is b168.
        let plan = evaluate(&idx, &backups, Some(RetentionDuration::days(2)), t(240));
        assert_eq!(plan.anchors, [(1, "b168".to_string())]);
        let kept = kept_numbers(&plan);
        for b in 0..7u64 {
            let n = b * 24;
            assert!(
                kept.contains(&n) && kept.contains(&(n + 1)),
                "backup b{n}'s own WAL is kept"
            );
            assert!(!kept.contains(&(n + 2)), "WAL after b{n}'s stop goes");
        }
        assert!(
            (168..240).all(|n| kept.contains(&n)),
            "the anchor's chain to the end is kept"
        );
        let reasons = &plan
            .files
            .iter()
            .find(|d| d.file.segment().map(|s| s.number) == Some(168))
            .unwrap()
            .reasons;
        assert_eq!(
            reasons,
            &vec![
                "backup b168 (start → stop)".to_string(),
                "PITR from b168".into()
            ]
        );
    }

    #[test]
    fn the_anchor_is_protected_when_backup_retention_drops_it() {
        let (idx, mut backups) = setup(24 * 10);
        for b in backups.iter_mut() {
            b.kept = b.backup.id == "b216"; // keep-last 1
        }
        let plan = evaluate(&idx, &backups, Some(RetentionDuration::days(2)), t(240));
        assert_eq!(
            plan.protected,
            vec![(
                "b168".to_string(),
                "anchor of the PITR window 2d".to_string()
            )]
        );
        let kept = kept_numbers(&plan);
        assert_eq!(kept.first(), Some(&168));
    }

    #[test]
    fn a_window_longer_than_the_history_keeps_the_oldest_backup() {
        let (idx, mut backups) = setup(24 * 3);
        for b in backups.iter_mut() {
            b.kept = b.backup.id == "b48"; // keep-last 1
        }
        // A 7-day window reaches before every backup: the oldest anchors it, or the points
        // between b0 and b48 would be lost although they are inside the window.
        let plan = evaluate(&idx, &backups, Some(RetentionDuration::days(7)), t(72));
        assert_eq!(plan.anchors, [(1, "b0".to_string())]);
        assert_eq!(
            plan.protected,
            vec![("b0".to_string(), "anchor of the PITR window 7d".to_string())]
        );
        assert!(plan.files.iter().all(|d| d.keep));
    }

    #[test]
    fn no_backups_keep_everything_and_histories_always_stay() {
        let (mut idx, _) = setup(10);
        idx.insert_history(
            crate::wal::history::TimelineHistory::parse(2, "1\t0/1000000\tx\n").unwrap(),
            FileInfo::at(t(0)),
        );
        let plan = evaluate(&idx, &[], Some(RetentionDuration::days(1)), t(1000));
        assert!(plan.files.iter().all(|d| d.keep));
        let (idx2, backups) = setup(24 * 10);
        let mut idx2 = idx2;
        idx2.insert_history(
            crate::wal::history::TimelineHistory::parse(2, "1\t0/1000000\tx\n").unwrap(),
            FileInfo::at(t(0)),
        );
        let plan = evaluate(&idx2, &backups, Some(RetentionDuration::days(1)), t(240));
        let h = plan
            .files
            .iter()
            .find(|d| d.file == WalFile::History(2))
            .unwrap();
        assert!(h.keep);
    }
}
