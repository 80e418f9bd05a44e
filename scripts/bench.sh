#!/usr/bin/env bash
# Whole-system benchmark on the sample QR-app database (../shared/bench/gen_qr_db.sh):
# drctl backup/restore against pg_dump/pg_restore and the runbook pipeline, in one run,
# printing wall time, MB/s and peak RSS. Results go in BENCHMARKS.md.
#
# Usage: scripts/bench.sh [SCALE] [REPS]      (SCALE 10 is ~1.6 GB of plain dump)
# Env:   PGHOST/PGPORT/PGUSER of a server that has (or gets) the database `qrapp`;
#        when PGPORT is unset a throwaway cluster is started under $BENCH_DIR.
#        GEN: path of gen_qr_db.sh (default ../shared/bench/gen_qr_db.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${1:-10}
REPS=${2:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/dr-bench}
GEN=${GEN:-../shared/bench/gen_qr_db.sh}
mkdir -p "$BENCH_DIR"
bash scripts/prereqs.sh
. scripts/bench_lib.sh
bench_cluster 55499
bench_sample "$SCALE"

cargo build --release --bin drctl >&2
DRCTL=$PWD/target/release/drctl
DB_URL="postgres://$PGUSER@$PGHOST:$PGPORT/qrapp"
W=$BENCH_DIR/work; rm -rf "$W"; mkdir -p "$W"
DUMP_BYTES=$(pg_dump -Fp qrapp | wc -c)

# run NAME CMD...: one timed run, prints "NAME seconds peak_rss_kib"
run() {
  local name=$1; shift
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" >"$W/out.$name" 2>"$W/err" || { cat "$W/err" >&2; return 1; }
  read -r secs rss < "$W/time"
  echo "$name $secs $rss"
}
calc() { awk "BEGIN{printf \"%.4f\", $*}"; }
median() { sort -n | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "passphrase-for-the-runbook" > "$W/gpg.pass"
"$DRCTL" keygen --output "$W/key" >/dev/null
"$DRCTL" keygen --signing --output "$W/admin" >/dev/null
export DR_KEY_FILE=$W/key DR_SIGNING_KEY=$W/admin DR_TRUST_DIR=$W/trust

# The local S3 server (moto, installed by scripts/prereqs.sh) for the drctl_backup_s3 run;
# drctl reaches it through the standard AWS_* variables, like any S3-compatible store.
MOTO=${DR_MOTO_SERVER:-${DR_TOOLS_DIR:-$HOME/.cache/dr}/moto-venv/bin/moto_server}
S3_PORT=${BENCH_S3_PORT:-55498}
"$MOTO" -H 127.0.0.1 -p "$S3_PORT" >"$W/moto.log" 2>&1 &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
for _ in $(seq 100); do curl -s -o /dev/null "$AWS_ENDPOINT_URL/" && break; sleep 0.1; done
# moto checks no signatures: the header only names the account that owns the bucket.
curl -sf -o /dev/null -X PUT "$AWS_ENDPOINT_URL/dr-bench" \
  -H "Authorization: AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0"

declare -A T R
for i in $(seq "$REPS"); do
  rm -rf "$W/repo" "$W"/*.dump "$W"/*.gz*
  "$DRCTL" init --repo "$W/repo" >/dev/null
  "$DRCTL" init --repo "s3://dr-bench/run$i" >/dev/null
  while read -r name secs rss; do T[$name]+="$secs "; R[$name]=$rss; done < <(
    run pg_dump_Fc_Z0 pg_dump -Fc -Z0 -f "$W/plain.dump" qrapp
    run runbook_gzip_gpg bash -c "pg_dump qrapp | gzip > '$W/r.sql.gz' && gpg --batch --yes --symmetric --cipher-algo AES256 --passphrase-file '$W/gpg.pass' -o '$W/r.sql.gz.gpg' '$W/r.sql.gz'"
    run drctl_backup "$DRCTL" backup --repo "$W/repo" --db "$DB_URL"
    run drctl_backup_s3 "$DRCTL" --json backup --repo "s3://dr-bench/run$i" --db "$DB_URL"
    psql -XAtq -d postgres -c 'DROP DATABASE IF EXISTS bench_restore_a' -c 'DROP DATABASE IF EXISTS bench_restore_b' >/dev/null
    psql -XAtq -d postgres -c 'CREATE DATABASE bench_restore_a TEMPLATE template0' >/dev/null
    run pg_restore_Fc_Z0 pg_restore --exit-on-error --single-transaction -d bench_restore_a "$W/plain.dump"
    run drctl_restore "$DRCTL" restore --repo "$W/repo" latest --db "postgres://$PGUSER@$PGHOST:$PGPORT/bench_restore_b" --create
  )
done
STORED=$(du -sb "$W/repo/backups" | cut -f1)

echo
echo "sample database: scale $SCALE, plain dump $DUMP_BYTES bytes; drctl stored $STORED bytes; $REPS runs, medians"
printf "%-20s %10s %10s %14s\n" name seconds MB/s peak_RSS_MiB
for name in pg_dump_Fc_Z0 runbook_gzip_gpg drctl_backup drctl_backup_s3 pg_restore_Fc_Z0 drctl_restore; do
  s=$(echo "${T[$name]}" | tr ' ' '\n' | grep . | median)
  printf "%-20s %10.2f %10.1f %14.1f\n" "$name" "$s" "$(calc "$DUMP_BYTES / $s / 1000000")" "$(calc "${R[$name]} / 1024")"
  eval "M_$name=$s"
done
echo
printf "drctl backup / pg_dump -Fc -Z0      = %.2f (target <= 1.15)\n" "$(calc "$M_drctl_backup / $M_pg_dump_Fc_Z0")"
printf "runbook / drctl backup              = %.2f (target >= 4)\n" "$(calc "$M_runbook_gzip_gpg / $M_drctl_backup")"
printf "drctl restore / pg_restore          = %.2f (target <= 1.2)\n" "$(calc "$M_drctl_restore / $M_pg_restore_Fc_Z0")"
printf "drctl backup to S3 / to a file repo = %.2f\n" "$(calc "$M_drctl_backup_s3 / $M_drctl_backup")"
BUDGET=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["upload_memory_budget_bytes"])' "$W/out.drctl_backup_s3")
printf "drctl_backup_s3 peak RSS %.1f MiB; declared upload budget %.1f MiB (part size x (parts in flight + 1))\n" \
  "$(calc "${R[drctl_backup_s3]} / 1024")" "$(calc "$BUDGET / 1048576")"
