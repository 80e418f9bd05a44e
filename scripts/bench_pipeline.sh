#!/usr/bin/env bash
# `drctl bench pipeline` beside `zstd -b` and `openssl speed` on the same input, alternating
# A B A B in one run, medians and ratios. Results go in BENCHMARKS.md.
#
# Usage: scripts/bench_pipeline.sh FILE [MB] [REPS]
#   FILE: e.g. a `pg_dump -Fc -Z0` archive of the scale-10 sample (../shared/bench/gen_qr_db.sh);
#   MB:   the first MB (10^6 bytes) of it are measured by every tool (default 512);
#   REPS: pairs (default 3).
# On a shared machine run it as `nice -n -19 scripts/bench_pipeline.sh …` (every tool gets
# the same priority over the other work; say so beside the figures).
# Env:  DRCTL (default target/release/drctl, built if missing), BENCH_DIR (scratch directory),
#       DRCTL_SYSTEM_ZSTD: a drctl linked to the system's libzstd, the library the zstd CLI
#       uses, to tell the measurement apart from the library version (build it with
#       `apt-get install -y libzstd-dev pkg-config; ZSTD_SYS_USE_PKG_CONFIG=1
#       CARGO_TARGET_DIR=/tmp/tgt-syszstd cargo build --release --bin drctl`),
#       ZSTD: the zstd CLI to compare with (default `zstd`). Debian 12's zstd binary carries
#       its own copy of libzstd 1.5.4 and compresses level 1 at half the speed of the same
#       library called from C or from dr; upstream's CLI of the libzstd dr links (1.5.7)
#       does not. Build it from Debian's source pool:
#         curl -O http://deb.debian.org/debian/pool/main/libz/libzstd/libzstd_1.5.7+dfsg.orig.tar.xz
#         tar xf libzstd_1.5.7+dfsg.orig.tar.xz && make -C zstd-1.5.7/programs zstd
set -euo pipefail
cd "$(dirname "$0")/.."
FILE=${1:?usage: scripts/bench_pipeline.sh FILE [MB] [REPS]}
MB=${2:-512}
REPS=${3:-3}
W=${BENCH_DIR:-/tmp/dr-bench-pipeline}
mkdir -p "$W"
ZSTD=${ZSTD:-zstd}
command -v "$ZSTD" >/dev/null || { echo "$ZSTD is missing: apt-get install -y zstd" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl is missing: apt-get install -y openssl" >&2; exit 1; }
if [ -z "${DRCTL:-}" ]; then
  cargo build --release --bin drctl >&2
  DRCTL=$PWD/target/release/drctl
fi
head -c "$((MB * 1000000))" "$FILE" > "$W/input"
LEVELS="1 3 9"
CODECS=$(for l in $LEVELS; do printf "zstd:%s," "$l"; done | sed 's/,$//')

# Each figure is paired with its anchor measured right after it (one codec level or one
# cipher at a time, a few seconds apart), and the ratio is taken within each pair: on a
# shared VM a tool's speed drifts by ±20 % over minutes, which coarse pairs (every dr
# setting, then every zstd level) turned into disagreement.
for i in $(seq "$REPS"); do
  : > "$W/zstd.$i.txt"; : > "$W/zstdB.$i.txt"
  for l in $LEVELS; do
    echo "pair $i, zstd level $l: drctl bench pipeline, zstd -b -B1048576, zstd -b" >&2
    "$DRCTL" --json bench pipeline --input "$W/input" --codecs "zstd:$l" \
      --ciphers aes-256-gcm > "$W/dr.zstd$l.$i.json" 2>/dev/null
    if [ -n "${DRCTL_SYSTEM_ZSTD:-}" ]; then
      "$DRCTL_SYSTEM_ZSTD" --json bench pipeline --input "$W/input" --codecs "zstd:$l" \
        --ciphers aes-256-gcm > "$W/drsys.zstd$l.$i.json" 2>/dev/null
    fi
    # dr's zstd writes independent frames of 1 MiB (FORMAT.md): the same work is zstd -b of
    # independent 1 MiB chunks, -B1048576.
    "$ZSTD" -b"$l" -e"$l" -i2 -B1048576 "$W/input" 2>/dev/null >> "$W/zstdB.$i.txt"
    "$ZSTD" -b"$l" -e"$l" -i2 "$W/input" 2>/dev/null >> "$W/zstd.$i.txt"
  done
  for c in aes-256-gcm chacha20-poly1305; do
    echo "pair $i, $c: drctl bench pipeline, openssl speed" >&2
    "$DRCTL" --json bench pipeline --input "$W/input" --codecs none \
      --ciphers "$c" > "$W/dr.$c.$i.json" 2>/dev/null
    openssl speed -elapsed -evp "$c" -bytes 65536 -seconds 3 2>/dev/null | grep -i "^$c" > "$W/openssl.$c.$i.txt"
  done
done
echo "the settings table: every setting once" >&2
"$DRCTL" --json bench pipeline --input "$W/input" --codecs "$CODECS" \
  --ciphers aes-256-gcm,chacha20-poly1305 > "$W/dr.all.json" 2>/dev/null
uptime >&2

python3 - "$W" "$REPS" "$LEVELS" "${DRCTL_SYSTEM_ZSTD:+sys}" <<'PY'
import json, os, re, statistics, subprocess, sys
w, reps, levels = sys.argv[1], int(sys.argv[2]), [int(l) for l in sys.argv[3].split()]
sysz = sys.argv[4:] == ["sys"]
med = statistics.median
def dr(name, i):
    return json.load(open(f"{w}/{name}.{i}.json"))[0]
# zstd -b (1.5) prints one line per level: progress updates separated by '\r', the last
# complete one "... -> 190000000 (x2.695),  400.1 MB/s, 1500.2 MB/s", then " 3#".
def zstd_run(prefix, i):
    out = {}
    for line in open(f"{w}/{prefix}.{i}.txt", newline="\n"):
        level = re.search(r"(\d+)#\s*$", line)
        found = re.findall(r"\(x([\d.]+)\),\s*([\d.]+) MB/s,\s*([\d.]+) MB/s", line)
        if level and found:
            out[int(level.group(1))] = tuple(float(x) for x in found[-1])
    return out
def openssl(cipher, i):
    line = open(f"{w}/openssl.{cipher}.{i}.txt").read().split()
    return float(line[-1].rstrip("k")) * 1000 / 1e6
pairs = range(1, reps + 1)
print(f"input: first {json.load(open(f'{w}/dr.all.json'))[0]['input_bytes']:,} bytes; {reps} pairs; medians of the figures and of the per-pair ratios")
print(subprocess.run([os.environ.get("ZSTD", "zstd"), "--version"], capture_output=True, text=True).stdout.strip())
def zstd_table(prefix, title, drname):
    print()
    print(f"{title}:")
    print("| level | dr ratio | zstd ratio | dr compress MB/s | zstd MB/s | dr/zstd (per pair) | dr decompress MB/s | zstd MB/s | dr/zstd (per pair) |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---|")
    for l in levels:
        rows = [(dr(f"{drname}.zstd{l}", i), zstd_run(prefix, i)[l]) for i in pairs]
        c = [d["stages"]["compress"] / z[1] for d, z in rows]
        x = [d["stages"]["decompress"] / z[2] for d, z in rows]
        fmt = lambda v: f"**{med(v):.2f}** ({' '.join(f'{r:.2f}' for r in v)})"
        print(f"| {l} | {med(d['ratio'] for d, _ in rows):.3f} | {med(z[0] for _, z in rows):.3f} "
              f"| {med(d['stages']['compress'] for d, _ in rows):.0f} | {med(z[1] for _, z in rows):.0f} | {fmt(c)} "
              f"| {med(d['stages']['decompress'] for d, _ in rows):.0f} | {med(z[2] for _, z in rows):.0f} | {fmt(x)} |")
zstd_table("zstdB", "against zstd -b -B1048576 (independent 1 MiB chunks, as dr's frames)", "dr")
zstd_table("zstd", "against zstd -b (the whole input as one frame)", "dr")
if sysz:
    zstd_table("zstdB", "dr linked to the system's libzstd (the CLI's library) against zstd -b -B1048576", "drsys")
print()
print("| cipher | dr encrypt MB/s (64 KiB chunks) | openssl speed -bytes 65536 MB/s | dr/openssl (per pair) |")
print("|---|---:|---:|---|")
for cipher in ["aes-256-gcm", "chacha20-poly1305"]:
    rows = [(dr(f"dr.{cipher}", i)["stages"]["encrypt"], openssl(cipher, i)) for i in pairs]
    r = [d / o for d, o in rows]
    print(f"| {cipher} | {med(d for d, _ in rows):.0f} | {med(o for _, o in rows):.0f} | **{med(r):.2f}** ({' '.join(f'{v:.2f}' for v in r)}) |")
print()
print("| setting | ratio | backup MB/s | restore MB/s | CPU s/GB | peak MiB |")
print("|---|---:|---:|---:|---:|---:|")
for r in json.load(open(f"{w}/dr.all.json")):
    peak = r["peak_memory_bytes"] / 1048576 if r.get("peak_memory_bytes") is not None else float("nan")
    print(f"| {r['codec']} + {r['cipher']} | {r['ratio']:.3f} | {r['mb_per_s']:.0f} | {r['restore_mb_per_s']:.0f} | {r['cpu_seconds_per_gb']:.1f} | {peak:.1f} |")
PY
