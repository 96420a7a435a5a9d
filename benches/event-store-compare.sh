#!/usr/bin/env bash
# Event store, side by side: the payments module's store (bounded) and the cqrs-es crates
# (sqlite-es / postgres-es), same workload, same backend, one run after the other.
#
#   benches/event-store-compare.sh --backend sqlite
#   BOUNDED_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
#       benches/event-store-compare.sh --backend postgres
#
# Every other option goes to both benchmarks (see benches/common/event_store.rs), except
# `--rounds N` (default 1): N rounds, the order of the two sides alternating round by round
# (bounded first in odd rounds), each figure the median over the rounds.
#
# Builds: `cargo bench --no-run -p payments --bench event_store` in the main workspace and
# `cargo build --release` of benches/cqrs-es (its own workspace and target dir: it needs sqlx
# 0.8, the main workspace has 0.9). Prints both tables, then the ratios bounded / cqrs-es, and
# the CPU pressure (/proc/pressure/cpu) before and after.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

backend=sqlite
rounds=1
pass=()
while (($#)); do
    case "$1" in
    --backend)
        backend="${2:?--backend needs a value}"
        pass+=("$1" "$2")
        shift 2
        ;;
    --rounds)
        rounds="${2:?--rounds needs a value}"
        shift 2
        ;;
    *)
        pass+=("$1")
        shift
        ;;
    esac
done
case "$backend" in
sqlite) ;;
postgres)
    : "${BOUNDED_TEST_DATABASE_URL:?--backend postgres needs BOUNDED_TEST_DATABASE_URL (an admin URL)}"
    export BOUNDED_TEST_DATABASE_URL
    ;;
*)
    echo "unknown backend $backend; expected sqlite or postgres" >&2
    exit 2
    ;;
esac
if [[ ! ${pass[*]} =~ --backend ]]; then
    pass+=(--backend "$backend")
fi

echo "== building (release)"
cargo bench --no-run -p payments --bench event_store 2>&1 | tail -n 2
cqrs_target="$root/benches/cqrs-es/target"
cargo build --release --manifest-path benches/cqrs-es/Cargo.toml --target-dir "$cqrs_target" 2>&1 |
    tail -n 2

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

pressure() { awk '/^some/ { sub("avg10=", "", $2); print $2 }' /proc/pressure/cpu; }

run_bounded() {
    cargo bench -q -p payments --bench event_store -- "${pass[@]}" | tee "$out/bounded-$1.txt"
}
run_cqrs() {
    "$cqrs_target/release/cqrs-es-bench" "${pass[@]}" | tee "$out/cqrs-es-$1.txt"
}

echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC'), backend $backend, $rounds round(s)"
echo "cpu pressure before: some avg10=$(pressure)"
for ((round = 1; round <= rounds; round++)); do
    if ((round % 2)); then
        run_bounded "$round"
        run_cqrs "$round"
    else
        run_cqrs "$round"
        run_bounded "$round"
    fi
done
echo "cpu pressure after:  some avg10=$(pressure)"

python3 - "$out" "$rounds" <<'EOF'
import json, statistics, sys

out, rounds = sys.argv[1], int(sys.argv[2])

def figures(side):
    runs = []
    for r in range(1, rounds + 1):
        with open(f"{out}/{side}-{r}.txt") as f:
            runs.append(json.loads([l for l in f if l.startswith("{")][-1]))
    return runs

def median_rows(runs):
    rows = {}
    for run in runs:
        for row in run["rows"]:
            rows.setdefault(row["case"], []).append(row)
    return {
        case: {
            key: statistics.median(r[key] for r in rs)
            for key in ("ops_per_s", "events_per_s", "p50_ms", "p99_ms")
        } | {"state_ok": all(r["state_ok"] for r in rs)}
        for case, rs in rows.items()
    }

ours, theirs = figures("bounded"), figures("cqrs-es")
b, c = median_rows(ours), median_rows(theirs)
print(f"\nbounded / cqrs-es on {ours[0]['backend']} ({ours[0]['server']} / {theirs[0]['server']})"
      f"{', median of ' + str(rounds) + ' rounds' if rounds > 1 else ''}")
print("ops/s: above 1 = bounded faster; latency: below 1 = bounded faster")
head = f"{'case':<34} {'bounded ops/s':>13} {'cqrs-es ops/s':>13} {'ratio':>6}  " \
       f"{'p50 ms b/c':>15} {'ratio':>6}  {'p99 ms b/c':>15} {'ratio':>6}  state b/c" \
       f"{'  ops/s ratio by round' if rounds > 1 else ''}"
print(head)
def ratio(x, y):
    return f"{x / y:6.2f}" if y else "     -"
def by_round(case):
    ratios = []
    for mine, other in zip(ours, theirs):
        x = next(r for r in mine["rows"] if r["case"] == case)
        y = next(r for r in other["rows"] if r["case"] == case)
        ratios.append(ratio(x["ops_per_s"], y["ops_per_s"]).strip())
    return "    " + " ".join(ratios)
for case, x in b.items():
    y = c.get(case)
    if y is None:
        continue
    ok = lambda r: "ok" if r["state_ok"] else "WRONG"
    print(f"{case:<34} {x['ops_per_s']:>13.0f} {y['ops_per_s']:>13.0f} "
          f"{ratio(x['ops_per_s'], y['ops_per_s'])}  "
          f"{x['p50_ms']:>7.3f}/{y['p50_ms']:<7.3f} {ratio(x['p50_ms'], y['p50_ms'])}  "
          f"{x['p99_ms']:>7.3f}/{y['p99_ms']:<7.3f} {ratio(x['p99_ms'], y['p99_ms'])}  "
          f"{ok(x)}/{ok(y)}{by_round(case) if rounds > 1 else ''}")
EOF
