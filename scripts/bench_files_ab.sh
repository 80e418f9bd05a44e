#!/usr/bin/env bash
# A/B of the whole-tree restore of a deduplicated snapshot: two drctl binaries restore the
# same snapshot of the same repository, alternated A B A B in one run; medians and ratio.
# Results go in BENCHMARKS.md.
#
# Usage: DRCTL_A=old/drctl DRCTL_B=new/drctl scripts/bench_files_ab.sh [FILES] [MEAN_KB] [PAIRS]
#        (defaults: 20000 100 3)
# Env:   BENCH_DIR (default /tmp/dr-bench-files), GEN (path of gen_uploads.py).
# The snapshot is taken by B; both binaries must read the same repository format.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${1:-20000}
MEAN_KB=${2:-100}
PAIRS=${3:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/dr-bench-files}
GEN=${GEN:-/work/shared/bench/gen_uploads.py}
: "${DRCTL_A:?the baseline drctl}" "${DRCTL_B:?the drctl to compare}"
[ -x /usr/bin/time ] || apt-get install -y time >/dev/null
mkdir -p "$BENCH_DIR"
export DR_KEY_FILE=$BENCH_DIR/dr.key DR_SIGNING_KEY=$BENCH_DIR/admin.key DR_TRUST_DIR=$BENCH_DIR/trust
[ -f "$DR_KEY_FILE" ] || "$DRCTL_B" keygen -o "$DR_KEY_FILE" >/dev/null 2>&1
[ -f "$DR_SIGNING_KEY" ] || "$DRCTL_B" keygen --signing -o "$DR_SIGNING_KEY" >/dev/null 2>&1
SRC=$BENCH_DIR/ab-src-$FILES-$MEAN_KB
REPO=$BENCH_DIR/ab-repo
OUT=$BENCH_DIR/ab-out
RESULTS=$BENCH_DIR/ab-results.tsv
: > "$RESULTS"
[ -d "$SRC" ] || { python3 "$GEN" "$SRC.tmp" "$FILES" "$MEAN_KB" 1 && mv "$SRC.tmp" "$SRC"; }
rm -rf "$REPO" "$OUT" "$DR_TRUST_DIR"
"$DRCTL_B" init --repo "$REPO" >/dev/null
"$DRCTL_B" backup --repo "$REPO" --dir "$SRC" --dedup >/dev/null

restore() {
  local name=$1 bin=$2
  rm -rf "$OUT"
  sync
  /usr/bin/time -v -o "$BENCH_DIR/ab-time.txt" "$bin" restore --repo "$REPO" latest --dir "$OUT" >/dev/null
  diff -r "$SRC" "$OUT" >/dev/null || { echo "$name: the restored tree differs from the source" >&2; exit 1; }
  awk -v n="$name" -F': ' '/Elapsed \(wall clock\)/ {k = split($2, p, ":"); s = 0; for (i = 1; i <= k; i++) s = s * 60 + p[i]; w = s}
    /Maximum resident set size/ {r = $2} END {printf "%s\t%s\t%s\n", n, w, r}' "$BENCH_DIR/ab-time.txt" >> "$RESULTS"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for _ in $(seq "$PAIRS"); do restore A "$DRCTL_A"; restore B "$DRCTL_B"; done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
[ -n "${BENCH_KEEP:-}" ] || rm -rf "$SRC" "$REPO" "$OUT"

python3 - "$RESULTS" <<'PY'
import statistics, sys, collections
wall, rss = collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, w, r = line.split()
    wall[name].append(float(w)); rss[name].append(int(r))
for n in "AB":
    print(f"{n}: wall {' / '.join(f'{w:.2f}' for w in wall[n])} s, median {statistics.median(wall[n]):.2f} s; "
          f"peak RSS {' / '.join(f'{r // 1024}' for r in rss[n])} MiB, median {statistics.median(rss[n]) / 1024:.0f} MiB")
print(f"B / A wall: {statistics.median(wall['B']) / statistics.median(wall['A']):.2f}")
PY
