#!/usr/bin/env bash
# benches/api.sh: the Agent API benchmark (issue 4), end to end and idempotent.
#
# Installs wrk with apt when missing, builds the release etlworks-agent and bench-api, then runs
# benches/api_bench.py: requests/s and latency of GET /tools and search_knowledge_base beside an
# axum hello-world route in the same process, time to the first streamed token, and resident
# memory idle and with 1,000 streams open. See benches/README.md.
#
#   benches/api.sh                     10 s per wrk target, 1,000 open streams, 200 streams timed
#   benches/api.sh --quick             3 s per target, 100 open streams, 20 streams timed
#   benches/api.sh --json-out FILE     also write the figures as JSON
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) extra+=(--seconds 3 --streams 100 --ttft-runs 20); shift ;;
        --json-out) extra+=(--json-out "${2:?--json-out needs a file}"); shift 2 ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "api.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done

say() { printf '[api.sh] %s\n' "$*" >&2; }

if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing wrk"
        apt-get install -y -q wrk >/dev/null 2>&1 \
            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q wrk >/dev/null 2>&1; } \
            || { say "could not install wrk (apt-get install wrk)"; exit 1; }
    else
        say "wrk is missing: install it (Debian: apt-get install wrk)"
        exit 1
    fi
fi
# 1,000 streams plus the server's own files.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

say "building release binaries"
cargo build --release --locked -q -p etlworks-agent -p bench-api
exec python3 benches/api_bench.py "${extra[@]}"
