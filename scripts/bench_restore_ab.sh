#!/usr/bin/env bash
# Restore-only (and one-stream backup) A/B on the work folder scripts/bench_parallel.sh left
# in $BENCH_DIR/work (its `--jobs 2` backup, repository, keys and `pg_dump -Fd -j2 -Z0`
# archive), cheaper than a whole bench_parallel.sh run when only those commands changed.
# Per round: `drctl restore --jobs 2 --create` with A, then with B, then `pg_restore -j2
# -Fd` into an empty database; then PAIRS rounds of one-stream `drctl backup`, A then B.
# Prints one line per run (wall s, user + system CPU s, peak RSS KiB, load average).
#
# Usage: scripts/bench_restore_ab.sh DRCTL_A DRCTL_B [PAIRS]
# Env:   BENCH_DIR (/tmp/dr-bench-parallel) and BENCH_PORT (55497) as for bench_parallel.sh.
set -euo pipefail
A=$1; B=$2; PAIRS=${3:-3}
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-/tmp/dr-bench-parallel}
W=$BENCH_DIR/work
. scripts/bench_lib.sh
bench_cluster "${BENCH_PORT:-55497}"
URL="postgres://$PGUSER@$PGHOST:$PGPORT"
export TMPDIR=$W DR_KEY_FILE=$W/key DR_SIGNING_KEY=$W/admin.key DR_TRUST_DIR=$W/trust
backup_id() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$1"; }
RID=$(backup_id "$W/restore_backup.json")
drop() { psql -XAtq -d postgres -c "DROP DATABASE IF EXISTS $1" >/dev/null; }
run() {
  local name=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$W/time" "$@" >"$W/out.ab" 2>"$W/err" || { cat "$W/err" >&2; return 1; }
  read -r wall user sys rss < "$W/time"
  echo "$name wall $wall cpu $(awk "BEGIN{print $user + $sys}") rss $rss load $(cut -d' ' -f1 /proc/loadavg)"
}
for i in $(seq "$PAIRS"); do
  drop ab_a; run restore_A "$A" restore --repo "$W/repo" "$RID" --db "$URL/ab_a" --create --jobs 2; drop ab_a
  run restore_B "$B" restore --repo "$W/repo" "$RID" --db "$URL/ab_a" --create --jobs 2; drop ab_a
  drop ab_b; psql -XAtq -d postgres -c 'CREATE DATABASE ab_b TEMPLATE template0' >/dev/null
  run pg_restore_j2_Fd pg_restore --exit-on-error -j2 -Fd -d ab_b "$W/restore.dir"; drop ab_b
done
for i in $(seq "$PAIRS"); do
  run backup_A "$A" --json backup --repo "$W/repo" --db "$URL/qrapp"
  rm -rf "$W/repo/backups/$(backup_id "$W/out.ab")"
  run backup_B "$B" --json backup --repo "$W/repo" --db "$URL/qrapp"
  rm -rf "$W/repo/backups/$(backup_id "$W/out.ab")"
done
uptime
