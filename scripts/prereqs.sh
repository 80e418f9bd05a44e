#!/usr/bin/env bash
# Makes sure the system packages dr's demo and tests need are present:
# PostgreSQL server binaries (initdb, pg_ctl, postgres) and client programs (pg_dump,
# pg_restore), plus the contrib extensions the tests use (hstore, citext, pgcrypto).
# As root it installs what is missing with apt-get; otherwise it prints the command.
set -euo pipefail

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
