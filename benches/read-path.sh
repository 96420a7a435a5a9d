#!/usr/bin/env bash
# Read path, memory and projection rebuild, end to end, on one backend:
#   benches/read-path.sh --backend sqlite|postgres [--populate 10s] [--duration 10s]
#                        [--connections 4] [--threads 1]
# Starts `bounded serve` on a fresh store, records idle RSS, populates it with `bounded bench`
# (16 clients), waits until every subscription has caught up and records the peak RSS (VmHWM);
# then runs wrk against GET /orders/{id}, GET /order-summaries (first page, and filtered by
# customer and status), GET /orders/{id}/details (random ids over the populated orders and
# customers), records VmHWM again, rebuilds the order_summaries projection and reports its
# events/s. Stops the server and removes the store at the end. Needs wrk, curl, jq (and psql
# for Postgres). Run from the workspace root after `cargo build --release -p app`.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

BACKEND=sqlite POPULATE=10s DURATION=10s CONNECTIONS=4 THREADS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND=$2; shift 2 ;;
    --populate) POPULATE=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
command -v wrk >/dev/null || die "wrk is not installed (apt-get install -y wrk)"
[ -x "$BOUNDED" ] || die "$BOUNDED is missing: cargo build --release -p app"

trap cleanup EXIT
fresh_store
start_server
echo "# read path: backend $BACKEND, commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ), $(nproc) CPUs"
sleep 1 # let the idle server's startup allocations finish before reading RSS
echo "memory idle: VmRSS $(mib "$(proc_kb VmRSS)") MiB, VmHWM $(mib "$(proc_kb VmHWM)") MiB"

echo "populating: bounded bench --duration $POPULATE --clients 16 (cpu psi before: $(psi))"
"$BOUNDED" bench --url "$URL" --duration "$POPULATE" --clients 16 --json "$WORK/populate.json" 2>/dev/null | tail -1
settle 300
echo "memory after bench (psi $(psi)): VmRSS $(mib "$(proc_kb VmRSS)") MiB, VmHWM (peak) $(mib "$(proc_kb VmHWM)") MiB"

# Ids: every order (pages of 500) and the customers that ordered.
after=
: >"$WORK/orders.ids"
while :; do
  page=$(curl -sf "$URL/orders?limit=500${after:+&after=$after}")
  jq -r '.items[].id' <<<"$page" >>"$WORK/orders.ids"
  after=$(jq -r '.next // empty' <<<"$page")
  [ -n "$after" ] || break
done
jq -r '.items[].customer_id' <(curl -sf "$URL/orders?limit=500") | sort -u >"$WORK/customers.ids"
orders=$(wc -l <"$WORK/orders.ids")
echo "reads over $orders orders and $(wc -l <"$WORK/customers.ids") customers; wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency"
printf '%-52s %10s %9s %9s %9s %8s %6s\n' endpoint req/s p50 p90 p99 non-2xx psi
run_wrk() { # name ids-file path-pattern
  local out
  out=$(IDS_FILE=$2 PATH_PATTERN=$3 wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
    -s benches/read-ids.lua "$URL" 2>&1)
  local p=$(psi)
  local rps p50 p90 p99 bad
  rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  p90=$(awk '$1 == "90%" { print $2 }' <<<"$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  bad=$(awk '/Non-2xx/ { print $NF }' <<<"$out")
  printf '%-52s %10s %9s %9s %9s %8s %6s\n' "$1" "$rps" "$p50" "$p90" "$p99" "${bad:-0}" "$p"
}
run_wrk "GET /orders/{id}" "$WORK/orders.ids" "/orders/%s"
run_wrk "GET /order-summaries (first page, 50)" "$WORK/orders.ids" "/order-summaries"
run_wrk "GET /order-summaries?customer_id=&status=CONFIRMED" "$WORK/customers.ids" "/order-summaries?customer_id=%s&status=CONFIRMED"
run_wrk "GET /orders/{id}/details" "$WORK/orders.ids" "/orders/%s/details"
echo "memory after reads: VmRSS $(mib "$(proc_kb VmRSS)") MiB, VmHWM (peak) $(mib "$(proc_kb VmHWM)") MiB"

# Projection rebuild: synchronous; the report counts the events replayed from the sources.
p=$(psi)
report=$(curl -sf -XPOST "$URL/ops/projections/order_summaries/rebuild")
t_ms=$(jq -r '.duration_ms' <<<"$report")
events=$(jq -r '.events_replayed' <<<"$report")
echo "rebuild order_summaries (psi before $p): $events events in $t_ms ms = $(awk -v e="$events" -v t="$t_ms" 'BEGIN { printf "%.0f", e * 1000 / (t > 0 ? t : 1) }') events/s; positions $(jq -c .positions <<<"$report")"
echo "memory after rebuild: VmRSS $(mib "$(proc_kb VmRSS)") MiB, VmHWM (peak) $(mib "$(proc_kb VmHWM)") MiB"
