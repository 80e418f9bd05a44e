#!/usr/bin/env bash
# Run every fuzz target for a bounded time (default 60 s each): the parsers of untrusted
# bytes (stream header and chunk framing, key and identity files, wrapped keys, manifests,
# dr-repo.json, the pg_dump archive inspector, the tar counter, age files).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`, from crates.io). libFuzzer needs nightly
# compiler flags; on a stable toolchain RUSTC_BOOTSTRAP=1 unlocks them. Crashes are saved
# under fuzz/artifacts/<target>/ and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
if ! cargo fuzz --help >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is missing; install it with: cargo install cargo-fuzz" >&2
  exit 1
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
cargo fuzz build --fuzz-dir fuzz
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz: $t for ${secs}s" >&2
  if ! cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>"fuzz/$t.log"; then
    echo "fuzz: $t FAILED; see fuzz/$t.log and fuzz/artifacts/$t/" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|Done" "fuzz/$t.log" | tail -n 2 >&2 || true
  fi
done
exit $status
