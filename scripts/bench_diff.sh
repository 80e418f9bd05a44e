#!/usr/bin/env bash
# Reconciliation benchmark: `drctl diff` of a large table with a few changed rows against
# `pg_dump` of the same table (what comparing by dumps would cost at the least), alternated
# A B A B in one run, medians and ratio. Results go in BENCHMARKS.md.
#
# Usage: scripts/bench_diff.sh [ROWS] [PAIRS]     (defaults: 3500000 rows, 5 pairs)
# Env:   PGHOST/PGPORT/PGUSER of a server to use; when PGPORT is unset a throwaway cluster
#        is started under $BENCH_DIR. PROFILE: cargo profile of drctl (default release; dev for a
#        debug build: the time is PostgreSQL's either way, drctl only matches keys).
#        DRCTL: a drctl binary to use instead of building one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-3500000}
PAIRS=${2:-5}
BENCH_DIR=${BENCH_DIR:-/tmp/dr-bench-diff}
PROFILE=${PROFILE:-release}
mkdir -p "$BENCH_DIR"
bash scripts/prereqs.sh
. scripts/bench_lib.sh
bench_cluster 55497
URL="postgres://$PGUSER@$PGHOST:$PGPORT"

# The reference: a scans table like the sample's, ROWS rows. The live copy: the same bytes
# (CREATE DATABASE … TEMPLATE), then 10 rows changed: 3 deleted, 3 inserted, 4 updated.
if [ "$(psql -XAtq -d diff_ref -c 'SELECT count(*) FROM scans' 2>/dev/null || true)" != "$ROWS" ]; then
  echo "generating diff_ref with $ROWS rows" >&2
  psql -XAtq -d postgres -c 'DROP DATABASE IF EXISTS diff_live' -c 'DROP DATABASE IF EXISTS diff_ref' \
    -c 'CREATE DATABASE diff_ref' >/dev/null
  psql -XAtq -d diff_ref -v ON_ERROR_STOP=1 >/dev/null <<SQL
CREATE TABLE scans (id bigint PRIMARY KEY, code uuid NOT NULL, scanned_at timestamptz NOT NULL,
  ip inet, user_agent text, country varchar(2), referrer text);
INSERT INTO scans SELECT g, md5('qr' || (g % 200000))::uuid,
  timestamptz '2024-03-01' + g * interval '7 seconds',
  ((1 + g % 222) || '.' || (g % 256) || '.' || (g * 7 % 256) || '.' || (1 + g % 254))::inet,
  (ARRAY['Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) Safari/604.1',
         'Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/124.0 Mobile Safari/537.36'])[1 + g % 2],
  (ARRAY['US','DE','GB','FR','JP','BR'])[1 + g % 6],
  CASE WHEN g % 3 = 0 THEN NULL ELSE 'https://www.google.com/' END
FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE scans;
SQL
fi
psql -XAtq -d postgres -c 'DROP DATABASE IF EXISTS diff_live' -c 'CREATE DATABASE diff_live TEMPLATE diff_ref' >/dev/null
psql -XAtq -d diff_live -v ON_ERROR_STOP=1 >/dev/null <<SQL
DELETE FROM scans WHERE id IN (11, 1500000, $ROWS);
INSERT INTO scans SELECT $ROWS + g, md5('new' || g)::uuid, now(), NULL, 'x', 'NL', NULL FROM generate_series(1, 3) g;
UPDATE scans SET country = 'XX' WHERE id IN (2, 777777, 2000000, $ROWS - 1);
VACUUM ANALYZE scans;
SQL

if [ -z "${DRCTL:-}" ]; then
  cargo build --profile "$PROFILE" --bin drctl >&2
  DRCTL=$PWD/target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/drctl
fi
W=$BENCH_DIR/work; rm -rf "$W"; mkdir -p "$W"
TABLE_BYTES=$(psql -XAtq -d diff_live -c "SELECT pg_table_size('scans')")

# run NAME CMD...: one timed run, prints "NAME seconds"; drctl diff exits 1 on differences.
run() {
  local name=$1; shift
  /usr/bin/time -f "%e" -o "$W/time" "$@" >"$W/out.$name" 2>"$W/err.$name" || [ $? = 1 ]
  echo "$name $(tail -n1 "$W/time")"
}
calc() { awk "BEGIN{printf \"%.4f\", $*}"; }
median() { sort -n | awk '{a[NR]=$1} END{print (NR%2)? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

declare -A T
for _ in $(seq "$PAIRS"); do
  while read -r name secs; do T[$name]+="$secs "; done < <(
    run pg_dump_table pg_dump -Fc -Z0 -t scans -f "$W/scans.dump" diff_live
    run drctl_diff "$DRCTL" --json diff --db "$URL/diff_live" --against "$URL/diff_ref" --table scans
  )
done
python3 - "$W/out.drctl_diff" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))[0]
assert (t["missing"], t["extra"], t["changed"]) == (3, 3, 4), t
print(f"drctl diff found {t['missing']} missing, {t['extra']} extra, {t['changed']} changed "
      f"of {t['live_rows']} rows; keys read: {t['fetched_rows']}, narrowing steps: {t['levels']}")
PY
echo "table scans: $ROWS rows, $TABLE_BYTES bytes; dump $(stat -c %s "$W/scans.dump") bytes; $PAIRS A/B pairs, medians"
for name in pg_dump_table drctl_diff; do
  echo "$name: ${T[$name]}"
  eval "M_$name=$(echo "${T[$name]}" | tr ' ' '\n' | grep . | median)"
done
printf "median pg_dump -t scans %.2f s, drctl diff %.2f s, ratio diff/dump %.2f\n" \
  "$M_pg_dump_table" "$M_drctl_diff" "$(calc "$M_drctl_diff / $M_pg_dump_table")"
