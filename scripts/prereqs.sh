#!/usr/bin/env bash
# Makes sure the system packages dr's demo and tests need are present:
# PostgreSQL server binaries (initdb, pg_ctl, postgres) and client programs (pg_dump,
# pg_restore), plus the contrib extensions the tests use (hstore, citext, pgcrypto).
# As root it installs what is missing with apt-get; otherwise it prints the command.
#
#   scripts/prereqs.sh          everything the tests need (also age, zstd, moto, Azurite)
#   scripts/prereqs.sh --demo   only what `drctl demo` needs: PostgreSQL (scripts/demo.sh)
set -euo pipefail
demo_only=false
if [ "${1:-}" = --demo ]; then demo_only=true; fi

pg_bindir() {
  if [ -n "${DR_PG_BINDIR:-}" ]; then echo "$DR_PG_BINDIR"; return; fi
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return
  fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

have_postgres() {
  local dir; dir=$(pg_bindir)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/pg_dump" ] && [ -x "$dir/pg_restore" ] \
    && ls /usr/share/postgresql/*/extension/hstore.control >/dev/null 2>&1
}

if ! have_postgres; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "prereqs: installing PostgreSQL server binaries (apt-get install postgresql)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
  else
    echo "prereqs: PostgreSQL server binaries are missing; install them with:" >&2
    echo "    sudo apt-get install -y postgresql postgresql-contrib" >&2
    exit 1
  fi
fi

# initdb refuses to run as root; the test harness then runs the server as 'postgres'.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# The demo stops here: the rest is for the test suite only.
if $demo_only; then exit 0; fi

# The stock age CLI and zstd, for the age-format interop test (tests/keys.rs).
if ! command -v age >/dev/null 2>&1 || ! command -v zstd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "prereqs: installing age and zstd (apt-get install age zstd)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age zstd >/dev/null
  else
    echo "prereqs: the age CLI or zstd is missing; install them with:" >&2
    echo "    sudo apt-get install -y age zstd" >&2
    exit 1
  fi
fi

# promtool (tests/status.rs checks `drctl status --prometheus` with `promtool check metrics`;
# the Prometheus server scrapes a running `drctl run`) and a headless Chromium (tests/report.rs
# opens the HTML report in it and takes a screenshot).
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1 \
   || ! command -v chromium-headless-shell >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "prereqs: installing prometheus and chromium-headless-shell (apt-get install)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      prometheus chromium-headless-shell fonts-dejavu-core >/dev/null
  else
    echo "prereqs: promtool/prometheus or chromium-headless-shell is missing; install them with:" >&2
    echo "    sudo apt-get install -y --no-install-recommends prometheus chromium-headless-shell fonts-dejavu-core" >&2
    exit 1
  fi
fi

# Test servers for the cloud storage targets, installed from PyPI/npm into fixed folders the
# test harness (dr-storage's `testing` module) looks in:
#   moto's S3 server  → ${DR_TOOLS_DIR:-$HOME/.cache/dr}/moto-venv/bin/moto_server
#   Azurite (Azure)   → ${DR_TOOLS_DIR:-$HOME/.cache/dr}/azurite/node_modules/.bin/azurite-blob
DR_TOOLS_DIR=${DR_TOOLS_DIR:-$HOME/.cache/dr}
MOTO_VENV=$DR_TOOLS_DIR/moto-venv
if [ -z "${DR_MOTO_SERVER:-}" ] && [ ! -x "$MOTO_VENV/bin/moto_server" ]; then
  echo "prereqs: installing moto's S3 server into $MOTO_VENV" >&2
  mkdir -p "$DR_TOOLS_DIR"
  python3 -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q 'moto[server]==5.*' >&2
fi
AZURITE_DIR=$DR_TOOLS_DIR/azurite
if [ -z "${DR_AZURITE_BLOB:-}" ] && [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "prereqs: installing Azurite into $AZURITE_DIR" >&2
    mkdir -p "$AZURITE_DIR"
    (cd "$AZURITE_DIR" && npm install --silent --no-audit --no-fund azurite@3 >&2)
  else
    echo "prereqs: npm is missing (needed for Azurite); install it with:" >&2
    echo "    sudo apt-get install -y npm" >&2
    exit 1
  fi
fi
