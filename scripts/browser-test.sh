#!/usr/bin/env bash
# End-to-end test of the JavaScript client and the demo chat page.
#
#   scripts/browser-test.sh
#
# 1. installs Debian's chromium when /usr/bin/chromium is missing (needs
#    root or sudo; Playwright's own browser download does not work here),
# 2. `npm ci` in clients/js and tests/browser, checks that the committed
#    clients/js/dist/broker-client.js matches its sources, runs the client's
#    unit tests (node --test),
# 3. starts a redis-server with the module (free port, temp dir, no saves)
#    and two gateway nodes (free ports, auth.dev_tokens = true),
# 4. runs tests/browser/chat.spec.mjs: alice on node 1 and bob on node 2 in
#    headless Chromium (presence, typing, messages, HTML stays text,
#    history, and a restart of node 2 that bob's page recovers from), once
#    with the page on the broker protocol (/ws) and once on Socket.IO
#    (/socket.io/, the vendored socket.io-client). PROTOS=broker or
#    =socketio runs one of them. Screenshots go to target/browser-artifacts/.
#
# The gateway embeds gateway/static and clients/js/dist at build time: when
# the running binary serves other files than the tree has, the check "the
# gateways serve the current page files" fails and the page tests run
# against tests/browser/static-server.mjs instead (PAGE_SOURCE=gateway or
# =static forces one source); that server also forwards the page's
# /socket.io/ requests to the gateway named by ?gw=.
#
# Needs the release binaries (target/release/broker-gateway and
# libbroker_module.so); it does not build them. Everything it starts is
# stopped on exit, by pid.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
ARTIFACTS="$ROOT/target/browser-artifacts"
TMP=""
GATEWAY_PIDS=()
REDIS_PORT=""

log() { printf '== %s\n' "$*"; }

cleanup() {
    local status=$? pid
    # The test restarts node 2 itself and leaves the new pid here.
    if [ -n "$TMP" ] && pid_alive "$TMP/restarted.pid" broker-gateway; then
        GATEWAY_PIDS+=("$(cat "$TMP/restarted.pid")")
    fi
    for pid in "${GATEWAY_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${GATEWAY_PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ -n "$TMP" ]; then
        if [ -n "$REDIS_PORT" ]; then
            stop_redis "$TMP/redis" "$REDIS_PORT"
        fi
        if [ "$status" -ne 0 ]; then
            for f in "$TMP"/gateway-*.log "$TMP/restarted.pid.log" "$TMP/redis/redis.log"; do
                [ -f "$f" ] || continue
                echo "--- last lines of $(basename "$f")"
                tail -n 20 "$f"
            done
        fi
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for bin in "$GATEWAY" "$MODULE"; do
    if [ ! -f "$bin" ]; then
        echo "missing $bin: build the release binaries first (make build)" >&2
        exit 1
    fi
done
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }

# --- installs (not counted in the run's time budget) -------------------
if [ ! -x "$CHROMIUM" ]; then
    log "installing Debian's chromium"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
fi
log "npm ci (clients/js, tests/browser)"
(cd "$ROOT/clients/js" && npm ci --no-audit --no-fund --loglevel=error)
(cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund --loglevel=error)

# --- the run ----------------------------------------------------------
START=$SECONDS
log "client: dist up to date, unit tests"
(cd "$ROOT/clients/js" && npm run --silent check-dist && npm test --silent)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/broker-browser.XXXXXX")
log "redis-server with the module"
REDIS_PORT=$(start_redis "$TMP/redis" $((20000 + RANDOM % 20000)) "HISTORY chat 100 300" \
    --save '' --appendonly no)

cat >"$TMP/gateway.toml" <<'EOF'
# Written by scripts/browser-test.sh. Listen addresses, node ids and the
# Redis URL come from the environment.
origins = []

[auth]
dev_tokens = true

[namespaces.chat]
join = "public"
publish = "members"
presence = true
join_leave = true
history = 100
history_ttl_s = 300
rate = { count = 20, period_s = 10, burst = 5 }
max_payload = 16384
EOF

# start_gateway N LISTEN_PORT ADMIN_PORT: start node gw-bt-N in the background.
start_gateway() {
    BROKER_LISTEN="127.0.0.1:$2" BROKER_ADMIN_LISTEN="127.0.0.1:$3" \
        BROKER_REDIS__URL="redis://127.0.0.1:$REDIS_PORT" BROKER_NODE_ID="gw-bt-$1" \
        "$GATEWAY" --config "$TMP/gateway.toml" >"$TMP/gateway-$1.log" 2>&1 </dev/null &
    GATEWAY_PIDS+=("$!")
}

# wait_ready PORT PID SECONDS: poll /readyz until it answers 200.
wait_ready() {
    local deadline=$((SECONDS + $3))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$2" 2>/dev/null || return 1
        if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/readyz"; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

GATEWAY_URLS=()
GATEWAY_ADMINS=()
next=$((30000 + RANDOM % 20000))
for n in 1 2; do
    ready=""
    for attempt in 1 2 3; do
        listen=$(free_port "$next")
        admin=$(free_port $((listen + 1)))
        next=$((admin + 1))
        start_gateway "$n" "$listen" "$admin"
        if wait_ready "$listen" "${GATEWAY_PIDS[-1]}" 20; then
            ready=1
            break
        fi
        kill "${GATEWAY_PIDS[-1]}" 2>/dev/null || true
        wait "${GATEWAY_PIDS[-1]}" 2>/dev/null || true
        unset 'GATEWAY_PIDS[-1]'
        grep -q "in use" "$TMP/gateway-$n.log" || break
    done
    if [ -z "$ready" ]; then
        echo "gateway $n did not become ready" >&2
        exit 1
    fi
    log "gateway gw-bt-$n on 127.0.0.1:$listen (admin $admin)"
    GATEWAY_URLS+=("http://127.0.0.1:$listen")
    GATEWAY_ADMINS+=("127.0.0.1:$admin")
done
join() { local IFS=,; echo "$*"; }

log "browser test"
mkdir -p "$ARTIFACTS"
rm -f "$ARTIFACTS"/*.png
# The pids, admin addresses and the rest let the test restart node 2.
GATEWAYS=$(join "${GATEWAY_URLS[@]}") GATEWAY_ADMINS=$(join "${GATEWAY_ADMINS[@]}") \
    GATEWAY_PIDS=$(join "${GATEWAY_PIDS[@]}") GATEWAY_BIN="$GATEWAY" GATEWAY_CONFIG="$TMP/gateway.toml" \
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT" RESTART_PIDFILE="$TMP/restarted.pid" \
    CHROMIUM="$CHROMIUM" ARTIFACTS="$ARTIFACTS" \
    timeout 170 node "$ROOT/tests/browser/chat.spec.mjs"
log "done in $((SECONDS - START)) s; screenshots in ${ARTIFACTS#"$ROOT"/}"
