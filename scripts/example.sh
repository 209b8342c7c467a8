#!/usr/bin/env bash
# One example of examples/ running: Redis with the module, its gateway
# node(s) and its backend.
#
#   scripts/example.sh NAME            start everything, print the URLs, stay in
#                                      the foreground until Ctrl-C (`make example NAME=...`)
#   scripts/example.sh --test NAME     start everything, run examples/NAME/scenario.mjs,
#                                      stop everything; the scenario's exit code
#                                      (scripts/examples-test.sh runs this for each)
#
# NAME is a folder of examples/ (payment-status, order-tracking, support-chat,
# admin-broadcast). Each has gateway.toml (policies; listen addresses, node
# ids, the Redis URL and the JWT secret come from the environment here),
# backend.mjs, scenario.mjs and example.conf, a shell fragment that may set
#   NODES=N            gateway nodes to start (default 1)
#   MODULE_ARGS="..."  extra module arguments (e.g. HISTORY user 100 86400)
#
# Ports are free ones picked at start. The run's state (logs, the backend's
# data, env.json for the scenario) is in .run/examples/NAME/ in the
# foreground mode and in a temporary folder with --test; the scenario reads
# env.json (or the environment), so `node examples/NAME/scenario.mjs` works
# from another terminal while the example runs. Everything started is
# stopped on exit, by pid.
#
# Needs the release binaries (`make example` builds them first; this script
# does not), redis-server 7+, Node 20+ and npm (`npm ci` in examples/ when
# node_modules is missing or stale).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

EXAMPLES="$ROOT/examples"
MODE=foreground
if [ "${1:-}" = "--test" ]; then
    MODE=test
    shift
fi
NAME=${1:-}
if [ -z "$NAME" ] || [ ! -f "$EXAMPLES/$NAME/scenario.mjs" ]; then
    echo "usage: $0 [--test] NAME   (NAME one of: $(cd "$EXAMPLES" && ls -d */ | tr -d / | grep -v -x -e lib -e node_modules | tr '\n' ' '))" >&2
    exit 2
fi
EX="$EXAMPLES/$NAME"
SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-45}

log() { printf '== [%s] %s\n' "$NAME" "$*"; }

for bin in "$GATEWAY" "$MODULE"; do
    if [ ! -f "$bin" ]; then
        echo "missing $bin: build the release binaries first (make build)" >&2
        exit 1
    fi
done
for tool in node npm redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done

# --- npm deps: `npm ci` when node_modules is missing or stale ----------
# examples/.npmrc has install-links=true: the two libraries are copied into
# node_modules (with their dependencies), so a change to their sources needs
# a new install; the stamp covers the lock file and those sources.
deps_stamp() {
    cat "$EXAMPLES/package-lock.json" "$ROOT/clients/node/package.json" \
        "$ROOT/clients/js/package.json" "$ROOT/clients/js/dist/broker-client.js" \
        "$ROOT"/clients/node/src/*.js | sha256sum | cut -d' ' -f1
}
stamp=$(deps_stamp)
if [ ! -d "$EXAMPLES/node_modules" ] || [ "$(cat "$EXAMPLES/node_modules/.deps-stamp" 2>/dev/null)" != "$stamp" ]; then
    log "npm ci (examples/)"
    (cd "$EXAMPLES" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$stamp" >"$EXAMPLES/node_modules/.deps-stamp"
fi

NODES=1
MODULE_ARGS=""
# shellcheck disable=SC1091
[ -f "$EX/example.conf" ] && source "$EX/example.conf"

if [ "$MODE" = test ]; then
    RUNDIR=$(mktemp -d "${TMPDIR:-/tmp}/broker-example-$NAME.XXXXXX")
else
    RUNDIR="$ROOT/.run/examples/$NAME"
    rm -rf "$RUNDIR"
    mkdir -p "$RUNDIR"
fi
mkdir -p "$RUNDIR/data"
REDIS_PORT=""
GATEWAY_PIDS=()
BACKEND_PID=""

cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    [ -n "$BACKEND_PID" ] && kill "$BACKEND_PID" 2>/dev/null || true
    for pid in "${GATEWAY_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${GATEWAY_PIDS[@]}" $BACKEND_PID; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    [ -n "$REDIS_PORT" ] && stop_redis "$RUNDIR/redis" "$REDIS_PORT"
    if [ "$MODE" = test ]; then
        if [ "$status" -ne 0 ]; then
            for f in "$RUNDIR"/gateway-*.log "$RUNDIR/backend.log" "$RUNDIR/redis/redis.log"; do
                [ -f "$f" ] || continue
                echo "--- last lines of $(basename "$f")"
                tail -n 25 "$f"
            done
        fi
        [ -n "${KEEP_RUNDIR:-}" ] || rm -rf "$RUNDIR"
    else
        echo
        log "stopped (logs in ${RUNDIR#"$ROOT"/})"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Redis ------------------------------------------------------------
# shellcheck disable=SC2086 # MODULE_ARGS is a list of words
REDIS_PORT=$(start_redis "$RUNDIR/redis" $((20000 + RANDOM % 20000)) "$MODULE_ARGS" \
    --save '' --appendonly no)
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
log "redis-server with the module on 127.0.0.1:$REDIS_PORT${MODULE_ARGS:+ (module args: $MODULE_ARGS)}"

# The JWT secret of this run: the gateways check tokens with it, the
# scenario (standing in for the application's login) signs them.
JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
WEBHOOK_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

# --- gateways ---------------------------------------------------------
wait_ready() { # PORT PID SECONDS
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$2" 2>/dev/null || return 1
        [ "$(http_status "$1" /readyz)" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

WS_URLS=()
ADMIN_URLS=()
NODE_IDS=()
next=$((30000 + RANDOM % 20000))
for n in $(seq "$NODES"); do
    node_id="$NAME-$(printf "\\x$(printf %x $((96 + n)))")" # payment-status-a, -b, ...
    ready=""
    for attempt in 1 2 3; do
        listen=$(free_port "$next")
        admin=$(free_port $((listen + 1)))
        next=$((admin + 1))
        BROKER_LISTEN="127.0.0.1:$listen" BROKER_ADMIN_LISTEN="127.0.0.1:$admin" \
            BROKER_REDIS__URL="$REDIS_URL" BROKER_NODE_ID="$node_id" \
            BROKER_AUTH__SECRET="$JWT_SECRET" RUST_LOG=${RUST_LOG:-info} \
            "$GATEWAY" --config "$EX/gateway.toml" >"$RUNDIR/gateway-$n.log" 2>&1 </dev/null &
        GATEWAY_PIDS+=("$!")
        if wait_ready "$listen" "${GATEWAY_PIDS[-1]}" 15; then
            ready=1
            break
        fi
        kill "${GATEWAY_PIDS[-1]}" 2>/dev/null || true
        wait "${GATEWAY_PIDS[-1]}" 2>/dev/null || true
        unset 'GATEWAY_PIDS[-1]'
        grep -q "in use" "$RUNDIR/gateway-$n.log" || break
    done
    if [ -z "$ready" ]; then
        echo "gateway $node_id did not become ready:" >&2
        tail -n 20 "$RUNDIR/gateway-$n.log" >&2
        exit 1
    fi
    disown "${GATEWAY_PIDS[-1]}" # no "Killed" line when a scenario kills it
    WS_URLS+=("ws://127.0.0.1:$listen/ws")
    ADMIN_URLS+=("http://127.0.0.1:$admin")
    NODE_IDS+=("$node_id")
    log "gateway $node_id: ws://127.0.0.1:$listen/ws (admin http://127.0.0.1:$admin, pid ${GATEWAY_PIDS[-1]})"
done

# --- backend ----------------------------------------------------------
join_list() { local IFS=,; echo "$*"; }
export REDIS_URL WEBHOOK_SECRET JWT_SECRET
export DATA_DIR="$RUNDIR/data"
export GATEWAYS=$(join_list "${WS_URLS[@]}")
export GATEWAY_ADMINS=$(join_list "${ADMIN_URLS[@]}")
export GATEWAY_PIDS_LIST=$(join_list "${GATEWAY_PIDS[@]}")
export NODE_IDS_LIST=$(join_list "${NODE_IDS[@]}")
# start_backend: true once its /healthz says 200; false when it exited
# (a port taken meanwhile: the caller tries another) or took over 15 s.
start_backend() {
    local deadline=$((SECONDS + 15))
    node "$EX/backend.mjs" >"$RUNDIR/backend.log" 2>&1 </dev/null &
    BACKEND_PID=$!
    until [ "$(http_status "$BACKEND_PORT" /healthz)" = 200 ]; do
        if ! kill -0 "$BACKEND_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            kill "$BACKEND_PID" 2>/dev/null || true
            wait "$BACKEND_PID" 2>/dev/null || true
            BACKEND_PID=""
            return 1
        fi
        sleep 0.1
    done
}
for attempt in 1 2 3; do
    export BACKEND_PORT=$(free_port "$next")
    next=$((BACKEND_PORT + 1))
    export BACKEND_URL="http://127.0.0.1:$BACKEND_PORT"
    start_backend && break
    if [ "$attempt" = 3 ] || ! grep -q EADDRINUSE "$RUNDIR/backend.log"; then
        echo "the backend did not start:" >&2
        tail -n 20 "$RUNDIR/backend.log" >&2
        exit 1
    fi
done
log "backend: $BACKEND_URL (pid $BACKEND_PID)"

# What the scenario needs, for `node examples/NAME/scenario.mjs` in another terminal.
node -e 'const e = process.env; console.log(JSON.stringify({
  REDIS_URL: e.REDIS_URL, GATEWAYS: e.GATEWAYS, GATEWAY_ADMINS: e.GATEWAY_ADMINS,
  GATEWAY_PIDS: e.GATEWAY_PIDS_LIST, NODE_IDS: e.NODE_IDS_LIST, BACKEND_URL: e.BACKEND_URL,
  JWT_SECRET: e.JWT_SECRET, WEBHOOK_SECRET: e.WEBHOOK_SECRET, DATA_DIR: e.DATA_DIR }, null, 2))' \
    >"$RUNDIR/env.json"

if [ "$MODE" = test ]; then
    log "scenario"
    EXAMPLE_ENV="$RUNDIR/env.json" timeout "$SCENARIO_TIMEOUT" node "$EX/scenario.mjs"
    exit $?
fi

echo
log "running. Logs: ${RUNDIR#"$ROOT"/}/{gateway-N,backend}.log; the backend's data: ${RUNDIR#"$ROOT"/}/data/"
echo "   redis      redis-cli -p $REDIS_PORT"
echo "   scenario   node examples/$NAME/scenario.mjs      (in another terminal; reads ${RUNDIR#"$ROOT"/}/env.json)"
[ -f "$EX/README.md" ] && echo "   what it shows: examples/$NAME/README.md"
echo "   Ctrl-C stops everything"
# Stay in the foreground until Ctrl-C, or until the backend exits.
wait "$BACKEND_PID" || true
log "the backend exited; see ${RUNDIR#"$ROOT"/}/backend.log"
