#!/usr/bin/env bash
# What Postgres does per confirmed order (issue 13): Bounded against the single-transaction
# baseline, alternating, each run on a fresh database, counted by pg_stat_statements:
#   benches/pgwork.sh [--rounds 1] [--duration 15s] [--clients 16] [--top 15] [--before OLD]
# Per confirmed order: WAL records and bytes, rows read or written, shared buffer hits,
# statements, and the statements' execution time (which includes lock waits). Then the top
# statements of each side's last run by total execution time. With --before, OLD_BINARY's
# `serve` runs first in each round.
#
# pg_stat_statements must be loaded (it is not by default, and loading it needs a restart):
#   psql postgres://postgres@127.0.0.1:5432/postgres -c \
#     "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
#   pg_ctlcluster --skip-systemctl-redirect 15 main restart
#   psql postgres://postgres@127.0.0.1:5432/postgres -c "CREATE EXTENSION pg_stat_statements"
# (`ALTER SYSTEM RESET shared_preload_libraries` and a restart undo it.)
# Run from the workspace root after `cargo build --release -p app`.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

BACKEND=postgres ROUNDS=1 DURATION=15s CLIENTS=16 TOP=15 BEFORE=
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --top) TOP=$2; shift 2 ;;
    --before) BEFORE=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -x "$BOUNDED" ] || die "$BOUNDED is missing: cargo build --release -p app"
[ -z "$BEFORE" ] || [ -x "$BEFORE" ] || die "$BEFORE is not an executable"
psql "$PG_ADMIN/postgres" -qAtc "SELECT 1 FROM pg_stat_statements LIMIT 1" >/dev/null 2>&1 \
  || die "pg_stat_statements is not loaded and created in database postgres: see the header of $0"
AFTER=$BOUNDED
trap cleanup EXIT

SIDES=("Bounded|serve" "baseline|baseline")
[ -z "$BEFORE" ] || SIDES=("before|serve" "${SIDES[@]}")
TOPS=$(mktemp -d "${TMPDIR:-/tmp}/pgwork.XXXXXX")

# The statements of the current bench database, as a CTE.
statements="WITH t AS (SELECT s.* FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
                       WHERE d.datname = :'db')"

run_one() { # round, label, server subcommand
  local round=$1 label=$2 command=$3 json
  fresh_store
  start_server "$command"
  psql "$PG_ADMIN/postgres" -qAtc "SELECT pg_stat_statements_reset()" >/dev/null
  json="$WORK/bench.json"
  "$AFTER" bench --url "$URL" --duration "$DURATION" --clients "$CLIENTS" --json "$json" \
    >"$WORK/bench.out" 2>"$WORK/bench.log" \
    || { tail -n 5 "$WORK/bench.log" "$WORK/server.log" >&2; die "bench failed"; }
  local confirmed rate
  confirmed=$(jq '.confirmed' "$json")
  rate=$(jq '.confirmed_per_s * 10 | round / 10' "$json")
  psql "$PG_ADMIN/postgres" -qAt -F'|' -v db="$PG_DB" -v n="$confirmed" <<SQL | sed "s/^/|$round|$label|$rate|/; s/\$/|/"
$statements
SELECT round(sum(wal_records) / :n, 1), round(sum(wal_bytes) / :n), round(sum(rows)::numeric / :n, 1),
       round(sum(shared_blks_hit)::numeric / :n, 1), round(sum(calls)::numeric / :n, 1),
       round((sum(total_exec_time) / :n)::numeric, 3)
FROM t
SQL
  psql "$PG_ADMIN/postgres" -qA -F'|' -v db="$PG_DB" -v n="$confirmed" -v top="$TOP" \
    >"$TOPS/$label" <<SQL
$statements
SELECT round((total_exec_time / :n)::numeric, 3) AS "exec ms/order",
       round(calls::numeric / :n, 2) AS "calls/order",
       round(wal_records::numeric / :n, 1) AS "WAL records/order",
       round(rows::numeric / :n, 1) AS "rows/order",
       left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS statement
FROM t ORDER BY total_exec_time DESC LIMIT :top
SQL
  cleanup
}

echo "# pgwork: commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ), $ROUNDS rounds, $CLIENTS clients × $DURATION"
echo "Per confirmed order:"
echo "|round|server|confirmed/s|WAL records|WAL bytes|rows|buffer hits|statements|exec ms|"
echo "|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for side in "${SIDES[@]}"; do
    IFS='|' read -r label command <<<"$side"
    BOUNDED=$AFTER
    [ "$label" = before ] && BOUNDED=$BEFORE
    run_one "$round" "$label" "$command"
  done
done
for side in "${SIDES[@]}"; do
  label=${side%%|*}
  echo
  echo "Top statements, $label (last round):"
  sed 's/^/|/; s/$/|/' "$TOPS/$label" | sed '2i|---|---|---|---|---|' | grep -v '^|([0-9]* rows)|$'
done
rm -rf "$TOPS"
