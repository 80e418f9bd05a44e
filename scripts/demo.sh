#!/usr/bin/env bash
# The quick start: installs PostgreSQL server binaries if missing (nothing the tests alone
# need: no S3/Azure test servers, no age), then runs `drctl demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh --demo
cargo run --release --bin drctl -- demo "$@"
