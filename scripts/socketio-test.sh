#!/usr/bin/env bash
# The gateway's Socket.IO endpoint (/socket.io/, docs/SOCKETIO.md) with the
# real npm clients: socket.io-client 4.8 with its default parser and with
# socket.io-msgpack-parser, and the Node backend library (clients/node) for
# RPCs, kicks, memberships and publishes.
#
#   scripts/socketio-test.sh [test files] [node --test options, e.g. --test-name-pattern=kick]
#
# 1. `npm ci` in tests/socketio when node_modules is missing or stale (a hash
#    of the lock file and of clients/node's sources, which install-links
#    copies into node_modules, is kept in node_modules/.deps-stamp),
# 2. a redis-server with the module and two gateway nodes (gw-sio-1 and
#    gw-sio-2) on free ports, in a temporary folder,
# 3. `node --test` of tests/socketio/*.test.mjs: events.test.mjs (transports,
#    auth, broker:* events, messages across the two nodes, binary, RPC,
#    kicks, namespaces), recovery.test.mjs (nodes SIGKILLed or drained and
#    restarted under the same id and port; socket.recovered) and
#    heartbeat.test.mjs (Engine.IO pings, the idle close). The tests restart
#    nodes themselves and leave each node's pid in $DIR/gateway-N.pid.
#
# Needs the release binaries (make build; not built here), redis-server 7+,
# Node 20+ and npm. Everything started is stopped on exit, by pid; the logs
# are printed when a test failed (KEEP_RUNDIR=1 keeps the folder).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TESTS="$ROOT/tests/socketio"
TEST_TIMEOUT=${SOCKETIO_TEST_TIMEOUT:-90}

log() { printf '== %s\n' "$*"; }

for bin in "$GATEWAY" "$MODULE"; do
    if [ ! -f "$bin" ]; then
        echo "missing $bin: build the release binaries first (make build)" >&2
        exit 1
    fi
done
for tool in node npm redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "Node $(node --version) is too old: the tests need Node 20 or newer" >&2
    exit 1
fi

# --- npm deps (not counted in the run's time) -------------------------
deps_stamp() {
    cat "$TESTS/package-lock.json" "$ROOT/clients/node/package.json" "$ROOT"/clients/node/src/*.js |
        sha256sum | cut -d' ' -f1
}
stamp=$(deps_stamp)
if [ ! -d "$TESTS/node_modules" ] || [ "$(cat "$TESTS/node_modules/.deps-stamp" 2>/dev/null)" != "$stamp" ]; then
    log "npm ci (tests/socketio)"
    (cd "$TESTS" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$stamp" >"$TESTS/node_modules/.deps-stamp"
fi

# --- Redis and two gateway nodes --------------------------------------
START=$SECONDS
DIR=$(mktemp -d "${TMPDIR:-/tmp}/broker-socketio.XXXXXX") # start_bench_gateway's folder
REDIS_PORT=""

cleanup() {
    local status=$? n
    trap - EXIT INT TERM
    # The gateways alive now: the ones started here, or their replacements
    # started by the tests (each pidfile holds the node's current pid).
    GW_PIDS=()
    for n in 1 2; do
        if pid_alive "$DIR/gateway-$n.pid" broker-gateway; then
            GW_PIDS+=("$(cat "$DIR/gateway-$n.pid")")
        fi
    done
    stop_bench_gateways
    [ -n "$REDIS_PORT" ] && stop_redis "$DIR/redis" "$REDIS_PORT"
    if [ "$status" -ne 0 ]; then
        for f in "$DIR"/gateway-*.log "$DIR/redis/redis.log"; do
            [ -f "$f" ] || continue
            echo "--- last lines of $(basename "$f")"
            tail -n 30 "$f"
        done
    fi
    if [ -n "${KEEP_RUNDIR:-}" ]; then
        echo "run folder kept: $DIR"
    else
        rm -rf "$DIR"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Module-side history for what the backend publishes (the gateway's
# [namespaces] history covers what clients publish through it).
REDIS_PORT=$(start_redis "$DIR/redis" $((20000 + RANDOM % 20000)) "HISTORY chat 100 300 HISTORY short 3 300" \
    --save '' --appendonly no)
log "redis-server with the module on 127.0.0.1:$REDIS_PORT"

SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Short heartbeats, so that heartbeat.test.mjs sees pings and an idle close
# within seconds (the tests read them from the environment).
export SIO_PING_INTERVAL_S=2 SIO_IDLE_TIMEOUT_S=5
cat >"$DIR/gateway.toml" <<EOF
# Written by scripts/socketio-test.sh. Listen addresses, node ids, the
# Redis URL and the JWT secret come from the environment.
# One allowed web origin (the tests' clients send none, which always passes).
origins = ["http://app.example"]

[auth]
dev_tokens = false
# A connection whose token expired is closed 1 s after exp (not 30 s).
leeway_s = 1

# Every test connects from 127.0.0.1, and nodes get killed: no limit that
# the suite could reach, except the connections per user (the default, 5,
# which a test reaches on purpose; the others use fresh users).
[limits]
ping_interval_s = $SIO_PING_INTERVAL_S
idle_timeout_s = $SIO_IDLE_TIMEOUT_S
max_conns_per_user = 5
max_conns_per_ip = 100000
max_preauth_per_ip = 100000
requests = { count = 100000, period_s = 1, burst = 100000 }

[rpc]
timeout_ms = 1000

[namespaces.chat]
join = "public"
publish = "members"
presence = true
join_leave = true
history = 100
history_ttl_s = 300
rate = { count = 100000, period_s = 1, burst = 100000 }

# Recovery beyond what the history keeps.
[namespaces.short]
join = "public"
publish = "members"
history = 3
history_ttl_s = 300
rate = { count = 100000, period_s = 1, burst = 100000 }

# One publish per minute per user: the second is rate_limited.
[namespaces.slow]
join = "public"
publish = "members"
rate = { count = 1, period_s = 60, burst = 1 }

# Clients may join but not publish.
[namespaces.news]
join = "public"
publish = "server"
EOF

base=$((30000 + RANDOM % 20000))
for n in 1 2; do
    start_bench_gateway "$n" gw-sio "$base" $((base + 5))
    echo "${GW_PIDS[-1]}" >"$DIR/gateway-$n.pid"
    disown "${GW_PIDS[-1]}" # no "Killed" line when a test kills it
done
GW_PIDS=() # from here on the pidfiles say which processes are ours
urls=()
for n in 1 2; do
    ws_var="WS_$n"
    urls+=("$(sed -e 's#^ws://#http://#' -e 's#/ws$##' <<<"${!ws_var}")")
    log "gateway gw-sio-$n: ${urls[-1]}/socket.io/ (pid $(cat "$DIR/gateway-$n.pid"))"
done

# --- the tests --------------------------------------------------------
# Arguments: test files (absolute paths from here on, as the run is in
# tests/socketio) and node --test options (e.g. --test-name-pattern=kick).
files=()
args=()
for arg in "$@"; do
    if [ -f "$arg" ]; then
        files+=("$(realpath "$arg")")
    else
        args+=("$arg")
    fi
done
[ ${#files[@]} -gt 0 ] || files=("$TESTS"/*.test.mjs)
log "node --test (socket.io-client $(node -p "require('$TESTS/node_modules/socket.io-client/package.json').version"))"
cd "$TESTS"
GATEWAYS="${urls[0]},${urls[1]}" GATEWAY_ADMINS="$ADMIN_1,$ADMIN_2" NODE_IDS=gw-sio-1,gw-sio-2 \
    GATEWAY_PIDFILES="$DIR/gateway-1.pid,$DIR/gateway-2.pid" GATEWAY_BIN="$GATEWAY" \
    GATEWAY_CONFIG="$DIR/gateway.toml" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" JWT_SECRET="$SECRET" \
    LOG_DIR="$DIR" \
    timeout "$TEST_TIMEOUT" node --test --test-reporter=spec --test-concurrency=1 --test-timeout=30000 --test-force-exit ${args[@]+"${args[@]}"} "${files[@]}"
log "socket.io tests passed in $((SECONDS - START)) s"
