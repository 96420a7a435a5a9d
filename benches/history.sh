#!/usr/bin/env bash
# Throughput with a large history vs an empty store, end to end, on one backend:
#   benches/history.sh --backend sqlite|postgres [--orders 1000000] [--duration 15s]
#                      [--clients 16] [--reads 5s] [--only empty|history]
# 1. empty: a fresh store, `bounded serve`, `bounded bench` (--clients, --duration).
# 2. history: a fresh store; a short `bounded bench` creates the catalog (its customers have
#    ample credit, its products ample stock); the server stops; `bounded seed-history
#    --orders N` bulk-writes N settled orders into every module's store (timed; Postgres then
#    gets VACUUM ANALYZE, as autovacuum would soon do); the server starts again and the same
#    `bounded bench` runs on top of the history.
# After each bench: settle, peak RSS, and short wrk runs of two reads over the stored orders.
# Prints every figure with the CPU pressure (PSI "some avg10"). Stops the server and removes
# every store at the end. Run from the workspace root after `cargo build --release -p app`.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

BACKEND=sqlite ORDERS=1000000 DURATION=15s CLIENTS=16 READS=5s ONLY=
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND=$2; shift 2 ;;
    --orders) ORDERS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --reads) READS=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -x "$BOUNDED" ] || die "$BOUNDED is missing: cargo build --release -p app"
trap cleanup EXIT

store_size() {
  case "$BACKEND" in
    sqlite) du -sm "$WORK/data" | awk '{ print $1 " MiB" }' ;;
    postgres) psql "$PG_ADMIN/postgres" -qAtc "SELECT pg_size_pretty(pg_database_size('$PG_DB'))" ;;
  esac
}

measure() { # label
  local p json
  p=$(psi)
  json="$WORK/bench.json"
  "$BOUNDED" bench --url "$URL" --duration "$DURATION" --clients "$CLIENTS" --json "$json" 2>"$WORK/bench.log" >/dev/null \
    || { tail -n 5 "$WORK/bench.log" "$WORK/server.log" >&2; die "bench failed"; }
  local p_after=$(psi)
  jq -r --arg l "$1" --arg p "$p/$p_after" \
    '"\($l): \(.confirmed_per_s * 10 | round / 10) confirmed/s, \(.placed) placed, \(.errors) errors, place→terminal ms p50 \(.place_to_terminal_ms.p50 * 10 | round / 10) p99 \(.place_to_terminal_ms.p99 * 10 | round / 10) (cpu psi before/after \($p))"' "$json"
  settle 600
  echo "  peak RSS (VmHWM) $(mib "$(proc_kb VmHWM)") MiB, store $(store_size)"
  if command -v wrk >/dev/null && [ "$READS" != 0 ]; then
    curl -sf "$URL/orders?limit=500" | jq -r '.items[].id' >"$WORK/orders.ids"
    curl -sf "$URL/orders?limit=500" | jq -r '.items[].customer_id' | sort -u >"$WORK/customers.ids"
    for spec in "GET /orders/{id}|$WORK/orders.ids|/orders/%s" \
                "GET /order-summaries?customer_id=&status=CONFIRMED|$WORK/customers.ids|/order-summaries?customer_id=%s&status=CONFIRMED"; do
      IFS='|' read -r name ids pattern <<<"$spec"
      out=$(IDS_FILE=$ids PATH_PATTERN=$pattern wrk -t1 -c4 -d"$READS" --latency -s benches/read-ids.lua "$URL" 2>&1)
      printf '  %-50s %9s req/s  p50 %8s  p99 %8s  (psi %s)\n' "$name" \
        "$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")" \
        "$(awk '$1 == "50%" { print $2 }' <<<"$out")" "$(awk '$1 == "99%" { print $2 }' <<<"$out")" "$(psi)"
    done
  fi
}

echo "# history: backend $BACKEND, commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ), bench $CLIENTS clients × $DURATION"
if [ "$ONLY" != history ]; then
  fresh_store
  start_server
  measure "empty store"
  cleanup
fi
if [ "$ONLY" != empty ]; then
  fresh_store
  start_server
  "$BOUNDED" bench --url "$URL" --duration 2s --clients 4 >/dev/null 2>&1
  settle 120
  stop_server
  p=$(psi)
  start=$(date +%s.%N)
  "$BOUNDED" seed-history "${STORAGE[@]}" --orders "$ORDERS" 2>"$WORK/seed.log" | tail -1
  end=$(date +%s.%N)
  echo "seed-history --orders $ORDERS: $(awk -v s="$start" -v e="$end" -v n="$ORDERS" 'BEGIN { printf "%.1f s, %.0f orders/s", e - s, n / (e - s) }') (cpu psi before/after $p/$(psi)); store $(store_size)"
  if [ "$BACKEND" = postgres ]; then
    start=$(date +%s.%N)
    psql "$PG_ADMIN/$PG_DB" -qAtc "VACUUM ANALYZE" >/dev/null
    echo "VACUUM ANALYZE: $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f s", e - s }')"
  fi
  start_server
  echo "  idle RSS after start on the history: $(mib "$(proc_kb VmRSS)") MiB"
  measure "$ORDERS orders stored"
  cleanup
fi
