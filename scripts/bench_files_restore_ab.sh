#!/usr/bin/env bash
# Does the order in which a backup fills its packs change how fast a snapshot restores?
# A snapshot made by drctl A and one made by drctl B, both restored by B, alternated three
# times (plus A restoring its own), each restored tree compared with the source.
# Usage: A=<drctl> B=<drctl> scripts/bench_files_restore_ab.sh   (BENCH_DIR: scratch dir)
set -euo pipefail
W=${BENCH_DIR:-/tmp/dr-bench-files-restore}; A=${A:?drctl A}; B=${B:?drctl B}
mkdir -p "$W"
cd $W; rm -rf src repoA repoB out
python3 "${GEN:-/work/shared/bench/gen_uploads.py}" $W/src 20000 4 1 >/dev/null
export DR_KEY_FILE=$W/dr.key DR_SIGNING_KEY=$W/admin.key DR_TRUST_DIR=$W/trust
[ -f $DR_KEY_FILE ] || $B keygen -o $DR_KEY_FILE >/dev/null 2>&1
[ -f $DR_SIGNING_KEY ] || $B keygen --signing -o $DR_SIGNING_KEY >/dev/null 2>&1
$A init --repo file://$W/repoA >/dev/null; $B init --repo file://$W/repoB >/dev/null
/usr/bin/time -f "backup A %e s %M KB" $A backup --repo file://$W/repoA --dir $W/src --dedup >/dev/null
/usr/bin/time -f "backup B %e s %M KB" $B backup --repo file://$W/repoB --dir $W/src --dedup >/dev/null
sync
for i in 1 2 3; do
  for r in A B; do
    rm -rf out; /usr/bin/time -f "restore snap-$r by B %e s %M KB" $B restore --repo file://$W/repo$r latest --dir $W/out >/dev/null
    diff -r src out >/dev/null && echo "  identical"
  done
  rm -rf out; /usr/bin/time -f "restore snap-A by A %e s %M KB" $A restore --repo file://$W/repoA latest --dir $W/out >/dev/null
done
rm -rf out src repoA repoB; uptime
