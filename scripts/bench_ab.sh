#!/usr/bin/env bash
# Two versions of drctl side by side on the sample QR-app database: backup and restore wall
# time and peak RSS, alternating A B A B in one run (the machine is shared, so a baseline from
# another hour is not a baseline). Use it to show that a change leaves the figures unchanged.
#
# Usage: scripts/bench_ab.sh REV_A REV_B [SCALE] [PAIRS]     (e.g. 0e82ca4 main 10 3)
# Env:   PGHOST/PGPORT of a server with `qrapp`, else a throwaway cluster under $BENCH_DIR
#        (default /tmp/dr-bench-ab) on port $BENCH_PORT (default 55496). Each revision's
#        release drctl is built in a detached worktree under $BENCH_DIR/ab, sharing one
#        target directory (dependencies build once).
set -euo pipefail
cd "$(dirname "$0")/.."
REV_A=${1:?usage: scripts/bench_ab.sh REV_A REV_B [SCALE] [PAIRS]}
REV_B=${2:?usage: scripts/bench_ab.sh REV_A REV_B [SCALE] [PAIRS]}
SCALE=${3:-10}
PAIRS=${4:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/dr-bench-ab}
GEN=${GEN:-../shared/bench/gen_qr_db.sh}
AB=$BENCH_DIR/ab
mkdir -p "$AB"
bash scripts/prereqs.sh --demo
. scripts/bench_lib.sh
bench_cluster ${BENCH_PORT:-55496}
bench_sample "$SCALE"

# build REV: a release drctl of that revision, printed as a path.
build() {
  local rev sha dir
  rev=$1; sha=$(git rev-parse --short "$rev"); dir=$AB/src-$sha
  # A revision's binary never changes: build it once.
  if [ -x "$AB/drctl-$sha" ]; then echo "$AB/drctl-$sha"; return; fi
  [ -d "$dir" ] || git worktree add --detach -f "$dir" "$sha" >&2
  CARGO_TARGET_DIR=$AB/target cargo build --release --bin drctl \
    --manifest-path "$dir/Cargo.toml" >&2
  cp "$AB/target/release/drctl" "$AB/drctl-$sha"
  echo "$AB/drctl-$sha"
}
DRCTL_A=$(build "$REV_A")
DRCTL_B=$(build "$REV_B")

W=$AB/work; rm -rf "$W"; mkdir -p "$W"
export DR_TRUST_DIR=$W/trust
DB_URL="postgres://$PGUSER@$PGHOST:$PGPORT/qrapp"
# Each side opens its repository with a key file its own version wrote; versions that sign
# take the administrative key from DR_SIGNING_KEY (older ones ignore it).
"$DRCTL_A" keygen --output "$W/key-A" >/dev/null
"$DRCTL_B" keygen --output "$W/key-B" >/dev/null
for bin in "$DRCTL_B" "$DRCTL_A"; do
  if "$bin" keygen --help | grep -q -- --signing; then
    "$bin" keygen --signing --output "$W/admin" >/dev/null
    export DR_SIGNING_KEY=$W/admin
    break
  fi
done

# init DRCTL REPO (a signing drctl takes DR_SIGNING_KEY).
init() {
  "$1" init --repo "$2" >/dev/null
}
# timed NAME CMD...: one timed run, appends "seconds rss_kib" to $W/NAME
timed() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; return 1; }
  cat "$W/time" >> "$W/$name"
}
median() { sort -n | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

for i in $(seq "$PAIRS"); do
  for side in A B; do
    bin=DRCTL_$side; bin=${!bin}
    export DR_KEY_FILE=$W/key-$side
    repo=$W/repo-$side-$i
    init "$bin" "$repo"
    timed "backup_$side" "$bin" backup --repo "$repo" --db "$DB_URL"
    psql -XAtq -d postgres -c 'DROP DATABASE IF EXISTS bench_ab_restore' >/dev/null
    timed "restore_$side" "$bin" restore --repo "$repo" latest \
      --db "postgres://$PGUSER@$PGHOST:$PGPORT/bench_ab_restore" --create
    rm -rf "$repo"
  done
done

echo "A = $REV_A ($(git rev-parse --short "$REV_A")), B = $REV_B ($(git rev-parse --short "$REV_B")); scale $SCALE, $PAIRS pairs A B A B, medians"
printf "%-8s %10s %10s %8s %12s %12s\n" step A_s B_s B/A A_rss_MiB B_rss_MiB
for step in backup restore; do
  a=$(cut -d' ' -f1 "$W/${step}_A" | median); b=$(cut -d' ' -f1 "$W/${step}_B" | median)
  ra=$(cut -d' ' -f2 "$W/${step}_A" | median); rb=$(cut -d' ' -f2 "$W/${step}_B" | median)
  awk -v s="$step" -v a="$a" -v b="$b" -v ra="$ra" -v rb="$rb" \
    'BEGIN{printf "%-8s %10.2f %10.2f %8.3f %12.1f %12.1f\n", s, a, b, b/a, ra/1024, rb/1024}'
done
echo "runs (seconds rss_kib):"; for f in "$W"/backup_* "$W"/restore_*; do echo "$(basename "$f"): $(tr '\n' ' ' < "$f")"; done
