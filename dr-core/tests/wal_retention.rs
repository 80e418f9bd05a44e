//! WAL-aware retention over random histories: base backups on several timelines (forks from
//! earlier points, old timelines that go on), gaps, partial segments, backups that backup
//! retention keeps, drops or pins, and PITR windows. Whatever the history, pruning must
//! never make a kept backup unrestorable, never shorten a chain a kept backup recovers
//! along inside the window, never lose the window's start, and delete only old WAL.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use dr_core::retention::RetentionDuration;
use dr_core::wal::retention::{evaluate, RetainedBackup, WalPlan};
use dr_core::wal::{
    ArchiveIndex, BaseBackup, FileInfo, HistoryEntry, Lsn, SegmentId, SegmentSize, TimelineHistory,
    WalFile,
};
use proptest::prelude::*;

const SIZE: SegmentSize = SegmentSize::DEFAULT;

fn t(hours: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::hours(hours)
}

#[derive(Debug, Clone)]
enum Step {
    /// Write 1–4 segments on a live timeline.
    Wal(u8, u8),
    /// A base backup on a live timeline spanning 1–3 segments.
    Backup(u8, u8),
    /// A new timeline forked from any timeline at a point it wrote (a promotion or a PITR),
    /// the parent going on or not.
    Fork(u8, u16, u32, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u8..=4, any::<u8>()).prop_map(|(n, b)| Step::Wal(n, b)),
        2 => (any::<u8>(), 0u8..=2).prop_map(|(b, n)| Step::Backup(b, n)),
        1 => (any::<u8>(), any::<u16>(), any::<u32>(), any::<bool>()).prop_map(|(b, s, o, c)| Step::Fork(b, s, o, c)),
    ]
}

struct Branch {
    history: TimelineHistory,
    next: u64,
    live: bool,
}

/// A simulated cluster history: what was written, before any file went missing.
struct World {
    segments: Vec<(SegmentId, DateTime<Utc>)>,
    histories: Vec<(TimelineHistory, DateTime<Utc>)>,
    partials: Vec<(SegmentId, DateTime<Utc>)>,
    backups: Vec<BaseBackup>,
    end: i64,
}

fn simulate(steps: &[Step], partial_ends: bool) -> World {
    let mut branches = vec![Branch {
        history: TimelineHistory::root(1),
        next: 1,
        live: true,
    }];
    let mut w = World {
        segments: Vec::new(),
        histories: Vec::new(),
        partials: Vec::new(),
        backups: Vec::new(),
        end: 0,
    };
    let mut clock: i64 = 0;
    let write = |b: &mut Branch, clock: &mut i64, segs: &mut Vec<(SegmentId, DateTime<Utc>)>| {
        *clock += 1;
        segs.push((SegmentId::new(b.history.timeline, b.next), t(*clock)));
        b.next += 1;
    };
    for (i, s) in steps.iter().enumerate() {
        let live: Vec<usize> = (0..branches.len()).filter(|&i| branches[i].live).collect();
        match *s {
            Step::Wal(n, pick) => {
                let b = live[pick as usize % live.len()];
                for _ in 0..n {
                    write(&mut branches[b], &mut clock, &mut w.segments);
                }
            }
            Step::Backup(pick, len) => {
                let b = live[pick as usize % live.len()];
                let br = &mut branches[b];
                let start_lsn = Lsn(br.next * SIZE.bytes() + 0x28);
                let start_time = t(clock) + Duration::minutes(10);
                for _ in 0..=len {
                    write(br, &mut clock, &mut w.segments);
                }
                w.backups.push(BaseBackup {
                    id: format!("b{i:03}"),
                    timeline: br.history.timeline,
                    start_lsn,
                    stop_lsn: Lsn((br.next - 1) * SIZE.bytes() + 0x100),
                    start_time,
                    stop_time: t(clock) - Duration::minutes(30),
                    next_xid: None,
                });
            }
            Step::Fork(pick, seg, off, parent_goes_on) => {
                let p = pick as usize % branches.len();
                let begin = branches[p]
                    .history
                    .spans()
                    .last()
                    .unwrap()
                    .begin
                    .segment(SIZE)
                    .max(1);
                if branches[p].next <= begin {
                    continue; // nothing written on it yet
                }
                let s = begin + u64::from(seg) % (branches[p].next - begin);
                let off = u64::from(off) % SIZE.bytes();
                let switch = Lsn(s * SIZE.bytes() + off);
                if switch < branches[p].history.spans().last().unwrap().begin {
                    continue;
                }
                let tl = branches.len() as u32 + 1;
                let mut ancestors = branches[p].history.ancestors.clone();
                ancestors.push(HistoryEntry {
                    timeline: branches[p].history.timeline,
                    switch_point: switch,
                    reason: "promoted".into(),
                });
                let history = TimelineHistory {
                    timeline: tl,
                    ancestors,
                };
                clock += 1;
                w.histories.push((history.clone(), t(clock)));
                branches[p].live &= parent_goes_on;
                branches.push(Branch {
                    history,
                    next: switch.segment(SIZE),
                    live: true,
                });
            }
        }
    }
    if partial_ends {
        for b in branches.iter().filter(|b| b.live) {
            clock += 1;
            w.partials
                .push((SegmentId::new(b.history.timeline, b.next), t(clock)));
        }
    }
    w.end = clock;
    w
}

fn index_of(w: &World, missing: &[bool]) -> ArchiveIndex {
    let mut idx = ArchiveIndex::new(SIZE);
    for (i, (s, time)) in w.segments.iter().enumerate() {
        if !missing[i % missing.len()] {
            idx.insert(WalFile::Segment(*s), FileInfo::at(*time));
        }
    }
    for (s, time) in &w.partials {
        idx.insert(WalFile::Partial(*s), FileInfo::at(*time));
    }
    for (h, time) in &w.histories {
        idx.insert_history(h.clone(), FileInfo::at(*time));
    }
    idx
}

/// The index holding only the files the plan keeps.
fn pruned(idx: &ArchiveIndex, plan: &WalPlan) -> ArchiveIndex {
    let kept: BTreeSet<WalFile> = plan
        .files
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.file)
        .collect();
    let mut out = ArchiveIndex::new(SIZE);
    for (f, info) in idx.files() {
        if !kept.contains(&f) {
            continue;
        }
        match f {
            WalFile::History(tl) => out.insert_history(idx.history(tl).unwrap(), info.clone()),
            other => out.insert(other, info.clone()),
        }
    }
    out
}

/// The file recovery along `path` reads for segment `n`, if archived (complete or partial).
fn has(
    idx: &ArchiveIndex,
    path: &TimelineHistory,
    n: u64,
) -> Option<(SegmentId, bool, DateTime<Utc>)> {
    let id = SegmentId::new(path.segment_timeline(n, SIZE), n);
    idx.segment(id)
        .map(|i| (id, false, i.time()))
        .or_else(|| idx.partial(id).map(|i| (id, true, i.time())))
}

/// Segments a restore from `b` along `path` reads without a break in `idx`, in order.
fn continuous_from(
    idx: &ArchiveIndex,
    path: &TimelineHistory,
    b: &BaseBackup,
) -> Vec<(u64, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut n = b.start_lsn.segment(SIZE);
    while let Some((_, partial, time)) = has(idx, path, n) {
        out.push((n, time));
        if partial {
            break;
        }
        n += 1;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn kept_backups_stay_restorable_through_the_window(
        steps in prop::collection::vec(step(), 1..40),
        missing in prop::collection::vec(prop::bool::weighted(0.04), 1..97),
        retained in prop::collection::vec(prop::bool::weighted(0.5), 64),
        pinned in prop::collection::vec(prop::bool::weighted(0.1), 64),
        partial_ends in any::<bool>(),
        keep_pitr in prop::option::of(1u32..60),
        after_end in 0i64..48,
    ) {
        let world = simulate(&steps, partial_ends);
        let idx = index_of(&world, &missing);
        let backups: Vec<RetainedBackup> = world.backups.iter().enumerate().map(|(i, b)| RetainedBackup {
            backup: b.clone(),
            kept: retained[i % 64] || pinned[i % 64],
        }).collect();
        let now = t(world.end + after_end);
        let pitr = keep_pitr.map(RetentionDuration::hours);
        let plan = evaluate(&idx, &backups, pitr, now);
        let after = pruned(&idx, &plan);

        let protected: BTreeSet<&str> = plan.protected.iter().map(|(id, _)| id.as_str()).collect();
        let staying: Vec<&BaseBackup> = backups.iter()
            .filter(|b| b.kept || protected.contains(b.backup.id.as_str()))
            .map(|b| &b.backup)
            .collect();
        let window = plan.window_start;

        // Every backup that stays keeps its own WAL: whatever of start → stop was archived.
        for b in &staying {
            let path = idx.history(b.timeline).unwrap();
            for n in b.start_lsn.segment(SIZE)..=b.stop_lsn.last_segment_before(SIZE) {
                if let Some((id, _, _)) = has(&idx, &path, n) {
                    prop_assert!(has(&after, &path, n).is_some(),
                        "backup {} lost {:?} of its own WAL", b.id, id);
                }
            }
        }

        // Every backup that stays and is consistent inside the window still recovers as far
        // along every path as it did before; so does, along its path, the newest backup
        // consistent by the window's start (the anchor).
        for b in &staying {
            for path in idx.reachable_timelines(b.timeline, b.stop_lsn) {
                let chained = match (pitr, window) {
                    (Some(_), Some(w)) => {
                        let anchor = backups
                            .iter()
                            .map(|x| &x.backup)
                            .filter(|x| x.stop_time <= w && path.check_reachable(x.timeline, x.stop_lsn).is_ok())
                            .max_by(|x, y| (x.stop_time, &x.id).cmp(&(y.stop_time, &y.id)));
                        b.stop_time > w || anchor.is_some_and(|a| a.id == b.id)
                    }
                    _ => true,
                };
                if !chained {
                    continue;
                }
                let before = continuous_from(&idx, &path, b);
                let now_reach = continuous_from(&after, &path, b);
                prop_assert_eq!(&now_reach, &before,
                    "backup {} along timeline {} recovers less far after pruning", b.id, path.timeline);
            }
        }

        // The window's start stays reachable on every path it was reachable on, even when
        // backup retention dropped the backup that reached it.
        if let (Some(_), Some(w)) = (pitr, window) {
            let reaches_window = |ix: &ArchiveIndex, path: &TimelineHistory, b: &BaseBackup| {
                b.stop_time <= w
                    && path.check_reachable(b.timeline, b.stop_lsn).is_ok()
                    && continuous_from(ix, path, b).iter().any(|(_, time)| *time >= w)
            };
            for tl in idx.timelines() {
                let Some(path) = idx.history(tl) else { continue };
                let before = backups.iter().any(|b| reaches_window(&idx, &path, &b.backup));
                if before {
                    prop_assert!(staying.iter().any(|b| reaches_window(&after, &path, b)),
                        "the start of the window became unreachable on timeline {}", tl);
                }
            }
        }

        // Only old WAL goes: never a history, never anything inside the window.
        for d in plan.deletions() {
            prop_assert!(!matches!(d.file, WalFile::History(_)), "a history file was deleted");
            let info = idx.files().into_iter().find(|(f, _)| *f == d.file).unwrap().1.clone();
            if let Some(w) = window {
                prop_assert!(info.time() < w, "{} inside the window was deleted", d.name);
            } else {
                prop_assert!(false, "{} was deleted although nothing anchors a window", d.name);
            }
        }

        // Pruning again deletes nothing more.
        let again = evaluate(&after, &backups, pitr, now);
        prop_assert_eq!(again.deletions().count(), 0);
    }
}

/// The property above is not vacuous: a short window over a long history deletes most WAL.
#[test]
fn a_short_window_deletes_most_of_a_long_history() {
    let mut steps = Vec::new();
    for _ in 0..30 {
        steps.push(Step::Backup(0, 0));
        steps.push(Step::Wal(4, 0));
    }
    let world = simulate(&steps, false);
    let idx = index_of(&world, &[false]);
    let backups: Vec<RetainedBackup> = world
        .backups
        .iter()
        .map(|b| RetainedBackup {
            backup: b.clone(),
            kept: true,
        })
        .collect();
    let plan = evaluate(
        &idx,
        &backups,
        Some(RetentionDuration::hours(12)),
        t(world.end),
    );
    let deleted = plan.deletions().count();
    let total = plan.files.len();
    assert!(deleted * 10 > total * 6, "{deleted} of {total} deleted");
}
