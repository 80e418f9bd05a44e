#!/usr/bin/env bash
# The whole test suite: prerequisites, formatting, lints, and every test (real throwaway
# PostgreSQL clusters included). This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/prereqs.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
cargo test --workspace --all-features
