#!/usr/bin/env bash
# dr against pgBackRest on the same cluster, same run (issue 11's benchmarks):
#   1. base backup: wall time and peak RSS, drctl backup --physical --pgdata (copy mode) and
#      --physical (pg_basebackup) vs pgbackrest backup --type=full (zst, aes-256-cbc,
#      process-max 2, local repository);
#   2. WAL archiving: a backlog of $SEGMENTS pgbench-produced segments drained by
#      archive_command = drctl wal-push vs pgbackrest archive-push (sync and async):
#      segments/s and p50/p99 of the time PostgreSQL waits per call;
#   3. restore to a target time (restore + WAL replay until the server is promoted) with the
#      same WAL: drctl restore --target-time vs pgbackrest restore --type=time;
#   4. logical restore (drctl restore --db of logical backups) of the same two databases.
# Arms alternate A B A B ($PAIRS pairs); medians and ratios are printed at the end.
# Memory, two ways, side by side: "largest-process RSS" is /usr/bin/time's %M (the largest
# single process of the command's tree); "tree PSS sum" and "tree RSS sum" are the peaks over
# time of the sums over the whole tree (pgBackRest's main process and its local workers,
# drctl and its pg_basebackup), sampled every 50 ms by scripts/proc_tree_mem.py.
#
# Usage: scripts/bench_pgbackrest.sh [SCALE] [PAIRS]     (defaults 10 and 3)
# Env:   BENCH_DIR (/tmp/dr-bench-pitr), BENCH_PORT (55511; must be free or served by
#        BENCH_DIR's own cluster), SEGMENTS (32), GEN (../shared/bench/gen_qr_db.sh),
#        BASE_PAIRS (PAIRS: rounds of base backups; 1 when only the restores need them),
#        ONLY_ARCHIVING=1 (phase 2 alone: no base backups or restores), SKIP_ARCHIVING=1
#        (phases 1, 3 and 4: no archiving backlog), SKIP_LOGICAL=1 (no phase 4), DRCTL_BIN (a
#        drctl already built, instead of cargo build --release), DRCTL_BIN_B (a second drctl:
#        every dr arm of phases 1 and 3 runs with both, A then B, as NAME and NAME_b).
#        DROP_BASE=1 deletes each dr base backup right after its run, but for the last
#        round's (the restores need one), so that a full disk does not limit the rounds.
# Needs root (or the postgres user) and pgBackRest (installed here with apt-get if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-10}
PAIRS=${2:-3}
BASE_PAIRS=${BASE_PAIRS:-$PAIRS}
SEGMENTS=${SEGMENTS:-32}
B=${BENCH_DIR:-/tmp/dr-bench-pitr}
PORT=${BENCH_PORT:-55511}
RPORT=$((PORT + 1))
GEN=${GEN:-$PWD/../shared/bench/gen_qr_db.sh}
[ -f "$GEN" ] || GEN=/work/shared/bench/gen_qr_db.sh
command -v pgbackrest >/dev/null || apt-get install -y pgbackrest >&2
BINDIR=$(pg_config --bindir 2>/dev/null || ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
export PATH="$BINDIR:$PATH"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$B/pg" "$B/bin"
[ "$(id -u)" = 0 ] && chown postgres "$B" "$B/pg"

# The cluster: ours, or none. Never touch a server of another data directory.
PSQL=(psql -h "$B/pg" -p "$PORT" -U postgres -XAtq)
if [ ! -d "$B/pg/data" ]; then
  as_pg initdb -D "$B/pg/data" -A trust -U postgres --no-sync >/dev/null
  cat >>"$B/pg/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$B/pg'
shared_buffers = 512MB
max_wal_size = 8GB
wal_level = replica
archive_mode = on
archive_command = ''
EOF
fi
if ! "${PSQL[@]}" -c 'SELECT 1' >/dev/null 2>&1; then
  if ss -ltn | grep -q ":$PORT "; then
    echo "port $PORT is taken by another server; set BENCH_PORT" >&2; exit 1
  fi
  as_pg pg_ctl -D "$B/pg/data" -l "$B/pg/log" -w start >/dev/null
fi
[ "$("${PSQL[@]}" -c 'SHOW data_directory')" = "$B/pg/data" ] || { echo "the server on $PORT is not $B's" >&2; exit 1; }
if [ -z "${ONLY_ARCHIVING:-}" ] && ! "${PSQL[@]}" -d qrapp -c 'SELECT 1' >/dev/null 2>&1; then
  echo "generating the sample database at scale $SCALE" >&2
  PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres bash "$GEN" "$SCALE" qrapp >&2
fi
if ! "${PSQL[@]}" -d bench -c 'SELECT 1 FROM pgbench_branches LIMIT 1' >/dev/null 2>&1; then
  "${PSQL[@]}" -c 'CREATE DATABASE bench'
  pgbench -h "$B/pg" -p "$PORT" -U postgres -i -s 10 -q bench >/dev/null 2>&1
fi

[ -n "${DRCTL_BIN:-}" ] || { cargo build --release --bin drctl >&2; DRCTL_BIN=target/release/drctl; }
install -m 755 "$DRCTL_BIN" "$B/bin/drctl"
DR=$B/bin/drctl
DR_B=
if [ -n "${DRCTL_BIN_B:-}" ]; then install -m 755 "$DRCTL_BIN_B" "$B/bin/drctl-b"; DR_B=$B/bin/drctl-b; fi
W=$B/work
as_pg rm -rf "$W" 2>/dev/null || rm -rf "$W"
mkdir -p "$W/times"
[ "$(id -u)" = 0 ] && chown -R postgres "$W"
as_pg "$DR" keygen --output "$W/dr.key" >/dev/null
# This host administers the repository: init signs its keys with this key.
as_pg "$DR" keygen --signing --output "$W/admin.key" >/dev/null
export DR_SIGNING_KEY=$W/admin.key DR_TRUST_DIR=$W/trust
DRR=(--repo "$W/dr-repo" --key-file "$W/dr.key")
as_pg "$DR" init "${DRR[@]}" >/dev/null
cat >"$W/pgbackrest.conf" <<EOF
[global]
repo1-path=$W/pgbr-repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$(head -c 32 /dev/urandom | base64)
compress-type=zst
process-max=2
start-fast=y
log-level-console=warn
log-level-file=off
spool-path=$W/pgbr-spool
lock-path=$W/pgbr-lock
archive-timeout=600

[bench]
pg1-path=$B/pg/data
pg1-port=$PORT
pg1-socket-path=$B/pg
pg1-user=postgres
EOF
chmod 600 "$W/pgbackrest.conf"; [ "$(id -u)" = 0 ] && chown postgres "$W/pgbackrest.conf"
PGBR="pgbackrest --config=$W/pgbackrest.conf --stanza=bench"
as_pg $PGBR stanza-create >/dev/null
# archive_command wrapper: appends the call's microseconds to a file.
cat >"$B/bin/timed" <<'EOF'
#!/bin/sh
out=$1; shift
s=$(date +%s%N); "$@"; rc=$?; e=$(date +%s%N)
echo $(( (e - s) / 1000 )) >>"$out"
exit $rc
EOF
chmod 755 "$B/bin/timed"

set_archive() {
  "${PSQL[@]}" -c "ALTER SYSTEM SET archive_command = '$1'" -c 'SELECT pg_reload_conf()' >/dev/null
}
ready() { find "$B/pg/data/pg_wal/archive_status" -name '*.ready' | wc -l; }
wait_archived() {
  "${PSQL[@]}" -c 'SELECT pg_switch_wal()' >/dev/null
  sleep 1
  while [ "$(ready)" -gt 0 ]; do sleep 0.2; done
}
now() { date +%s.%N; }
calc() { awk "BEGIN{printf \"%.3f\", $*}"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
pct() { sort -n "$1" | awk -v p="$2" '{a[NR]=$1} END{i=int(NR*p/100+0.999); if(i<1)i=1; print a[i]/1000}'; }
declare -A T R TP TR TN
# measure CMD...: run CMD as the postgres user, timed; sets secs and rss (KiB, the largest
# single process of the tree, as /usr/bin/time's %M reports it) and tree_pss, tree_rss (KiB)
# and tree_procs: the peak over time of the sum of PSS and of RSS over the command's whole
# process tree, and the number of processes at the PSS peak (scripts/proc_tree_mem.py,
# sampled every 50 ms; the wrappers time and runuser not counted).
measure() {
  local out=$1 err=$2; shift 2
  rm -f "$W/tree"
  /usr/bin/time -f "%e %M" -o "$W/time" runuser -u postgres -- "$@" >"$out" 2>"$err" &
  local pid=$!
  python3 scripts/proc_tree_mem.py --root "$pid" --skip-comm time,runuser --out "$W/tree" >/dev/null &
  local sampler=$!
  local rc=0
  wait "$pid" || rc=$?
  wait "$sampler" || true
  [ "$rc" = 0 ] || return "$rc"
  read -r secs rss <"$W/time"
  local line; line=$(cat "$W/tree" 2>/dev/null || echo "sampler failed")
  tree_pss=$(echo "$line" | sed -n 's/.*peak_pss_kib=\([0-9]*\).*/\1/p')
  tree_rss=$(echo "$line" | sed -n 's/.*peak_rss_kib=\([0-9]*\).*/\1/p')
  tree_procs=$(echo "$line" | sed -n 's/.*procs_at_pss_peak=\([0-9]*\).*/\1/p')
  tree_detail=$(echo "$line" | sed -n 's/.*detail=//p')
}
# run NAME CMD...: measured (see measure); wall seconds and the three memory figures recorded.
run() {
  local name=$1; shift
  measure "$W/out.$name" "$W/err.$name" "$@" || { cat "$W/err.$name" >&2; return 1; }
  T[$name]+="$secs "; R[$name]+="$rss "
  TP[$name]+="$tree_pss "; TR[$name]+="$tree_rss "; TN[$name]+="$tree_procs "
  echo "  $name ${secs}s largest process ${rss}KiB; tree peak PSS sum ${tree_pss}KiB, RSS sum ${tree_rss}KiB, ${tree_procs} processes ($tree_detail)" >&2
}
# drop_base PAIR: with DROP_BASE, delete the dr base backup just taken (not in the last pair).
drop_base() {
  [ -n "${DROP_BASE:-}" ] && [ "$1" -lt "$BASE_PAIRS" ] || return 0
  local newest; newest=$(ls -t "$W/dr-repo/backups" | head -n1)
  [ -n "$newest" ] && as_pg rm -rf "$W/dr-repo/backups/$newest"
}

DB_SIZE=$("${PSQL[@]}" -c "SELECT pg_size_pretty(sum(pg_database_size(datname))) FROM pg_database")
# 3 base backups per pair plus restores and WAL: refuse to fill a shared disk.
KEPT_PER_PAIR=3; [ -z "${DROP_BASE:-}" ] || KEPT_PER_PAIR=1
NEED_KB=$(( $("${PSQL[@]}" -c "SELECT sum(pg_database_size(datname)) FROM pg_database") / 1024 * (KEPT_PER_PAIR * BASE_PAIRS / 2 + 4) + SEGMENTS * 16384 * 3 / 2 ))
# Phase 2 alone: the backlog in pg_wal and one run's repository at a time.
[ -n "${ONLY_ARCHIVING:-}" ] && NEED_KB=$(( SEGMENTS * 16384 * 3 / 2 ))
AVAIL_KB=$(df --output=avail -k "$W" | tail -n1)
if [ "$AVAIL_KB" -lt "$NEED_KB" ]; then
  echo "need about $((NEED_KB / 1048576)) GiB free under $W, have $((AVAIL_KB / 1048576)) GiB" >&2; exit 1
fi
echo "cluster: $DB_SIZE, scale $SCALE; $PAIRS pairs" >&2

if [ -z "${ONLY_ARCHIVING:-}" ]; then
# 1. Base backups (both archives get every segment meanwhile: each tool waits for its own).
set_archive "$DR wal-push --repo $W/dr-repo --key-file $W/dr.key %p && $PGBR archive-push %p"
wait_archived
for i in $(seq "$BASE_PAIRS"); do
  echo "base backup pair $i (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  run dr_copy "$DR" backup --physical --pgdata "$B/pg/data" --db "postgres://postgres@127.0.0.1:$PORT/postgres" "${DRR[@]}"; drop_base "$i"
  [ -z "$DR_B" ] || { run dr_copy_b "$DR_B" backup --physical --pgdata "$B/pg/data" --db "postgres://postgres@127.0.0.1:$PORT/postgres" "${DRR[@]}"; drop_base "$i"; }
  run pgbr_full $PGBR backup --type=full
  run dr_basebackup "$DR" backup --physical --db "postgres://postgres@127.0.0.1:$PORT/postgres" "${DRR[@]}"; drop_base "$i"
  [ -z "$DR_B" ] || { run dr_basebackup_b "$DR_B" backup --physical --db "postgres://postgres@127.0.0.1:$PORT/postgres" "${DRR[@]}"; drop_base "$i"; }
done

# WAL after the backups, and a target time in the middle of it.
pgbench -h "$B/pg" -p "$PORT" -U postgres -n -c 2 -T 10 bench >/dev/null 2>&1
sleep 1
TARGET=$("${PSQL[@]}" -c "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
# The same moment as pgBackRest writes it (it refuses the ISO form with T and Z).
PGBR_TARGET=$("${PSQL[@]}" -c "SELECT to_char('$TARGET'::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')")
sleep 1
pgbench -h "$B/pg" -p "$PORT" -U postgres -n -c 2 -T 10 bench >/dev/null 2>&1
wait_archived

# 3. Restore to the target time, then recovery until the server is promoted.
restore_and_recover() {
  local name=$1 dir=$2; shift 2
  rm -rf "$dir"; mkdir -m 700 "$dir"; [ "$(id -u)" = 0 ] && chown postgres "$dir"
  local t0; t0=$(now)
  measure "$W/out.$name" "$W/err.$name" "$@" || { cat "$W/err.$name" >&2; return 1; }
  local cmd_secs=$secs cmd_rss=$rss
  T[${name}_cmd]+="$cmd_secs "; R[${name}_cmd]+="$cmd_rss "
  TP[${name}_cmd]+="$tree_pss "; TR[${name}_cmd]+="$tree_rss "; TN[${name}_cmd]+="$tree_procs "
  as_pg pg_ctl -D "$dir" -l "$W/restored.log" -w -t 3600 -o "-p $RPORT -k $W -c archive_mode=off -c listen_addresses=''" start >/dev/null
  while [ "$(psql -h "$W" -p "$RPORT" -U postgres -XAtq -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" != "f" ]; do sleep 0.2; done
  local secs; secs=$(calc "$(now) - $t0")
  T[$name]+="$secs "
  echo "  $name ${secs}s (restore command ${cmd_secs}s, largest process ${cmd_rss}KiB, tree PSS sum ${tree_pss}KiB, RSS sum ${tree_rss}KiB; load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  as_pg pg_ctl -D "$dir" -m fast -w stop >/dev/null
  rm -rf "$dir"
}
for i in $(seq "$PAIRS"); do
  echo "restore pair $i" >&2
  restore_and_recover dr_restore_pitr "$W/r-dr" "$DR" restore latest --pgdata "$W/r-dr" --target-time "$TARGET" "${DRR[@]}"
  [ -z "$DR_B" ] || restore_and_recover dr_restore_pitr_b "$W/r-dr" "$DR_B" restore latest --pgdata "$W/r-dr" --target-time "$TARGET" "${DRR[@]}"
  restore_and_recover pgbr_restore_pitr "$W/r-pgbr" $PGBR restore --pg1-path="$W/r-pgbr" --type=time "--target=$PGBR_TARGET" --target-action=promote
done

if [ -z "${SKIP_LOGICAL:-}" ]; then
# 4. Logical restore of the same data (both databases the physical restore brings back), for
# the physical vs logical choice: one drctl restore per database, one after the other.
backup_id() { as_pg "$DR" backup --json --db "postgres://postgres@127.0.0.1:$PORT/$1" "${DRR[@]}" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }
QRAPP_ID=$(backup_id qrapp) BENCH_ID=$(backup_id bench)
cat >"$B/bin/logical_restore" <<EOF
#!/bin/sh
set -e
$DR restore $QRAPP_ID --db postgres://postgres@127.0.0.1:$PORT/qrapp_restored --create --repo $W/dr-repo --key-file $W/dr.key
$DR restore $BENCH_ID --db postgres://postgres@127.0.0.1:$PORT/bench_restored --create --repo $W/dr-repo --key-file $W/dr.key
EOF
chmod 755 "$B/bin/logical_restore"
for i in $(seq "$PAIRS"); do
  "${PSQL[@]}" -c 'DROP DATABASE IF EXISTS qrapp_restored' -c 'DROP DATABASE IF EXISTS bench_restored' >/dev/null
  run dr_restore_logical "$B/bin/logical_restore"
done
"${PSQL[@]}" -c 'DROP DATABASE IF EXISTS qrapp_restored' -c 'DROP DATABASE IF EXISTS bench_restored' >/dev/null
fi # SKIP_LOGICAL

fi # ONLY_ARCHIVING

# 2. WAL archiving of a backlog: archiving off while pgbench writes $SEGMENTS segments (once),
# then the server is stopped, so that every run drains the very same segments, and an
# archiver loop does what PostgreSQL's archiver does — oldest .ready first, one
# archive_command at a time from the data directory, .ready renamed .done on success, a retry
# after 1 s on failure — timing each call. Each run archives into a fresh repository (a
# re-push into a repository that has the segment is a cheaper path for both tools).
make_backlog() {
  cat >"$B/bin/bulk.sql" <<'EOF'
\set aid random(1, 995000)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN :aid AND :aid + 4999;
EOF
  set_archive ''
  local start; start=$("${PSQL[@]}" -c 'SELECT pg_current_wal_lsn()')
  "${PSQL[@]}" -c CHECKPOINT >/dev/null
  while [ "$("${PSQL[@]}" -c "SELECT (pg_current_wal_lsn() - '$start') >= $SEGMENTS::bigint * 16777216")" != t ]; do
    # pgbench's standard transaction writes well under 1 MB/s of WAL on 2 shared cores; a
    # pgbench script that updates 5,000 accounts per transaction makes the same kind of WAL
    # (heap updates, index entries, full-page images) fast enough for a backlog of hundreds.
    pgbench -h "$B/pg" -p "$PORT" -U postgres -n -c 2 -T 10 -f "$B/bin/bulk.sql" bench >/dev/null 2>&1
  done
  "${PSQL[@]}" -c 'SELECT pg_switch_wal()' >/dev/null
  sleep 2
}
cat >"$B/bin/archiver" <<'EOF'
#!/bin/bash
# archiver PGDATA TIMES COMMAND: PostgreSQL's archiver loop over pg_wal/archive_status.
cd "$1" || exit 1
times=$2 command=$3
for ready in $(ls pg_wal/archive_status | grep '\.ready$' | sort); do
  f=${ready%.ready}
  while :; do
    cmd=${command//%p/pg_wal\/$f}; cmd=${cmd//%f/$f}
    s=$(date +%s%N); sh -c "$cmd"; rc=$?; e=$(date +%s%N)
    echo $(( (e - s) / 1000 )) >>"$times"
    if [ $rc = 0 ]; then mv "pg_wal/archive_status/$f.ready" "pg_wal/archive_status/$f.done"; break; fi
    sleep 1
  done
done
EOF
chmod 755 "$B/bin/archiver"
declare -A P50 P99
if [ -z "${SKIP_ARCHIVING:-}" ]; then
echo "archiving: making a backlog of $SEGMENTS segments with pgbench" >&2
make_backlog
# Fresh repositories for every run, made while the server is up (stanza-create reads it).
for i in $(seq "$PAIRS"); do
  as_pg "$DR" init --repo "$W/drain-dr-$i" --key-file "$W/dr.key" >/dev/null
  for m in sync async; do
    as_pg $PGBR --repo1-path="$W/drain-pgbr-$m-$i" stanza-create >/dev/null
  done
done
as_pg pg_ctl -D "$B/pg/data" -m fast -w stop >/dev/null
BACKLOG=$(ls "$B/pg/data/pg_wal/archive_status" | grep '\.ready$' | sed 's/\.ready$//')
echo "  backlog: $(echo "$BACKLOG" | wc -l) files" >&2
drain() {
  local name=$1 repo=$2 cmd=$3
  for f in $BACKLOG; do
    rm -f "$B/pg/data/pg_wal/archive_status/$f.done"
    as_pg touch "$B/pg/data/pg_wal/archive_status/$f.ready"
  done
  as_pg rm -rf "$W/pgbr-spool"
  : >"$W/times/$name"; [ "$(id -u)" = 0 ] && chown postgres "$W/times/$name"
  local n; n=$(echo "$BACKLOG" | wc -l)
  local t0; t0=$(now)
  as_pg "$B/bin/archiver" "$B/pg/data" "$W/times/$name" "$cmd"
  local secs; secs=$(calc "$(now) - $t0")
  # drctl's background pusher lingers idle for 5 s after the last segment: let it go before
  # the next arm marks the same segments .ready again (not counted; every segment is stored).
  local lock=$B/pg/data/pg_wal/dr_spool/pusher.lock
  while [ -f "$lock" ] && ! flock -n -s "$lock" true; do sleep 0.2; done
  as_pg rm -rf "$B/pg/data/pg_wal/dr_spool"
  local rate; rate=$(calc "$n / $secs")
  T[$name]+="$rate "
  P50[$name]+="$(pct "$W/times/$name" 50) "
  P99[$name]+="$(pct "$W/times/$name" 99) "
  echo "  $name: $n files in ${secs}s = $rate files/s; p50 $(pct "$W/times/$name" 50) ms, p99 $(pct "$W/times/$name" 99) ms; load $(cut -d' ' -f1-3 /proc/loadavg); repo $(du -sh "$repo" | cut -f1)" >&2
  as_pg rm -rf "$repo"
}
for i in $(seq "$PAIRS"); do
  echo "archiving pair $i" >&2
  drain dr_wal_push "$W/drain-dr-$i" "$DR wal-push --repo $W/drain-dr-$i --key-file $W/dr.key %p"
  drain pgbr_push_sync "$W/drain-pgbr-sync-$i" "$PGBR --repo1-path=$W/drain-pgbr-sync-$i archive-push %p"
  drain pgbr_push_async "$W/drain-pgbr-async-$i" "$PGBR --repo1-path=$W/drain-pgbr-async-$i --archive-async archive-push %p"
done
as_pg pg_ctl -D "$B/pg/data" -l "$B/pg/log" -w start >/dev/null
set_archive ''
fi # SKIP_ARCHIVING

echo
echo "## results (medians of $PAIRS; cluster $DB_SIZE)"
for n in dr_copy dr_copy_b dr_basebackup dr_basebackup_b pgbr_full dr_restore_pitr dr_restore_pitr_b \
  pgbr_restore_pitr dr_restore_pitr_cmd dr_restore_pitr_b_cmd pgbr_restore_pitr_cmd dr_restore_logical; do
  [ -n "${T[$n]:-}" ] || continue
  mib() { [ -n "$1" ] && calc "$(echo "$1" | median) / 1024" || echo -; }
  printf "%-22s %8ss  largest-process RSS %s MiB  tree PSS sum %s MiB  tree RSS sum %s MiB  processes %s  (runs: %s; largest RSS KiB: %s; tree PSS KiB: %s; tree RSS KiB: %s)\n" \
    "$n" "$(echo "${T[$n]}" | median)" "$(mib "${R[$n]:-}")" "$(mib "${TP[$n]:-}")" "$(mib "${TR[$n]:-}")" \
    "${TN[$n]:-}" "${T[$n]}" "${R[$n]:-}" "${TP[$n]:-}" "${TR[$n]:-}"
done
for n in dr_wal_push pgbr_push_sync pgbr_push_async; do
  [ -n "${T[$n]:-}" ] || continue
  printf "%-20s %8s seg/s  p50 %s ms  p99 %s ms  (runs: %s)\n" "$n" "$(echo "${T[$n]}" | median)" \
    "$(echo "${P50[$n]}" | median)" "$(echo "${P99[$n]}" | median)" "${T[$n]}"
done
m() { echo "${T[$1]}" | median; }
[ -n "${ONLY_ARCHIVING:-}" ] && { echo "ratios: wal-push dr/pgbr-sync $(calc "$(m dr_wal_push) / $(m pgbr_push_sync)"), dr/pgbr-async $(calc "$(m dr_wal_push) / $(m pgbr_push_async)")"; exit 0; }
echo "ratios: copy/pgbr backup $(calc "$(m dr_copy) / $(m pgbr_full)"), basebackup/pgbr $(calc "$(m dr_basebackup) / $(m pgbr_full)"), restore-to-time dr/pgbr $(calc "$(m dr_restore_pitr) / $(m pgbr_restore_pitr)")"
[ -n "${SKIP_LOGICAL:-}" ] || echo "ratios: logical/physical restore $(calc "$(m dr_restore_logical) / $(m dr_restore_pitr)")"
[ -z "$DR_B" ] || echo "ratios (B): copy/pgbr backup $(calc "$(m dr_copy_b) / $(m pgbr_full)"), basebackup/pgbr $(calc "$(m dr_basebackup_b) / $(m pgbr_full)"), restore-to-time dr/pgbr $(calc "$(m dr_restore_pitr_b) / $(m pgbr_restore_pitr)"); B/A: copy $(calc "$(m dr_copy_b) / $(m dr_copy)"), basebackup $(calc "$(m dr_basebackup_b) / $(m dr_basebackup)"), restore-to-time $(calc "$(m dr_restore_pitr_b) / $(m dr_restore_pitr)")"
[ -n "${SKIP_ARCHIVING:-}" ] || echo "ratios: wal-push dr/pgbr-sync $(calc "$(m dr_wal_push) / $(m pgbr_push_sync)"), dr/pgbr-async $(calc "$(m dr_wal_push) / $(m pgbr_push_async)")"
