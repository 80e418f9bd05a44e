#!/usr/bin/env bash
# First deduplicated backup, A/B against restic: two drctl binaries (A the baseline, B the
# change) and restic back up the same generated tree into fresh local repositories,
# alternated A B restic per round in one run; medians and ratios. Results go in BENCHMARKS.md.
#
# Only the first backup is measured (the step issue 13 missed): the tree is not modified, so
# it is generated once and not copied between runs. B's last snapshot is restored once and
# compared with the tree (diff -r) before the figures are printed.
#
# Usage: DRCTL_A=old/drctl DRCTL_B=new/drctl scripts/bench_files_first_ab.sh [FILES] [MEAN_KB] [ROUNDS]
#        (defaults: 200000 4 3)
# Env:   BENCH_DIR (default /tmp/dr-bench-files), GEN (path of gen_uploads.py).
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${1:-200000}
MEAN_KB=${2:-4}
ROUNDS=${3:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/dr-bench-files}
GEN=${GEN:-/work/shared/bench/gen_uploads.py}
: "${DRCTL_A:?the baseline drctl}" "${DRCTL_B:?the drctl to compare}"
command -v restic >/dev/null || apt-get install -y restic >/dev/null
[ -x /usr/bin/time ] || apt-get install -y time >/dev/null
mkdir -p "$BENCH_DIR"
export RESTIC_PASSWORD=bench-password-not-secret
export DR_KEY_FILE=$BENCH_DIR/dr.key DR_SIGNING_KEY=$BENCH_DIR/admin.key DR_TRUST_DIR=$BENCH_DIR/trust
[ -f "$DR_KEY_FILE" ] || "$DRCTL_B" keygen -o "$DR_KEY_FILE" >/dev/null 2>&1
[ -f "$DR_SIGNING_KEY" ] || "$DRCTL_B" keygen --signing -o "$DR_SIGNING_KEY" >/dev/null 2>&1
SRC=$BENCH_DIR/pristine-$FILES-$MEAN_KB   # the name bench_files.sh uses: one tree for both
REPO=$BENCH_DIR/first-repo
RESULTS=$BENCH_DIR/first-results.tsv
: > "$RESULTS"
[ -d "$SRC" ] || { python3 "$GEN" "$SRC.tmp" "$FILES" "$MEAN_KB" 1 && mv "$SRC.tmp" "$SRC"; }

# first NAME CMD...: a first backup into the empty repository $REPO; wall s and peak KiB.
first() {
  local name=$1; shift
  sync
  /usr/bin/time -v -o "$BENCH_DIR/first-time.txt" "$@" >/dev/null 2>"$BENCH_DIR/first-err.txt" || {
    cat "$BENCH_DIR/first-err.txt" >&2; exit 1; }
  awk -v n="$name" -F': ' '/Elapsed \(wall clock\)/ {k = split($2, p, ":"); s = 0; for (i = 1; i <= k; i++) s = s * 60 + p[i]; w = s}
    /Maximum resident set size/ {r = $2} END {printf "%s\t%s\t%s\n", n, w, r}' "$BENCH_DIR/first-time.txt" >> "$RESULTS"
}
dr_first() {
  rm -rf "$REPO" "$DR_TRUST_DIR"
  "$2" init --repo "$REPO" >/dev/null
  first "$1" "$2" backup --repo "$REPO" --dir "$SRC" --dedup
}
restic_first() {
  rm -rf "$REPO"
  restic init --repo "$REPO" >/dev/null
  first restic restic --repo "$REPO" backup "$SRC"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for _ in $(seq "$ROUNDS"); do
  dr_first A "$DRCTL_A"
  dr_first B "$DRCTL_B"
  restic_first
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
dr_first B "$DRCTL_B" && sed -i '$d' "$RESULTS"   # a snapshot of B's to check (not counted)
rm -rf "$BENCH_DIR/first-out"
"$DRCTL_B" restore --repo "$REPO" latest --dir "$BENCH_DIR/first-out" >/dev/null
diff -r "$SRC" "$BENCH_DIR/first-out" >/dev/null || { echo "B's snapshot does not restore the tree" >&2; exit 1; }
rm -rf "$BENCH_DIR/first-out" "$REPO"

python3 - "$RESULTS" <<'PY'
import statistics, sys, collections
wall, rss = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, w, r = line.split()
    wall[name].append(float(w)); rss[name].append(int(r))
for n in ["A", "B", "restic"]:
    print(f"{n}: wall {' / '.join(f'{w:.2f}' for w in wall[n])} s, median {statistics.median(wall[n]):.2f} s; "
          f"peak RSS {' / '.join(f'{r // 1024}' for r in rss[n])} MiB, median {statistics.median(rss[n]) / 1024:.0f} MiB")
m = {n: statistics.median(wall[n]) for n in wall}
print(f"B / A wall: {m['B'] / m['A']:.2f}; A / restic: {m['A'] / m['restic']:.2f}; B / restic: {m['B'] / m['restic']:.2f}")
PY
