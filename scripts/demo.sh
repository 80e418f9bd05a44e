#!/usr/bin/env bash
# The quick start: installs PostgreSQL server binaries if missing, then runs `drctl demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo run --release --bin drctl -- demo "$@"
