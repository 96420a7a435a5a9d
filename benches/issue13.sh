#!/usr/bin/env bash
# What an order pays (issue 13): Bounded against the single-transaction baseline, alternating,
# on one backend, every run on a fresh store, both servers counting their statements:
#   benches/issue13.sh --backend sqlite|postgres [--rounds 3] [--duration 15s] [--clients 16]
#                      [--overhead] [--before OLD_BINARY]
# Each round runs `bounded serve --count-statements`, then `bounded baseline
# --count-statements`, each measured by `bounded bench` (closed loop), which reports
# confirmed orders/s, latency, and per confirmed order the statements, commits and server CPU
# it scraped from the server's /metrics. With --overhead the pair is instead `serve` with and
# without --count-statements: the cost of counting. With --before, each round first runs
# OLD_BINARY's `serve --count-statements` ("before"), so that an optimisation is measured
# before and after in the same run, beside the baseline.
# Prints one row per run (markdown) with the peak RSS (VmHWM) of the server and the CPU
# pressure (PSI "some avg10") and load average before and after, then the median of each side.
# Run from the workspace root after `cargo build --release -p app`.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

BACKEND=sqlite ROUNDS=3 DURATION=15s CLIENTS=16 OVERHEAD= BEFORE=
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) BACKEND=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --overhead) OVERHEAD=1; shift ;;
    --before) BEFORE=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
[ -x "$BOUNDED" ] || die "$BOUNDED is missing: cargo build --release -p app"
[ -z "$BEFORE" ] || [ -x "$BEFORE" ] || die "$BEFORE is not an executable"
AFTER=$BOUNDED
trap cleanup EXIT

if [ -n "$OVERHEAD" ]; then
  SIDES=("counting|serve --count-statements" "not counting|serve")
else
  SIDES=("Bounded|serve --count-statements" "baseline|baseline --count-statements")
  [ -z "$BEFORE" ] || SIDES=("before|serve --count-statements" "${SIDES[@]}")
fi
ROWS=$(mktemp "${TMPDIR:-/tmp}/issue13.XXXXXX")
load() { cut -d' ' -f1 /proc/loadavg; }

run_one() { # round, label, server command and flags
  local round=$1 label=$2; shift 2
  fresh_store
  start_server "$@"
  local before="$(psi) / $(load)" json="$WORK/bench.json"
  "$AFTER" bench --url "$URL" --duration "$DURATION" --clients "$CLIENTS" --json "$json" \
    >"$WORK/bench.out" 2>"$WORK/bench.log" \
    || { tail -n 5 "$WORK/bench.log" "$WORK/server.log" >&2; die "bench failed"; }
  local after="$(psi) / $(load)" hwm
  hwm=$(mib "$(proc_kb VmHWM)")
  jq -r --arg b "$BACKEND" --arg r "$round" --arg l "$label" --arg hwm "$hwm" \
     --arg before "$before" --arg after "$after" '
    def r(d): if . == null then "not counted" else (. * pow(10; d) | round / pow(10; d) | tostring) end;
    [$b, $r, $l, (.confirmed_per_s | r(1)), (.place_to_terminal_ms.p50 | r(1)),
     (.place_to_terminal_ms.p99 | r(1)), (.server.statements_per_order | r(1)),
     (.server.commits_per_order | r(2)), (.server.cpu_ms_per_order | r(2)),
     (.server.orders_per_cpu_second | r(0)), $hwm, (.errors | tostring), $before, $after]
    | join("\t")' "$json" | tee -a "$ROWS" | tr '\t' '|' | sed 's/^/|/; s/$/|/'
  cleanup
}

echo "# issue13: backend $BACKEND, commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ), $ROUNDS rounds, $CLIENTS clients × $DURATION"
echo "|backend|round|server|confirmed/s|p50 ms|p99 ms|statements/order|commits/order|CPU ms/order|orders per CPU s|peak RSS MiB|errors|PSI / load before|PSI / load after|"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
  for side in "${SIDES[@]}"; do
    IFS='|' read -r label command <<<"$side"
    BOUNDED=$AFTER
    [ "$label" = before ] && BOUNDED=$BEFORE
    # shellcheck disable=SC2086 # the command is a subcommand and its flags
    run_one "$round" "$label" $command
  done
done

echo
echo "medians:"
for side in "${SIDES[@]}"; do
  label=${side%%|*}
  awk -F'\t' -v l="$label" '
    $3 == l { k++; for (c = 4; c <= 11; c++) v[c, k] = $c }
    function median(c,   i, j, t) {
      for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++)
        if (v[c, j] + 0 < v[c, i] + 0) { t = v[c, i]; v[c, i] = v[c, j]; v[c, j] = t }
      return (k % 2) ? v[c, (k + 1) / 2] : (v[c, k / 2] + v[c, k / 2 + 1]) / 2
    }
    END { printf "  %-12s confirmed/s %s, p50 %s, p99 %s ms, statements/order %s, commits/order %s, CPU ms/order %s, orders per CPU s %s, peak RSS %s MiB\n", l, median(4), median(5), median(6), median(7), median(8), median(9), median(10), median(11) }' "$ROWS"
done
rm -f "$ROWS"
