#!/usr/bin/env bash
# RPO after losing the primary under load (issue 11): how much committed data a restore from
# the repository holds when the primary is stopped with `pg_ctl stop -m immediate` and its
# disks are gone (the restore reads the repository only, never the crashed pg_wal).
#
# One cluster, two repositories fed at once from the same server, so both arms see the very
# same crash:
#   archive  — archive_command = drctl wal-push, archive_timeout = 60s (the runbook's setup);
#   stream   — drctl wal-receive (pg_receivewal on a slot, --interval 2, the default), which
#              runs on another host in production: after the crash it still stores what it
#              received, so it is stopped with SIGTERM one interval after the crash.
# A marker client commits one row every ~100 ms with the server's clock_timestamp() while
# pgbench runs rate-limited (RATE tx/s, a busy-but-not-saturated server, where
# archive_timeout matters). RPO = crash time - newest marker in the restored cluster.
#
# Usage: scripts/bench_rpo.sh [RUNS] [LOAD_SECONDS]   (defaults 3 and 90; each run adds a
#        random 0-29 s so the crash lands at a different point of the segment)
# Env:   BENCH_DIR (/tmp/dr-bench-rpo), BENCH_PORT (55521; the restored copy uses +1),
#        RATE (pgbench -R, default 200), DRCTL_BIN (a drctl already built, instead of
#        cargo build --release).
# Needs root (or the postgres user): the servers run as postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
LOAD=${2:-90}
RATE=${RATE:-200}
BENCH_DIR=${BENCH_DIR:-/tmp/dr-bench-rpo}
PORT=${BENCH_PORT:-55521}
RPORT=$((PORT + 1))
source scripts/bench_lib.sh
BINDIR=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
export PATH="$BINDIR:$PATH"
[ -n "${DRCTL_BIN:-}" ] || { cargo build --release --bin drctl >&2; DRCTL_BIN=target/release/drctl; }

B=$BENCH_DIR
rm -rf "$B"; mkdir -p "$B/bin" "$B/work"
[ "$(id -u)" = 0 ] && chown -R postgres "$B"
install -m 755 "$DRCTL_BIN" "$B/bin/drctl"
DR=$B/bin/drctl W=$B/work
PSQL=(psql -h "$B" -p "$PORT" -U postgres -XAtq)
as_pg initdb -D "$B/data" -A trust -U postgres --no-sync >/dev/null
cat >>"$B/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$B'
shared_buffers = 256MB
wal_level = replica
archive_mode = on
archive_command = ''
archive_timeout = 60s
max_wal_senders = 4
EOF
echo "host replication postgres 127.0.0.1/32 trust" >>"$B/data/pg_hba.conf"
as_pg pg_ctl -D "$B/data" -l "$B/log" -w start >/dev/null
"${PSQL[@]}" -c 'CREATE DATABASE rpo'
pgbench -h "$B" -p "$PORT" -U postgres -i -s 10 -q rpo >/dev/null 2>&1
"${PSQL[@]}" -d rpo -c 'CREATE TABLE marker (id bigserial PRIMARY KEY, at timestamptz NOT NULL)'
as_pg "$DR" keygen --output "$W/dr.key" >/dev/null
as_pg "$DR" keygen --signing --output "$W/admin.key" >/dev/null
export DR_SIGNING_KEY=$W/admin.key DR_TRUST_DIR=$W/trust DR_KEY_FILE=$W/dr.key
DB_URL="postgres://postgres@127.0.0.1:$PORT/postgres"

now() { date +%s.%N; }
calc() { awk "BEGIN{printf \"%.2f\", $*}"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A RPO

# restore_rpo NAME REPO CRASH: restore the repository's latest base backup to the end of its
# WAL, start it on RPORT, and print the RPO against CRASH (epoch seconds).
restore_rpo() {
  local name=$1 repo=$2 crash=$3 dir=$W/restored
  rm -rf "$dir"; mkdir -m 700 "$dir"; [ "$(id -u)" = 0 ] && chown postgres "$dir"
  as_pg env DR_KEY_FILE="$W/dr.key" DR_TRUST_DIR="$W/trust" "$DR" restore --repo "$repo" latest --pgdata "$dir" >"$W/restore.$name" 2>&1 \
    || { cat "$W/restore.$name" >&2; exit 1; }
  as_pg pg_ctl -D "$dir" -l "$W/restored.$name.log" -w -t 600 -o "-p $RPORT -k $W -c listen_addresses=''" start >/dev/null
  while [ "$(psql -h "$W" -p "$RPORT" -U postgres -XAtq -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" != "f" ]; do sleep 0.2; done
  local newest; newest=$(psql -h "$W" -p "$RPORT" -U postgres -XAtq -d rpo -c 'SELECT extract(epoch FROM max(at)) FROM marker')
  local rows; rows=$(psql -h "$W" -p "$RPORT" -U postgres -XAtq -d rpo -c 'SELECT count(*) FROM marker')
  as_pg pg_ctl -D "$dir" -m fast -w stop >/dev/null
  rm -rf "$dir"
  local rpo; rpo=$(calc "$crash - $newest")
  RPO[$name]+="$rpo "
  echo "  $name: $rows markers restored, newest $(calc "$crash - $newest") s before the crash" >&2
}

for i in $(seq "$RUNS"); do
  echo "run $i (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  A=$W/archive-$i S=$W/stream-$i
  as_pg "$DR" init --repo "$A" >/dev/null
  as_pg "$DR" init --repo "$S" >/dev/null
  "${PSQL[@]}" -c "ALTER SYSTEM SET archive_command = '$DR wal-push --repo $A --key-file $W/dr.key %p'" -c 'SELECT pg_reload_conf()' >/dev/null
  as_pg "$DR" wal-receive --repo "$S" --db "$DB_URL" --slot dr_rpo --spool "$W/spool-$i" >"$W/receive.$i" 2>&1 &
  RECEIVER=$!
  until [ "$("${PSQL[@]}" -c "SELECT count(*) FROM pg_stat_replication")" = 1 ]; do sleep 0.2; done
  as_pg "$DR" backup --physical --db "$DB_URL" --repo "$A" >/dev/null
  as_pg "$DR" backup --physical --db "$DB_URL" --repo "$S" >/dev/null
  pgbench -h "$B" -p "$PORT" -U postgres -n -c 2 -R "$RATE" -T 3600 rpo >/dev/null 2>&1 &
  PGBENCH=$!
  ( while :; do "${PSQL[@]}" -d rpo -c 'INSERT INTO marker (at) VALUES (clock_timestamp())' >/dev/null 2>&1 || exit 0; sleep 0.1; done ) &
  MARKERS=$!
  sleep $((LOAD + RANDOM % 30))
  CRASH=$(now)
  as_pg pg_ctl -D "$B/data" -m immediate -w stop >/dev/null
  wait "$PGBENCH" "$MARKERS" 2>/dev/null || true
  sleep 3   # the receiver, on its own host, stores what it received (one --interval)
  # SIGTERM to drctl itself (runuser does not pass it on); it stores what it holds and exits 0.
  pkill -TERM -f "^$DR wal-receive --repo $S "
  wait "$RECEIVER" || { cat "$W/receive.$i" >&2; exit 1; }
  echo "  archived by wal-push: $(as_pg "$DR" wal list --repo "$A" | grep -m1 'timeline' || true)" >&2
  restore_rpo archive "$A" "$CRASH"
  restore_rpo stream "$S" "$CRASH"
  as_pg pg_ctl -D "$B/data" -l "$B/log" -w start >/dev/null   # crash recovery, for the next run
  "${PSQL[@]}" -c "SELECT pg_drop_replication_slot('dr_rpo')" >/dev/null
  rm -rf "$A" "$S" "$W/spool-$i"
done
as_pg pg_ctl -D "$B/data" -m fast -w stop >/dev/null

echo
echo "## RPO after an immediate stop under pgbench -R $RATE (seconds; $RUNS runs)"
for n in archive stream; do
  printf "%-8s median %6s s  (runs: %s)\n" "$n" "$(echo "${RPO[$n]}" | median)" "${RPO[$n]}"
done
rm -rf "$B"
