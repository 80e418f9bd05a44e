#!/usr/bin/env bash
# Deduplicated directory backups against restic (Debian's package), same data, same storage
# kind (a local directory), alternated A B A B in one run; medians and ratios. Results go in
# BENCHMARKS.md.
#
# Per pair and tool: a first backup of a generated uploads tree (gen_uploads.py: PNG-like
# incompressible and JSON-like compressible files), a second backup after 1 % of the files
# were rewritten, a restore of the whole tree and of one file. Wall time and peak RSS come
# from /usr/bin/time -v; stored bytes from `du` of the repository after each backup.
#
# Usage: scripts/bench_files.sh [FILES] [MEAN_KB] [PAIRS]   (defaults: 20000 100 3)
# Env:   BENCH_DIR (default /tmp/dr-bench-files), DRCTL (a drctl binary; default: build one
#        with PROFILE, default release), GEN (path of gen_uploads.py), NO_RESTIC=1 (dr's
#        steps only: for comparing two drctl builds' peak RSS, one invocation each).
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${1:-20000}
MEAN_KB=${2:-100}
PAIRS=${3:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/dr-bench-files}
PROFILE=${PROFILE:-release}
GEN=${GEN:-/work/shared/bench/gen_uploads.py}
command -v restic >/dev/null || apt-get install -y restic >/dev/null
[ -x /usr/bin/time ] || apt-get install -y time >/dev/null
if [ -z "${DRCTL:-}" ]; then
  cargo build --profile "$PROFILE" --bin drctl >&2
  DRCTL=target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/drctl
fi
mkdir -p "$BENCH_DIR"
SRC=$BENCH_DIR/src
RESULTS=$BENCH_DIR/results.tsv
: > "$RESULTS"

export RESTIC_PASSWORD=bench-password-not-secret
export DR_KEY_FILE=$BENCH_DIR/dr.key DR_SIGNING_KEY=$BENCH_DIR/admin.key DR_TRUST_DIR=$BENCH_DIR/trust
[ -f "$DR_KEY_FILE" ] || "$DRCTL" keygen -o "$DR_KEY_FILE" >/dev/null 2>&1
[ -f "$DR_SIGNING_KEY" ] || "$DRCTL" keygen --signing -o "$DR_SIGNING_KEY" >/dev/null 2>&1

# measure NAME TOOL CMD...: wall seconds and peak RSS (KiB) into results.tsv.
measure() {
  local name=$1 tool=$2; shift 2
  sync   # page cache stays warm (the machine is shared; dropping it would slow others)
  /usr/bin/time -v -o "$BENCH_DIR/time.txt" "$@" > /dev/null 2> "$BENCH_DIR/err.txt" || {
    cat "$BENCH_DIR/err.txt" >&2; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s}' "$BENCH_DIR/time.txt")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$BENCH_DIR/time.txt")
  printf '%s\t%s\t%s\t%s\n' "$tool" "$name" "$wall" "$rss" >> "$RESULTS"
}
stored() { printf '%s\t%s\t%s\t\n' "$2" "$1" "$(du -sb "$3" | cut -f1)" >> "$RESULTS"; }

ONE_FILE=user0001/exports/export-1.json
# The tree is generated once (Python makes 2 GB of JSON slowly) and copied for each run, mtimes
# kept, so every run starts from the same bytes.
PRISTINE=$BENCH_DIR/pristine-$FILES-$MEAN_KB
if [ ! -d "$PRISTINE" ]; then
  python3 "$GEN" "$PRISTINE.tmp" "$FILES" "$MEAN_KB" 1 && mv "$PRISTINE.tmp" "$PRISTINE"
fi
fresh_src() { rm -rf "$SRC"; cp -a "$PRISTINE" "$SRC"; }
run_dr() {
  local repo=$BENCH_DIR/dr-repo
  rm -rf "$repo" "$BENCH_DIR/dr-out" "$SRC" "$DR_TRUST_DIR"   # a new repository id each pair
  fresh_src
  "$DRCTL" init --repo "$repo" >/dev/null
  measure first dr "$DRCTL" backup --repo "$repo" --dir "$SRC" --dedup
  stored stored-first dr "$repo"
  python3 "$GEN" "$SRC" --mutate 1 "$FILES" "$MEAN_KB" 2
  measure second dr "$DRCTL" backup --repo "$repo" --dir "$SRC" --dedup
  stored stored-second dr "$repo"
  measure restore dr "$DRCTL" restore --repo "$repo" latest --dir "$BENCH_DIR/dr-out"
  rm -rf "$BENCH_DIR/dr-out"   # the disk is shared: one restored tree at a time
  measure restore-one dr "$DRCTL" cat --repo "$repo" latest --file "$ONE_FILE"
}
run_restic() {
  local repo=$BENCH_DIR/restic-repo
  rm -rf "$repo" "$BENCH_DIR/restic-out" "$SRC"
  fresh_src
  restic init --repo "$repo" >/dev/null
  measure first restic restic --repo "$repo" backup "$SRC"
  stored stored-first restic "$repo"
  python3 "$GEN" "$SRC" --mutate 1 "$FILES" "$MEAN_KB" 2
  measure second restic restic --repo "$repo" backup "$SRC"
  stored stored-second restic "$repo"
  measure restore restic restic --repo "$repo" restore latest --target "$BENCH_DIR/restic-out"
  rm -rf "$BENCH_DIR/restic-out"
  measure restore-one restic restic --repo "$repo" dump latest "$SRC/$ONE_FILE"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for _ in $(seq "$PAIRS"); do run_dr; [ -n "${NO_RESTIC:-}" ] || run_restic; done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# The disk is shared: keep only the results (BENCH_KEEP=1 keeps the trees and repositories).
if [ -z "${BENCH_KEEP:-}" ]; then
  rm -rf "$SRC" "$PRISTINE" "$BENCH_DIR/dr-repo" "$BENCH_DIR/restic-repo" "$BENCH_DIR/dr-out" "$BENCH_DIR/restic-out"
fi

python3 - "$RESULTS" <<'PY'
import statistics, sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
wall, rss = collections.defaultdict(list), collections.defaultdict(list)
for tool, name, value, peak in rows:
    wall[(name, tool)].append(float(value))
    if peak:
        rss[(name, tool)].append(int(peak))
print("| step | dr median | restic median | dr / restic | dr peak RSS | restic peak RSS |")
print("|---|---|---|---|---|---|")
for name in ["first", "second", "restore", "restore-one", "stored-first", "stored-second"]:
    d = statistics.median(wall[(name, "dr")])
    r = statistics.median(wall[(name, "restic")]) if wall[(name, "restic")] else float("nan")
    unit = " B" if name.startswith("stored") else " s"
    fmt = (lambda v: f"{int(v):,}{unit}" if v == v else "-") if unit == " B" else (lambda v: f"{v:.2f}{unit}")
    mem = lambda t: f"{statistics.median(rss[(name, t)]) / 1024:.0f} MiB" if rss[(name, t)] else ""
    print(f"| {name} | {fmt(d)} | {fmt(r)} | {d / r:.2f} | {mem('dr')} | {mem('restic')} |")
PY
