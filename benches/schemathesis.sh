#!/usr/bin/env bash
# Conformance of the service to its own OpenAPI document, with schemathesis
# (`pip install schemathesis`):
#   benches/schemathesis.sh [--backend sqlite|postgres] [--max-examples 30] [--seed N]
# Starts `bounded serve` on a fresh store and runs `schemathesis run …/openapi.json --checks all`
# against it; the request timeout and response-time limit leave room for the long polls
# (`timeout_ms` up to 60 s).
# Run from the workspace root after `cargo build -p app` (BOUNDED=target/debug/bounded) or
# `cargo build --release -p app`.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

BACKEND=sqlite EXAMPLES=30 SEED=1
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND=$2; shift 2 ;;
    --max-examples) EXAMPLES=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
command -v schemathesis >/dev/null || die "schemathesis is not installed (pip install schemathesis)"
[ -x "$BOUNDED" ] || die "$BOUNDED is missing: cargo build --release -p app"

trap cleanup EXIT
fresh_store
start_server
schemathesis run "$URL/openapi.json" --checks all --max-examples "$EXAMPLES" --seed "$SEED" \
  --workers 2 --request-timeout 65 --max-response-time 65
