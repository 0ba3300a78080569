#!/usr/bin/env bash
# benches/run.sh: the etlworks-agent throughput benchmark, end to end and idempotent.
#
# Builds the release binaries (etlworks-agent and the benchmark's HTTP API, bench-api), makes
# sure the project-local venv /work/main/.venv has dlt (installed with pip only when missing),
# makes sure GNU time is there for peak-RSS figures, then runs benches/bench.py, which generates
# the data, runs each load with etlworks-agent, psql \copy and dlt, and prints the table.
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth, database test) unless PGHOST,
# PGPORT and PGUSER say otherwise. See benches/README.md.
#
#   benches/run.sh                         1,000,000 rows; memory check at 1M and 5M rows
#   benches/run.sh --quick                 100,000 rows; memory check at 100k and 500k rows
#   benches/run.sh --rows N --memory-rows "N1 N2"
#   benches/run.sh --skip-dlt | --loads csv,api,pg | --show-logs | --keep | --json-out FILE
set -euo pipefail

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

rows=1000000
memory_rows="1000000 5000000"
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rows) rows="${2:?--rows needs a number}"; shift 2 ;;
        --memory-rows) memory_rows="${2?--memory-rows needs a list, e.g. \"1000000 5000000\"}"; shift 2 ;;
        --quick) rows=100000; memory_rows="100000 500000"; shift ;;
        --loads | --json-out | --python) extra+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
        --skip-dlt | --show-logs | --keep) extra+=("$1"); shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "run.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done

say() { printf '[run.sh] %s\n' "$*" >&2; }

# PostgreSQL must be reachable before anything slow happens.
if ! command -v psql >/dev/null; then
    say "psql is not installed: apt-get install postgresql-client (and a server on 127.0.0.1:5432)"
    exit 1
fi
export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
if ! psql -X -q -d test -c 'select 1' >/dev/null 2>&1; then
    say "cannot connect to PostgreSQL at $PGHOST:$PGPORT as $PGUSER, database 'test'"
    say "start it (scripts/services does) or set PGHOST/PGPORT/PGUSER"
    exit 1
fi

# GNU time gives each tool's peak RSS; install it when missing (Debian package 'time').
if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing GNU time for peak-RSS figures"
        apt-get install -y -q time >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q time >/dev/null 2>&1; } \
            || say "could not install GNU time: peak RSS will come from wait4() (an upper bound)"
    else
        say "GNU time is missing: peak RSS will come from wait4() (an upper bound)"
    fi
fi

say "building release binaries (etlworks-agent, bench-api)"
cargo build --release -q -p etlworks-agent -p bench-api

# The project-local venv with dlt; pip runs only when something is missing.
venv="$repo/.venv"
if [ ! -x "$venv/bin/python" ]; then
    say "creating $venv"
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import dlt, psycopg2, sqlalchemy' >/dev/null 2>&1; then
    say "installing dlt[postgres,sqlalchemy] and psycopg2-binary into $venv"
    if ! "$venv/bin/pip" install --disable-pip-version-check --no-cache-dir -q \
        'dlt[postgres,sqlalchemy]' psycopg2-binary; then
        say "pip could not install dlt: the dlt rows will be reported as missing (--skip-dlt)"
        extra+=(--skip-dlt)
    fi
fi

say "running benches/bench.py --rows $rows --memory-rows \"$memory_rows\" ${extra[*]:-}"
exec "$venv/bin/python" "$repo/benches/bench.py" --rows "$rows" --memory-rows "$memory_rows" "${extra[@]}"
