#!/usr/bin/env bash
# Peak RSS and wall time of dr's four file-backup steps (first backup, second backup after 1 %
# of the files changed, restore of the whole tree, restore of one file) for two drctl builds,
# alternated A B in each pair, on one generated tree: does memory stay flat when the file
# count grows? Each arm is one `scripts/bench_files.sh FILES MEAN_KB 1` run with NO_RESTIC=1
# (a fresh repository each time). Results go in BENCHMARKS.md (issue 13).
#
# Usage: DRCTL_A=<baseline drctl> DRCTL_B=<drctl to compare> scripts/bench_files_rss_ab.sh FILES [MEAN_KB] [PAIRS]
# Env:   BENCH_DIR (default /tmp/dr-bench-files); APPEND=1 adds to the results of an earlier
#        call (so pairs can run under separate benchmark locks) instead of starting afresh;
#        KEEP_TREE=1 keeps the generated tree for the next call (it takes minutes to make).
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${1:?usage: bench_files_rss_ab.sh FILES [MEAN_KB] [PAIRS]}
MEAN_KB=${2:-4}
PAIRS=${3:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/dr-bench-files}
: "${DRCTL_A:?the baseline drctl}" "${DRCTL_B:?the drctl to compare}"
OUT=$BENCH_DIR/rss-ab-$FILES.tsv
mkdir -p "$BENCH_DIR"
[ -n "${APPEND:-}" ] || : > "$OUT"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for _ in $(seq "$PAIRS"); do
  for arm in A B; do
    bin=DRCTL_$arm
    BENCH_KEEP=1 NO_RESTIC=1 DRCTL=${!bin} BENCH_DIR=$BENCH_DIR \
      scripts/bench_files.sh "$FILES" "$MEAN_KB" 1 >/dev/null
    awk -v arm="$arm" -F'\t' '$1 == "dr" {print arm "\t" $2 "\t" $3 "\t" $4}' \
      "$BENCH_DIR/results.tsv" >> "$OUT"
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# The disk is shared: keep nothing but the results (and the tree if asked).
rm -rf "$BENCH_DIR/src" "$BENCH_DIR/dr-repo" "$BENCH_DIR/dr-out"
[ -n "${KEEP_TREE:-}" ] || rm -rf "$BENCH_DIR/pristine-$FILES-$MEAN_KB"

python3 - "$OUT" <<'PY'
import statistics, sys, collections
wall, rss = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    arm, step, w, r = line.rstrip("\n").split("\t")
    if step.startswith("stored"):
        continue
    wall[(step, arm)].append(float(w)); rss[(step, arm)].append(int(r) / 1024)
print("| step | A peak RSS (runs) | B peak RSS (runs) | B / A RSS | A wall (runs) | B wall (runs) | B / A wall |")
print("|---|---|---|---:|---|---|---:|")
for step in ["first", "second", "restore", "restore-one"]:
    a, b = rss[(step, "A")], rss[(step, "B")]
    wa, wb = wall[(step, "A")], wall[(step, "B")]
    runs = lambda v, f: " / ".join(f.format(x) for x in v)
    med = statistics.median
    print(f"| {step} | {runs(a, '{:.0f}')} (**{med(a):.0f} MiB**) | {runs(b, '{:.0f}')} (**{med(b):.0f} MiB**) | {med(b) / med(a):.2f} "
          f"| {runs(wa, '{:.2f}')} ({med(wa):.2f} s) | {runs(wb, '{:.2f}')} ({med(wb):.2f} s) | {med(wb) / med(wa):.2f} |")
PY
