#!/usr/bin/env python3
"""Peak memory of a whole process tree, sampled: the sum of PSS and the sum of RSS.

Why: `/usr/bin/time -f %M` reports the largest single process of a tree (getrusage's
RUSAGE_CHILDREN ru_maxrss is the largest waited-for descendant, not a sum). pgBackRest with
process-max 2 runs a main process and two local workers; drctl in pg_basebackup mode runs a
pg_basebackup child. To compare what each tool costs the machine, this sums, every
--interval seconds, over the tree under --root (the root and all its descendants; not
PostgreSQL's backends, which are the server's children), each process's
  PSS (/proc/PID/smaps_rollup; a page shared by n processes counts 1/n in each, so shared
       text and libraries are counted once in the sum), and
  RSS (the same file; shared pages count in full in every process),
and keeps the peak of each sum over time with the number of processes at that peak.

Usage: proc_tree_mem.py --root PID [--skip-comm time,runuser] [--interval 0.05] [--out FILE]
Runs until PID exits; prints (and writes to FILE) one line:
  peak_pss_kib=N procs_at_pss_peak=N peak_rss_kib=N procs_at_rss_peak=N samples=N detail=...
where detail names the processes (comm:pss_kib) at the PSS peak. Processes whose name is in
--skip-comm (wrappers such as /usr/bin/time and runuser between the benchmark and the tool)
are walked through but not counted.
"""
import argparse
import os
import sys
import time


def parents():
    """{pid: parent pid} of every process now (the kernel here has no /proc/PID/.../children)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The name in parentheses may hold spaces: the fields after its last ')' are fixed.
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(entry)] = int(fields[1])
    return out


def tree(root):
    """`root` and all its descendants alive now."""
    kids = {}
    for pid, ppid in parents().items():
        kids.setdefault(ppid, []).append(pid)
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(kids.get(pid, []))
    return seen


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def pss_rss(pid):
    """(PSS KiB, RSS KiB) of `pid`, or None if it is gone or has no memory (a zombie)."""
    pss = rss = None
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        return None
    if pss is None or rss is None:
        return None
    return pss, rss


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=int, required=True)
    ap.add_argument("--skip-comm", default="")
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--out")
    args = ap.parse_args()
    skip = {c for c in args.skip_comm.split(",") if c}
    peak_pss = peak_rss = 0
    procs_pss = procs_rss = 0
    detail = ""
    samples = 0
    next_at = time.monotonic()
    while os.path.exists(f"/proc/{args.root}"):
        pss_sum = rss_sum = n = 0
        parts = []
        for pid in tree(args.root):
            name = comm(pid)
            if name is None or name in skip:
                continue
            mem = pss_rss(pid)
            if mem is None:
                continue
            pss_sum += mem[0]
            rss_sum += mem[1]
            n += 1
            parts.append(f"{name}:{mem[0]}")
        samples += 1
        if pss_sum > peak_pss:
            peak_pss, procs_pss, detail = pss_sum, n, ",".join(parts)
        if rss_sum > peak_rss:
            peak_rss, procs_rss = rss_sum, n
        # One sample every --interval, however long a sample took (not after it).
        next_at += args.interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    line = (f"peak_pss_kib={peak_pss} procs_at_pss_peak={procs_pss} "
            f"peak_rss_kib={peak_rss} procs_at_rss_peak={procs_rss} samples={samples} "
            f"detail={detail or '-'}")
    print(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
