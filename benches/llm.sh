#!/usr/bin/env bash
# benches/llm.sh: what the server adds to an LLM provider's stream (issue 5), idempotent.
#
# Builds the release etlworks-agent and bench-api (which plays a paced OpenAI-compatible model),
# then runs benches/llm_overhead.py: time to first token and tokens/s straight from the provider
# and through `serve --llm openai`, at 1 and 200 streams at once. See benches/README.md.
#
#   benches/llm.sh                       100 sequential streams, 3 rounds of 200 at once
#   benches/llm.sh --json-out FILE       also write the figures as JSON
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
ulimit -n 65536 2>/dev/null || true
echo "[llm.sh] building release binaries" >&2
cargo build --release --locked -q -p etlworks-agent -p bench-api
exec python3 benches/llm_overhead.py "$@"
