//! Planning a point-in-time recovery before anything is written: which base backup, which
//! timeline, and whether the archived WAL reaches the target without a break.
//!
//! [`plan_restore`] is pure. It refuses, in one line, every target PostgreSQL would fail to
//! reach only after the data directory had been restored and recovery had run for a while:
//! a timeline that does not descend from the backup ("requested timeline is not a child of
//! this server's history"), a target before the backup was consistent, a target beyond the
//! newest archived WAL, a gap in the WAL on the way, a restore point that does not exist.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::wal::history::TimelineHistory;
use crate::wal::index::{ArchiveIndex, BaseBackup, Chain};
use crate::wal::layout::RestorePoint;
use crate::wal::lsn::Lsn;
use crate::wal::name::{SegmentId, TimelineId};

/// Where recovery should stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum RecoveryTarget {
    /// Replay all archived WAL.
    Latest,
    /// Stop before the first transaction that commits after this time.
    Time(DateTime<Utc>),
    /// Stop at this WAL position.
    Lsn(Lsn),
    /// Stop after this transaction commits.
    Xid(u64),
    /// Stop at this named restore point.
    Name(String),
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Latest => f.write_str("the end of the archived WAL"),
            RecoveryTarget::Time(t) => write!(f, "time {}", t.format("%Y-%m-%d %H:%M:%S%.6f UTC")),
            RecoveryTarget::Lsn(l) => write!(f, "position {l}"),
            RecoveryTarget::Xid(x) => write!(f, "transaction {x}"),
            RecoveryTarget::Name(n) => write!(f, "restore point '{n}'"),
        }
    }
}

/// Which timeline recovery follows (`recovery_target_timeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TargetTimeline {
    /// The newest timeline found by probing history files upwards from the backup's
    /// (PostgreSQL's default).
    #[default]
    Latest,
    /// The backup's own timeline.
    Current,
    /// This timeline.
    Id(TimelineId),
}

impl FromStr for TargetTimeline {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "latest" => Ok(TargetTimeline::Latest),
            "current" => Ok(TargetTimeline::Current),
            n => n
                .parse::<TimelineId>()
                .ok()
                .filter(|n| *n > 0)
                .map(TargetTimeline::Id)
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "'{s}' is not a timeline (expected latest, current or a number from 1)"
                    ))
                }),
        }
    }
}

impl fmt::Display for TargetTimeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetTimeline::Latest => f.write_str("latest"),
            TargetTimeline::Current => f.write_str("current"),
            TargetTimeline::Id(n) => write!(f, "{n}"),
        }
    }
}

/// A checked recovery plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestorePlan {
    /// The base backup to restore.
    pub backup: String,
    /// The timeline recovery follows.
    pub timeline: TimelineId,
    /// Its path, oldest first.
    pub path: Vec<TimelineId>,
    /// The first segment recovery reads.
    pub first_segment: String,
    /// The last segment it needs to reach the target (for `latest` and transaction targets:
    /// the last archived one).
    pub last_segment: String,
    /// The restore point, for a `Name` target.
    pub restore_point: Option<RestorePoint>,
    /// The time the recovered data reaches, as far as the archive tells: the target time,
    /// the restore point's time, or the last archived commit.
    pub reaches: Option<DateTime<Utc>>,
    /// Whether the newest data comes from a partial segment.
    pub uses_partial: bool,
}

/// Choose a base backup and check that recovery can reach `target` along `timeline`.
///
/// `backups` are the candidates (one series: one cluster); `chosen` restricts them to one id.
/// Without `chosen`, the newest backup that was consistent before the target and reaches it
/// wins. Errors ([`ErrorKind::NotFound`] for missing backups or WAL, [`ErrorKind::InvalidInput`]
/// for targets that cannot be reached) explain in one line, for the newest candidate, why it
/// does not work.
pub fn plan_restore(
    index: &ArchiveIndex,
    backups: &[BaseBackup],
    chosen: Option<&str>,
    target: &RecoveryTarget,
    timeline: TargetTimeline,
) -> Result<RestorePlan> {
    let mut candidates: Vec<&BaseBackup> = match chosen {
        Some(id) => {
            let b = backups.iter().find(|b| b.id == id).ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("no physical base backup '{id}'"),
                )
            })?;
            vec![b]
        }
        None => backups.iter().collect(),
    };
    if candidates.is_empty() {
        return Err(Error::new(
            ErrorKind::NotFound,
            "no physical base backup of this cluster: take one with `drctl backup --physical`",
        ));
    }
    candidates
        .sort_by(|a, b| (b.stop_time, b.stop_lsn, &b.id).cmp(&(a.stop_time, a.stop_lsn, &a.id)));

    let restore_point = match target {
        RecoveryTarget::Name(name) => Some(find_restore_point(index, name)?),
        _ => None,
    };

    let mut first_error: Option<Error> = None;
    for b in candidates {
        match plan_for(index, b, target, timeline, restore_point.as_ref()) {
            Ok(plan) => return Ok(plan),
            Err(e) => {
                // Keep the newest candidate's reason, unless it is only "too new" and an
                // older one fails for a more telling reason.
                let too_new = e.message().contains("was not consistent before");
                match &first_error {
                    None => first_error = Some(e),
                    Some(prev)
                        if prev.message().contains("was not consistent before") && !too_new =>
                    {
                        first_error = Some(e)
                    }
                    Some(_) => {}
                }
                if chosen.is_some() {
                    break;
                }
            }
        }
    }
    Err(first_error.expect("at least one candidate was tried"))
}

fn find_restore_point(index: &ArchiveIndex, name: &str) -> Result<RestorePoint> {
    let mut found: Option<RestorePoint> = None;
    for (_, info) in index.files() {
        for rp in info.contents.iter().flat_map(|c| c.restore_points.iter()) {
            if rp.name == name && found.as_ref().is_none_or(|f| rp.lsn > f.lsn) {
                found = Some(rp.clone());
            }
        }
    }
    found.ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "no restore point named '{name}' in the archived WAL (create one with \
                 pg_create_restore_point('{name}'); it is found once its segment is archived, \
                 e.g. after SELECT pg_switch_wal())"
            ),
        )
    })
}

fn plan_for(
    index: &ArchiveIndex,
    b: &BaseBackup,
    target: &RecoveryTarget,
    timeline: TargetTimeline,
    restore_point: Option<&RestorePoint>,
) -> Result<RestorePlan> {
    let size = index.segment_size();
    let id = &b.id;
    let tl = match timeline {
        TargetTimeline::Latest => index.latest_timeline_from(b.timeline),
        TargetTimeline::Current => b.timeline,
        TargetTimeline::Id(n) => n,
    };
    let path: TimelineHistory = index.history(tl).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            format!("the history file of timeline {tl} ({tl:08X}.history) is not in the archive"),
        )
    })?;
    if let Err(why) = path.check_reachable(b.timeline, b.stop_lsn) {
        return Err(Error::invalid(format!(
            "backup {id} cannot recover to timeline {tl}: {why}"
        )));
    }

    // The backup must be consistent before the target.
    match target {
        RecoveryTarget::Time(t) if b.stop_time > *t => {
            return Err(Error::invalid(format!(
                "backup {id} was not consistent before {target} (it finished at {})",
                b.stop_time.format("%Y-%m-%d %H:%M:%S UTC")
            )))
        }
        RecoveryTarget::Lsn(l) if b.stop_lsn > *l => {
            return Err(Error::invalid(format!(
                "backup {id} was not consistent before {target} (it finished at {})",
                b.stop_lsn
            )))
        }
        RecoveryTarget::Xid(x) => {
            if let Some(next) = b.next_xid {
                let (next, x) = if *x <= u64::from(u32::MAX) {
                    (next & 0xFFFF_FFFF, *x)
                } else {
                    (next, *x)
                };
                if next > x {
                    return Err(Error::invalid(format!(
                        "backup {id} was not consistent before {target} (it started at \
                         transaction {next})"
                    )));
                }
            }
        }
        RecoveryTarget::Name(_) => {
            let rp = restore_point.expect("a name target has its restore point");
            if b.stop_lsn > rp.lsn {
                return Err(Error::invalid(format!(
                    "backup {id} was not consistent before {target} (at {}, created {})",
                    rp.lsn,
                    rp.time.format("%Y-%m-%d %H:%M:%S UTC")
                )));
            }
            let on_path = path.segment_timeline(rp.lsn.segment(size), size);
            let rp_segment_there = index
                .segment(SegmentId::new(on_path, rp.lsn.segment(size)))
                .or_else(|| index.partial(SegmentId::new(on_path, rp.lsn.segment(size))))
                .and_then(|i| i.contents.as_ref())
                .is_some_and(|c| c.restore_points.iter().any(|r| r == rp));
            if !rp_segment_there {
                return Err(Error::invalid(format!(
                    "{target} (at {}) is not on the path of timeline {tl}",
                    rp.lsn
                )));
            }
        }
        _ => {}
    }

    let first = b.start_lsn.segment(size);
    let chain = index.chain(&path, first);
    let stop_segment = b.stop_lsn.last_segment_before(size);
    let reached = chain.last.map(|l| l.number);
    if reached.is_none_or(|r| r < stop_segment) {
        return Err(missing_wal(
            id,
            &chain,
            "its own WAL (start to stop) is incomplete",
        ));
    }
    let last = chain.last.expect("checked above");

    // The segment the target lies in, and whether the chain reaches it.
    let (needed, reaches) = match target {
        RecoveryTarget::Latest | RecoveryTarget::Xid(_) => {
            if let (RecoveryTarget::Latest, Some(gap)) = (target, &chain.gap) {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "the archived WAL of timeline {tl} breaks after backup {id}: {gap}; \
                         restore to a target before the gap, or find the missing segments"
                    ),
                ));
            }
            (last.number, chain.reaches)
        }
        RecoveryTarget::Lsn(l) => (l.segment(size), None),
        RecoveryTarget::Name(_) => {
            let rp = restore_point.expect("resolved");
            (rp.lsn.segment(size), Some(rp.time))
        }
        RecoveryTarget::Time(t) => {
            // Recovery stops at the first commit after the target: the segment holding it
            // must be archived.
            let mut n = first;
            let found = loop {
                if n > last.number {
                    break None;
                }
                let seg = SegmentId::new(path.segment_timeline(n, size), n);
                let info = index.segment(seg).or_else(|| index.partial(seg));
                if info.is_some_and(|i| i.time() >= *t) {
                    break Some(n);
                }
                n += 1;
            };
            match found {
                Some(n) => (n, Some(*t)),
                None => {
                    let newest = chain.reaches.map_or("?".into(), |r| {
                        r.format("%Y-%m-%d %H:%M:%S UTC").to_string()
                    });
                    let why = match &chain.gap {
                        Some(gap) => {
                            format!("the archived WAL of timeline {tl} breaks first: {gap}")
                        }
                        None => format!(
                            "the newest archived WAL on timeline {tl} reaches {newest}; recovery \
                             would end before the target (wait for the next segment to be \
                             archived, or SELECT pg_switch_wal() on the server)"
                        ),
                    };
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("{target} is beyond what backup {id} can reach: {why}"),
                    ));
                }
            }
        }
    };
    if needed > last.number {
        let why = match &chain.gap {
            Some(gap) => format!("the archived WAL of timeline {tl} breaks first: {gap}"),
            None => format!(
                "the newest archived segment on timeline {tl} is {}",
                last.name(size)
            ),
        };
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("{target} is beyond what backup {id} can reach: {why}"),
        ));
    }
    Ok(RestorePlan {
        backup: id.clone(),
        timeline: tl,
        path: path.path(),
        first_segment: SegmentId::new(path.segment_timeline(first, size), first).name(size),
        last_segment: SegmentId::new(path.segment_timeline(needed, size), needed).name(size),
        restore_point: restore_point.cloned(),
        reaches,
        uses_partial: chain.partial_end && needed == last.number,
    })
}

fn missing_wal(id: &str, chain: &Chain, what: &str) -> Error {
    let detail = match (&chain.gap, chain.last) {
        (Some(gap), _) => gap.to_string(),
        (None, Some(last)) => format!(
            "the archive ends at segment #{:X} of timeline {}",
            last.number, last.timeline
        ),
        (None, None) => format!(
            "its first segment (#{:X}, timeline {}) is not archived",
            chain.first, chain.timeline
        ),
    };
    Error::new(
        ErrorKind::NotFound,
        format!("backup {id} cannot be restored: {what}: {detail}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::index::FileInfo;
    use crate::wal::layout::WalContents;
    use crate::wal::lsn::SegmentSize;
    use crate::wal::name::WalFile;
    use chrono::TimeZone;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap() + chrono::Duration::minutes(min)
    }

    fn lsn(seg: u64, off: u64) -> Lsn {
        Lsn(seg * SegmentSize::DEFAULT.bytes() + off)
    }

    /// Timeline 1 segments 1..=9 (segment n's last commit at minute 10n); timeline 2 forked
    /// at 0/5000100 with segments 5..=7 (minutes 10n + 5).
    fn archive() -> ArchiveIndex {
        let mut idx = ArchiveIndex::new(SegmentSize::DEFAULT);
        for n in 1..=9u64 {
            let mut info = FileInfo::at(t(10 * n as i64 + 1));
            info.contents = Some(WalContents {
                last_commit: Some(t(10 * n as i64)),
                restore_points: if n == 3 {
                    vec![RestorePoint {
                        name: "before-migration".into(),
                        lsn: lsn(3, 0x500),
                        time: t(28),
                    }]
                } else {
                    vec![]
                },
                ..Default::default()
            });
            idx.insert(WalFile::Segment(SegmentId::new(1, n)), info);
        }
        for n in 5..=7u64 {
            idx.insert(
                WalFile::Segment(SegmentId::new(2, n)),
                FileInfo::at(t(10 * n as i64 + 5)),
            );
        }
        idx.insert_history(
            TimelineHistory::parse(2, "1\t0/5000100\tbefore 2026-11-25 00:45:00+00\n").unwrap(),
            FileInfo::at(t(50)),
        );
        idx
    }

    fn backup(id: &str, start: u64, stop: u64) -> BaseBackup {
        BaseBackup {
            id: id.into(),
            timeline: 1,
            start_lsn: lsn(start, 0x28),
            stop_lsn: lsn(stop, 0x100),
            start_time: t(10 * start as i64 - 5),
            stop_time: t(10 * stop as i64 - 2),
            next_xid: Some(1000 * start),
        }
    }

    fn backups() -> Vec<BaseBackup> {
        vec![backup("b1", 1, 1), backup("b2", 2, 2), backup("b6", 6, 6)]
    }

    #[test]
    fn picks_the_newest_backup_consistent_before_the_target_time() {
        let idx = archive();
        let plan = plan_restore(
            &idx,
            &backups(),
            None,
            &RecoveryTarget::Time(t(35)),
            TargetTimeline::Current,
        )
        .unwrap();
        assert_eq!(plan.backup, "b2");
        assert_eq!(plan.first_segment, "000000010000000000000002");
        assert_eq!(plan.last_segment, "000000010000000000000004");
        let plan = plan_restore(
            &idx,
            &backups(),
            None,
            &RecoveryTarget::Time(t(85)),
            TargetTimeline::Current,
        )
        .unwrap();
        assert_eq!(plan.backup, "b6");
    }

    #[test]
    fn latest_timeline_follows_the_fork_and_refuses_a_backup_after_it() {
        let idx = archive();
        // b6 was consistent on timeline 1 after timeline 2 forked: latest (2) is not a child.
        let e = plan_restore(
            &idx,
            &backups(),
            Some("b6"),
            &RecoveryTarget::Latest,
            TargetTimeline::Latest,
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "backup b6 cannot recover to timeline 2: timeline 2 forked off timeline 1 at 0/5000100, \
             before the backup was consistent at 0/6000100"
        );
        // Without an id, the newest backup that can follow timeline 2 is chosen.
        let plan = plan_restore(
            &idx,
            &backups(),
            None,
            &RecoveryTarget::Latest,
            TargetTimeline::Latest,
        )
        .unwrap();
        assert_eq!(plan.backup, "b2");
        assert_eq!(plan.path, [1, 2]);
        assert_eq!(plan.last_segment, "000000020000000000000007");
        // On timeline 1 itself b6 is fine.
        let plan = plan_restore(
            &idx,
            &backups(),
            Some("b6"),
            &RecoveryTarget::Latest,
            TargetTimeline::Id(1),
        )
        .unwrap();
        assert_eq!(plan.last_segment, "000000010000000000000009");
    }

    #[test]
    fn a_target_beyond_the_archive_is_refused_in_one_line() {
        let idx = archive();
        let e = plan_restore(
            &idx,
            &backups(),
            None,
            &RecoveryTarget::Time(t(500)),
            TargetTimeline::Current,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(
            e.message().starts_with(
                "time 2026-11-25 08:20:00.000000 UTC is beyond what backup b6 can reach"
            ),
            "{e}"
        );
        assert!(!e.message().contains('\n'));
        let e = plan_restore(
            &idx,
            &backups(),
            None,
            &RecoveryTarget::Lsn(lsn(20, 0)),
            TargetTimeline::Current,
        )
        .unwrap_err();
        assert!(
            e.message()
                .contains("the newest archived segment on timeline 1 is 000000010000000000000009"),
            "{e}"
        );
    }

    #[test]
    fn a_target_before_every_backup_is_refused() {
        let idx = archive();
        let e = plan_restore(
            &idx,
            &backups(),
            None,
            &RecoveryTarget::Time(t(1)),
            TargetTimeline::Current,
        )
        .unwrap_err();
        assert!(
            e.message().contains("was not consistent before time"),
            "{e}"
        );
    }

    #[test]
    fn restore_points_and_xids_choose_a_backup() {
        let idx = archive();
        let plan = plan_restore(
            &idx,
            &backups(),
            None,
            &RecoveryTarget::Name("before-migration".into()),
            TargetTimeline::Current,
        )
        .unwrap();
        assert_eq!(plan.backup, "b2");
        assert_eq!(plan.last_segment, "000000010000000000000003");
        assert_eq!(plan.reaches, Some(t(28)));
        let e = plan_restore(
            &idx,
            &backups(),
            None,
            &RecoveryTarget::Name("nope".into()),
            TargetTimeline::Current,
        )
        .unwrap_err();
        assert!(
            e.message().starts_with("no restore point named 'nope'"),
            "{e}"
        );
        let plan = plan_restore(
            &idx,
            &backups(),
            None,
            &RecoveryTarget::Xid(2500),
            TargetTimeline::Current,
        )
        .unwrap();
        assert_eq!(plan.backup, "b2");
    }

    #[test]
    fn a_gap_stops_the_plan_with_its_name_and_time_span() {
        let mut idx = ArchiveIndex::new(SegmentSize::DEFAULT);
        for n in [1u64, 2, 3, 5, 6] {
            idx.insert(
                WalFile::Segment(SegmentId::new(1, n)),
                FileInfo::at(t(10 * n as i64)),
            );
        }
        let b = vec![backup("b1", 1, 1)];
        let e = plan_restore(
            &idx,
            &b,
            None,
            &RecoveryTarget::Latest,
            TargetTimeline::Latest,
        )
        .unwrap_err();
        assert_eq!(
            e.message(),
            "the archived WAL of timeline 1 breaks after backup b1: segment 000000010000000000000004 \
             is missing (WAL from 2026-11-25 00:30:00 UTC to 2026-11-25 00:50:00 UTC is lost); \
             restore to a target before the gap, or find the missing segments"
        );
        // A target before the gap is fine.
        assert!(plan_restore(
            &idx,
            &b,
            None,
            &RecoveryTarget::Time(t(25)),
            TargetTimeline::Latest
        )
        .is_ok());
    }
}
