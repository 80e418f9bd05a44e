#!/usr/bin/env bash
# Parallel logical backup and restore (issue 15) on the sample QR-app database, against
# PostgreSQL's own tools, alternated in one run:
#   backup:  drctl backup --jobs 2 | pg_dump -Fd -j2 -Z0 | pg_dump -Fc -Z0
#            (| drctl backup, one stream, with ONE_STREAM=1)
#   restore: drctl restore --jobs 2 --create | pg_restore -j2 -Fd (of the -Fd -Z0 archive)
# Each round runs every command once, in that order; PAIRS rounds; medians and ratios of
# wall seconds, CPU seconds (user + system of the command and the programs it waits for:
# pg_dump, pg_restore; not the server's backends) and peak RSS. Results go in BENCHMARKS.md.
#
# Usage: scripts/bench_parallel.sh [SCALE] [PAIRS]      (SCALE 10 is ~1.6 GB of plain dump)
# Env:   PGHOST/PGPORT/PGUSER of a server that has (or gets) the database `qrapp`;
#        BENCH_DIR (/tmp/dr-bench-parallel) and BENCH_PORT (55497) of the throwaway cluster;
#        when PGPORT is unset a throwaway cluster is started under $BENCH_DIR.
#        GEN: path of gen_qr_db.sh (default ../shared/bench/gen_qr_db.sh).
#        DRCTL: a drctl binary (default: a release build of this checkout).
#        DRCTL_B: a second drctl (say, before and after a change): every drctl command then
#        runs once with each binary per round, B right after A, and the ratios B/A are
#        printed too (names ending in _b are B's).
#        RESTORE=0: backups only (no restore rounds, no pg_restore), to keep a run short.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-10}
PAIRS=${2:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/dr-bench-parallel}
GEN=${GEN:-../shared/bench/gen_qr_db.sh}
mkdir -p "$BENCH_DIR"
. scripts/bench_lib.sh
bench_cluster "${BENCH_PORT:-55497}"
bench_sample "$SCALE"

if [ -z "${DRCTL:-}" ]; then
  cargo build --release --bin drctl >&2
  DRCTL=$PWD/target/release/drctl
fi
URL="postgres://$PGUSER@$PGHOST:$PGPORT"
W=$BENCH_DIR/work; rm -rf "$W"; mkdir -p "$W"
export TMPDIR=$W   # drctl's spool (backup --jobs) and FIFO folders (restore --jobs)
"$DRCTL" keygen --output "$W/key" >/dev/null
"$DRCTL" keygen --signing --output "$W/admin.key" >/dev/null
export DR_KEY_FILE=$W/key DR_SIGNING_KEY=$W/admin.key DR_TRUST_DIR=$W/trust
"$DRCTL" init --repo "$W/repo" >/dev/null

# run NAME CMD...: one timed run; appends "wall cpu rss_kib" to $W/t.NAME
run() {
  local name=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$W/time" "$@" >"$W/out.$name" 2>"$W/err" || { cat "$W/err" >&2; return 1; }
  read -r wall user sys rss < "$W/time"
  echo "$wall $(awk "BEGIN{print $user + $sys}") $rss" >> "$W/t.$name"
  echo "$(date -u +%H:%M:%S) $name wall ${wall}s cpu $(awk "BEGIN{print $user + $sys}")s rss ${rss}KiB load $(cut -d" " -f1 /proc/loadavg)" >&2
}
drop() { psql -XAtq -d postgres -c "DROP DATABASE IF EXISTS $1" >/dev/null; }
backup_id() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$1"; }

# The archives the restores read: a backup with --jobs 2, and pg_dump's directory archive.
if [ "${RESTORE:-1}" = 1 ]; then
  "$DRCTL" --json backup --repo "$W/repo" --db "$URL/qrapp" --jobs 2 > "$W/restore_backup.json"
  RID=$(backup_id "$W/restore_backup.json")
fi
pg_dump -Fd -j2 -Z0 -f "$W/restore.dir" qrapp
DUMP_BYTES=$(du -sb "$W/restore.dir" | cut -f1)

for i in $(seq "$PAIRS"); do
  run drctl_backup_jobs2 "$DRCTL" --json backup --repo "$W/repo" --db "$URL/qrapp" --jobs 2
  rm -rf "$W/repo/backups/$(backup_id "$W/out.drctl_backup_jobs2")"
  if [ -n "${DRCTL_B:-}" ]; then
    run drctl_backup_jobs2_b "$DRCTL_B" --json backup --repo "$W/repo" --db "$URL/qrapp" --jobs 2
    rm -rf "$W/repo/backups/$(backup_id "$W/out.drctl_backup_jobs2_b")"
  fi
  rm -rf "$W/b.dir"
  run pg_dump_Fd_j2_Z0 pg_dump -Fd -j2 -Z0 -f "$W/b.dir" qrapp
  rm -rf "$W/b.dir"
  run pg_dump_Fc_Z0 pg_dump -Fc -Z0 -f "$W/b.dump" qrapp
  rm -f "$W/b.dump"
  if [ "${ONE_STREAM:-0}" = 1 ]; then
    run drctl_backup "$DRCTL" --json backup --repo "$W/repo" --db "$URL/qrapp"
    rm -rf "$W/repo/backups/$(backup_id "$W/out.drctl_backup")"
    if [ -n "${DRCTL_B:-}" ]; then
      run drctl_backup_b "$DRCTL_B" --json backup --repo "$W/repo" --db "$URL/qrapp"
      rm -rf "$W/repo/backups/$(backup_id "$W/out.drctl_backup_b")"
    fi
  fi

  [ "${RESTORE:-1}" = 1 ] || continue
  drop bench_par_a
  run drctl_restore_jobs2 "$DRCTL" restore --repo "$W/repo" "$RID" --db "$URL/bench_par_a" --create --jobs 2
  drop bench_par_a
  if [ -n "${DRCTL_B:-}" ]; then
    run drctl_restore_jobs2_b "$DRCTL_B" restore --repo "$W/repo" "$RID" --db "$URL/bench_par_a" --create --jobs 2
    drop bench_par_a
  fi
  drop bench_par_b
  psql -XAtq -d postgres -c 'CREATE DATABASE bench_par_b TEMPLATE template0' >/dev/null
  run pg_restore_j2_Fd pg_restore --exit-on-error -j2 -Fd -d bench_par_b "$W/restore.dir"
  drop bench_par_b
done

median() { sort -n | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { cut -d' ' -f"$2" "$W/t.$1" | median; }
calc() { awk "BEGIN{printf \"%.2f\", $*}"; }

echo
echo "sample: scale $SCALE, pg_dump -Fd -Z0 archive $DUMP_BYTES bytes; $PAIRS rounds alternated; medians"
printf "%-22s %9s %9s %14s   %s\n" name wall_s cpu_s peak_RSS_MiB "runs (wall s)"
NAMES="drctl_backup_jobs2 pg_dump_Fd_j2_Z0 pg_dump_Fc_Z0"
[ "${RESTORE:-1}" = 1 ] && NAMES="$NAMES drctl_restore_jobs2 pg_restore_j2_Fd"
[ "${ONE_STREAM:-0}" = 1 ] && NAMES="$NAMES drctl_backup"
if [ -n "${DRCTL_B:-}" ]; then
  NAMES="$NAMES drctl_backup_jobs2_b"
  [ "${RESTORE:-1}" = 1 ] && NAMES="$NAMES drctl_restore_jobs2_b"
  [ "${ONE_STREAM:-0}" = 1 ] && NAMES="$NAMES drctl_backup_b"
fi
for name in $NAMES; do
  printf "%-22s %9.2f %9.2f %14.1f   %s\n" "$name" "$(col "$name" 1)" "$(col "$name" 2)" \
    "$(calc "$(col "$name" 3) / 1024")" "$(cut -d' ' -f1 "$W/t.$name" | tr '\n' ' ')"
  eval "M_$name=$(col "$name" 1)"; eval "C_$name=$(col "$name" 2)"
done
echo
[ "${RESTORE:-1}" = 1 ] && printf "drctl restore --jobs 2 / pg_restore -j2 -Fd      = %s wall, %s CPU (target <= 1.0 wall)\n" \
  "$(calc "$M_drctl_restore_jobs2 / $M_pg_restore_j2_Fd")" "$(calc "$C_drctl_restore_jobs2 / $C_pg_restore_j2_Fd")"
printf "drctl backup --jobs 2 / pg_dump -Fd -j2 -Z0      = %s wall, %s CPU (target <= 1.0 wall)\n" \
  "$(calc "$M_drctl_backup_jobs2 / $M_pg_dump_Fd_j2_Z0")" "$(calc "$C_drctl_backup_jobs2 / $C_pg_dump_Fd_j2_Z0")"
printf "drctl backup --jobs 2 / pg_dump -Fc -Z0          = %s wall\n" "$(calc "$M_drctl_backup_jobs2 / $M_pg_dump_Fc_Z0")"
GB=$(awk "BEGIN{printf \"%.6f\", $DUMP_BYTES / 1000000000}")
if [ "${ONE_STREAM:-0}" = 1 ]; then
  printf "drctl backup / pg_dump -Fc -Z0                   = %s wall, %s CPU (target <= 1.0 wall)\n" \
    "$(calc "$M_drctl_backup / $M_pg_dump_Fc_Z0")" "$(calc "$C_drctl_backup / $C_pg_dump_Fc_Z0")"
  printf "CPU s per GB of dump: drctl backup %s\n" "$(calc "$C_drctl_backup / $GB")"
fi
printf "CPU s per GB of dump: pg_dump -Fc -Z0 %s, drctl backup --jobs 2 %s, pg_dump -Fd -j2 -Z0 %s\n" \
  "$(calc "$C_pg_dump_Fc_Z0 / $GB")" "$(calc "$C_drctl_backup_jobs2 / $GB")" "$(calc "$C_pg_dump_Fd_j2_Z0 / $GB")"
[ "${RESTORE:-1}" = 1 ] && printf "CPU s per GB of dump: drctl restore --jobs 2 %s, pg_restore -j2 %s\n" \
  "$(calc "$C_drctl_restore_jobs2 / $GB")" "$(calc "$C_pg_restore_j2_Fd / $GB")"
if [ -n "${DRCTL_B:-}" ]; then
  echo "B ($DRCTL_B) against A ($DRCTL), same rounds:"
  for n in drctl_backup_jobs2 $([ "${RESTORE:-1}" = 1 ] && echo drctl_restore_jobs2) $([ "${ONE_STREAM:-0}" = 1 ] && echo drctl_backup); do
    eval "a=\$M_$n; b=\$M_${n}_b; ca=\$C_$n; cb=\$C_${n}_b"
    printf "  %-22s B/A = %s wall, %s CPU\n" "$n" "$(calc "$b / $a")" "$(calc "$cb / $ca")"
  done
  [ "${RESTORE:-1}" = 1 ] && printf "  B: restore --jobs 2 / pg_restore -j2 = %s\n" \
    "$(calc "$M_drctl_restore_jobs2_b / $M_pg_restore_j2_Fd")"
  printf "  B: backup --jobs 2 / pg_dump -Fd -j2 = %s\n" "$(calc "$M_drctl_backup_jobs2_b / $M_pg_dump_Fd_j2_Z0")"
  if [ "${ONE_STREAM:-0}" = 1 ]; then
    printf "  B: backup / pg_dump -Fc -Z0 = %s wall; CPU s per GB: B backup %s, pg_dump -Fc -Z0 %s\n" \
      "$(calc "$M_drctl_backup_b / $M_pg_dump_Fc_Z0")" "$(calc "$C_drctl_backup_b / $GB")" "$(calc "$C_pg_dump_Fc_Z0 / $GB")"
  fi
fi
uptime
