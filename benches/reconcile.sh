#!/usr/bin/env bash
# Reconciliation time on a large history, on one backend:
#   benches/reconcile.sh --backend sqlite|postgres [--orders 100000,1000000]
# A fresh store; a short `bounded bench` creates the catalog; the server stops. Then for each
# total in --orders (ascending): `bounded seed-history` adds settled orders up to that total
# (Postgres then gets VACUUM ANALYZE), `bounded reconcile` runs offline (wall time and peak
# RSS from /usr/bin/time), then the server starts and `GET /ops/reconciliation` is timed
# once. Prints every figure with the CPU pressure (PSI "some avg10"); removes the store at
# the end. Run from the workspace root after `cargo build --release -p app`.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

BACKEND=sqlite TOTALS=100000,1000000
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND=$2; shift 2 ;;
    --orders) TOTALS=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -x "$BOUNDED" ] || die "$BOUNDED is missing: cargo build --release -p app"
[ -x /usr/bin/time ] || die "/usr/bin/time is missing (apt-get install time)"
trap cleanup EXIT

echo "# reconcile: backend $BACKEND, commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ), nproc $(nproc), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
fresh_store
start_server
"$BOUNDED" bench --url "$URL" --duration 2s --clients 4 >/dev/null 2>&1
settle 120
stop_server
seeded=0
for total in ${TOTALS//,/ }; do
  start=$(date +%s.%N)
  "$BOUNDED" seed-history "${STORAGE[@]}" --orders $((total - seeded)) 2>"$WORK/seed.log" >/dev/null \
    || { tail -n 5 "$WORK/seed.log" >&2; die "seed-history failed"; }
  echo "seed-history --orders $((total - seeded)): $(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f s", e - s }')"
  seeded=$total
  if [ "$BACKEND" = postgres ]; then
    psql "$PG_ADMIN/$PG_DB" -qAtc "VACUUM ANALYZE" >/dev/null
  fi
  p=$(psi)
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$BOUNDED" reconcile "${STORAGE[@]}" >"$WORK/report.json" 2>"$WORK/reconcile.log" \
    || { tail -n 5 "$WORK/reconcile.log" >&2; die "reconcile failed"; }
  read -r secs kb <"$WORK/time"
  jq -r --arg s "$secs" --arg m "$(mib "$kb")" --arg p "$p/$(psi)" --arg t "$total" \
    '"\($t) seeded: bounded reconcile \($s) s, peak RSS \($m) MiB: \(.orders_checked) orders checked, \(.orders_in_flight) in flight, \(.payments_checked) payments, \(.discrepancies | length) discrepancies (cpu psi before/after \($p))"' "$WORK/report.json"
  start_server
  p=$(psi)
  rss=$(proc_kb VmRSS)
  out=$(curl -sf -o "$WORK/report.json" -w '%{time_total}' "$URL/ops/reconciliation")
  jq -r --arg s "$out" --arg p "$p/$(psi)" --arg r "$(mib "$rss")/$(mib "$(proc_kb VmHWM)")" \
    '"  GET /ops/reconciliation \($s) s: \(.orders_checked) checked, \(.discrepancies | length) discrepancies; server RSS before / peak \($r) MiB (cpu psi before/after \($p))"' "$WORK/report.json"
  stop_server
done
