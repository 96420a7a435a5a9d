# Shared helpers of the end-to-end benchmark scripts in benches/ (sourced, not run).
# They start `target/release/bounded serve` on a fresh SQLite data directory or a fresh
# Postgres database, and stop and remove it again.

BOUNDED=${BOUNDED:-target/release/bounded}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432}
PORT=${PORT:-18190}
URL="http://127.0.0.1:$PORT"
SERVER_PID=
WORK=
PG_DB=

die() { echo "error: $*" >&2; exit 1; }

# CPU pressure, "some avg10" of /proc/pressure/cpu: the share of time a task waited for a CPU.
psi() { awk '/^some/ { sub("avg10=", "", $2); print $2 "%" }' /proc/pressure/cpu; }

# kB of a /proc/<pid>/status field (VmRSS, VmHWM) of the server.
proc_kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$SERVER_PID/status"; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

# Makes a fresh store for $BACKEND: sets STORAGE (the flags of serve/seed-history/reconcile).
fresh_store() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/bounded-bench.XXXXXX")
  case "$BACKEND" in
    sqlite) STORAGE=(--data-dir "$WORK/data") ;;
    postgres)
      PG_DB="bench_$(basename "$WORK" | tr -dc 'a-zA-Z0-9' | tr 'A-Z' 'a-z')"
      psql "$PG_ADMIN/postgres" -qAtc "CREATE DATABASE $PG_DB" >/dev/null || die "cannot create $PG_DB"
      STORAGE=(--database-url "$PG_ADMIN/$PG_DB") ;;
    *) die "--backend sqlite|postgres" ;;
  esac
}

# Starts the server on the current store and waits until it is ready. Arguments, if any:
# the subcommand (default serve; `baseline` has no /ready, so readiness is its /metrics) and
# more flags.
start_server() {
  local command=${1:-serve} ready=/ready
  [ $# -gt 0 ] && shift
  [ "$command" = baseline ] && ready=/metrics
  BOUNDED_LOG=${BOUNDED_LOG:-warn} "$BOUNDED" "$command" --listen "127.0.0.1:$PORT" "${STORAGE[@]}" "$@" \
    >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    curl -sf "$URL$ready" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server exited"; }
    sleep 0.1
  done
  die "the server did not become ready"
}

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
  fi
}

# Stops the server and removes the store (data directory or database).
cleanup() {
  stop_server
  if [ -n "$PG_DB" ]; then
    psql "$PG_ADMIN/postgres" -qAtc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null
    PG_DB=
  fi
  if [ -n "$WORK" ]; then rm -rf "$WORK"; WORK=; fi
}

# Waits until every subscription has caught up (at most $1 s, in long polls of up to 60 s).
settle() {
  local until=$((SECONDS + ${1:-120}))
  while [ "$SECONDS" -lt "$until" ]; do
    curl -sf "$URL/ops/subscriptions?wait=settled&timeout_ms=60000" \
      | jq -e 'all(.[]; .lag == 0)' >/dev/null && return 0
  done
  die "subscriptions did not settle"
}
