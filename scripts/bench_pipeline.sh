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

for i in $(seq "$REPS"); do
  echo "pair $i: drctl bench pipeline" >&2
  "$DRCTL" --json bench pipeline --input "$W/input" --codecs "$CODECS" \
    --ciphers aes-256-gcm,chacha20-poly1305 > "$W/dr.$i.json"
  if [ -n "${DRCTL_SYSTEM_ZSTD:-}" ]; then
    echo "pair $i: drctl bench pipeline on the system's libzstd" >&2
    "$DRCTL_SYSTEM_ZSTD" --json bench pipeline --input "$W/input" --codecs "$CODECS" \
      --ciphers aes-256-gcm > "$W/drsys.$i.json"
  fi
  echo "pair $i: zstd -b (levels $LEVELS, whole and -B1048576), openssl speed" >&2
  # dr's zstd writes independent frames of 1 MiB (FORMAT.md): the same work is zstd -b of
  # independent 1 MiB chunks, -B1048576. Only the levels dr measures (-b1 -e9 spent most
  # of its time on levels 4-8).
  : > "$W/zstd.$i.txt"; : > "$W/zstdB.$i.txt"
  for l in $LEVELS; do
    "$ZSTD" -b"$l" -e"$l" -i2 "$W/input" 2>/dev/null >> "$W/zstd.$i.txt"
    "$ZSTD" -b"$l" -e"$l" -i2 -B1048576 "$W/input" 2>/dev/null >> "$W/zstdB.$i.txt"
  done
  for c in aes-256-gcm chacha20-poly1305; do
    openssl speed -elapsed -evp "$c" -bytes 65536 -seconds 3 2>/dev/null | grep -i "^$c" > "$W/openssl.$c.$i.txt"
  done
done
uptime >&2

python3 - "$W" "$REPS" "$LEVELS" "${DRCTL_SYSTEM_ZSTD:+sys}" <<'PY'
import json, os, re, statistics, subprocess, sys
w, reps, levels = sys.argv[1], int(sys.argv[2]), [int(l) for l in sys.argv[3].split()]
med = statistics.median
dr = [json.load(open(f"{w}/dr.{i}.json")) for i in range(1, reps + 1)]
drsys = [json.load(open(f"{w}/drsys.{i}.json")) for i in range(1, reps + 1)] if sys.argv[4:] == ["sys"] else None
def dr_fig(codec, cipher, key, runs=None):
    vals = []
    for run in runs or dr:
        r = next(r for r in run if r["codec"] == codec and r["cipher"] == cipher)
        v = r
        for k in key.split("."):
            v = v[k]
        vals.append(v)
    return med(vals)
# zstd -b (1.5) prints one line per level: progress updates separated by '\r', the last
# complete one "... -> 190000000 (x2.695),  400.1 MB/s, 1500.2 MB/s", then " 3#".
def zstd_runs(prefix):
    zs = {}
    for i in range(1, reps + 1):
        for line in open(f"{w}/{prefix}.{i}.txt", newline="\n"):
            level = re.search(r"(\d+)#\s*$", line)
            found = re.findall(r"\(x([\d.]+)\),\s*([\d.]+) MB/s,\s*([\d.]+) MB/s", line)
            if level and found:
                zs.setdefault(int(level.group(1)), []).append(tuple(float(x) for x in found[-1]))
    return zs
print(f"input: first {dr[0][0]['input_bytes']:,} bytes; {reps} pairs; medians")
print(subprocess.run([os.environ.get("ZSTD", "zstd"), "--version"], capture_output=True, text=True).stdout.strip())
for prefix, title in [("zstdB", "zstd -b -B1048576 (independent 1 MiB chunks, as dr's frames)"),
                      ("zstd", "zstd -b (the whole input as one frame)")]:
    zs = zstd_runs(prefix)
    print()
    print(f"against {title}:")
    print("| level | dr ratio | zstd ratio | dr compress MB/s | zstd MB/s | dr/zstd | dr decompress MB/s | zstd MB/s | dr/zstd |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for l in levels:
        c = f"zstd:{l}"
        z = zs.get(l, [])
        zr, zc, zd = (med([t[k] for t in z]) for k in range(3))
        dr_ratio = dr_fig(c, "aes-256-gcm", "ratio")
        dc = dr_fig(c, "aes-256-gcm", "stages.compress")
        dd = dr_fig(c, "aes-256-gcm", "stages.decompress")
        print(f"| {l} | {dr_ratio:.3f} | {zr:.3f} | {dc:.0f} | {zc:.0f} | {dc/zc:.2f} | {dd:.0f} | {zd:.0f} | {dd/zd:.2f} |")
    if drsys and prefix == "zstdB":
        print()
        print("dr linked to the system's libzstd (the CLI's library) against the same zstd -b -B1048576:")
        print("| level | dr ratio | dr compress MB/s | zstd MB/s | dr/zstd | dr decompress MB/s | zstd MB/s | dr/zstd |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for l in levels:
            c = f"zstd:{l}"
            zc, zd = (med([t[k] for t in zs.get(l, [])]) for k in (1, 2))
            dc = dr_fig(c, "aes-256-gcm", "stages.compress", drsys)
            dd = dr_fig(c, "aes-256-gcm", "stages.decompress", drsys)
            print(f"| {l} | {dr_fig(c, 'aes-256-gcm', 'ratio', drsys):.3f} | {dc:.0f} | {zc:.0f} | {dc/zc:.2f} | {dd:.0f} | {zd:.0f} | {dd/zd:.2f} |")
print()
print("| cipher | dr encrypt MB/s (64 KiB chunks) | openssl speed -bytes 65536 MB/s | dr/openssl |")
print("|---|---:|---:|---:|")
for cipher in ["aes-256-gcm", "chacha20-poly1305"]:
    o = []
    for i in range(1, reps + 1):
        line = open(f"{w}/openssl.{cipher}.{i}.txt").read().split()
        o.append(float(line[-1].rstrip("k")) * 1000 / 1e6)
    # dr's encryption figure on each codec's output; zstd:1's (the default) is reported.
    de = dr_fig("zstd:1", cipher, "stages.encrypt")
    print(f"| {cipher} | {de:.0f} | {med(o):.0f} | {de/med(o):.2f} |")
print()
print("| setting | ratio | backup MB/s | restore MB/s | CPU s/GB | peak MiB |")
print("|---|---:|---:|---:|---:|---:|")
for r in dr[0]:
    c, k = r["codec"], r["cipher"]
    peak = [x["peak_memory_bytes"] for run in dr for x in run if x["codec"] == c and x["cipher"] == k]
    peak = med([p for p in peak if p is not None]) / 1048576 if any(p is not None for p in peak) else float("nan")
    print(f"| {c} + {k} | {dr_fig(c, k, 'ratio'):.3f} | {dr_fig(c, k, 'mb_per_s'):.0f} | {dr_fig(c, k, 'restore_mb_per_s'):.0f} | {dr_fig(c, k, 'cpu_seconds_per_gb'):.1f} | {peak:.1f} |")
PY
