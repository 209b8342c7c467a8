#!/usr/bin/env bash
# The Socket.IO peer benchmark (bench/socketio): the stack this broker is
# measured against, on this machine, with the same four scenarios and the
# same parameters as scripts/bench-gateway.sh.
#
#   a plain Redis (no module) on a free port, --save '' in a temporary dir
#   two Socket.IO 4 nodes (server.js, @socket.io/redis-adapter) on free ports
#   driver.js connect / fanout / chat / churn, each within 2 minutes
#
# Prints every table on stdout, progress on stderr, and saves each
# scenario's JSON (broker-bench's shape) as $BENCH_OUT/<scenario>.json.
# Installs the npm packages with `npm ci` from the committed lock when
# node_modules is missing or older than the lock. Everything it starts is
# stopped on exit, however it exits. It does not touch docs/: scripts/bench.sh
# puts both sides together. About 2 minutes.
#
# Environment:
#   BENCH_OUT=DIR      where the JSON goes (default: a new temporary dir, printed)
#   BENCH_CONNS=10000  connections of the connect scenario
#   BENCH_DURATION=10  seconds of each timed phase (fanout, chat, churn)
#   BENCH_KEEP=1       keep the working dir (Redis and node logs)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PEER="$ROOT/bench/socketio"
CONNS=${BENCH_CONNS:-10000}
DUR=${BENCH_DURATION:-10}
SECRET=bench-secret
DIR=$(mktemp -d -t broker-sio-bench.XXXXXX)
OUT=${BENCH_OUT:-$(mktemp -d -t broker-sio-results.XXXXXX)}
REDIS_PORT=""
NODE_PIDS=()
STARTED=$SECONDS

cleanup() {
    local pid i
    for pid in "${NODE_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${NODE_PIDS[@]}"; do
        for i in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    [ -n "$REDIS_PORT" ] && stop_redis "$DIR" "$REDIS_PORT"
    if [ -n "${BENCH_KEEP:-}" ]; then
        echo "kept $DIR" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_socketio_modules bench-peer
bench_pinning
# One file descriptor per connection: as high as we may (the nodes and the
# driver inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# A plain Redis: the peer needs no module (lib.sh's start_redis loads ours).
start_plain_redis() {
    local port=$1 attempt
    for attempt in 1 2 3 4 5; do
        port=$(free_port "$port")
        rm -f "$DIR/redis.pid"
        "${PIN_SERVER[@]}" redis-server --port "$port" --bind 127.0.0.1 --dir "$DIR" --save '' --appendonly no \
            --daemonize yes --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" >/dev/null
        if wait_redis "$port" 10; then
            echo "$port"
            return 0
        fi
        grep -q "Address already in use" "$DIR/redis.log" 2>/dev/null || break
        port=$((port + 1))
    done
    echo "redis-server did not start:" >&2
    tail -n 20 "$DIR/redis.log" >&2 || true
    return 1
}
REDIS_PORT=$(start_plain_redis 6700)
REDIS_VERSION=$(redis-cli -p "$REDIS_PORT" INFO server | tr -d '\r' | awk -F: '/^redis_version:/ {print $2}')

# start_node N: Socket.IO node sio-N on a free port; sets URL_N once its
# GET /rss answers.
start_node() {
    local n=$1 port pid i
    port=$(free_port $((3000 + 10 * n)))
    PORT=$port NODE_ID="sio-$n" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" JWT_SECRET=$SECRET \
        "${PIN_SERVER[@]}" node "$PEER/server.js" >"$DIR/node-$n.log" 2>&1 </dev/null &
    pid=$!
    NODE_PIDS+=("$pid")
    for i in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "Socket.IO node $n exited:" >&2
            tail -n 20 "$DIR/node-$n.log" >&2
            exit 1
        fi
        curl -sf "http://127.0.0.1:$port/rss" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:$port/rss" >/dev/null || { echo "Socket.IO node $n not ready" >&2; exit 1; }
    printf -v "URL_$n" 'http://127.0.0.1:%s' "$port"
}
start_node 1
start_node 2
echo "Redis $REDIS_VERSION (plain) on port $REDIS_PORT; Socket.IO nodes $URL_1, $URL_2" >&2

# run NAME ARGS...: one scenario of driver.js (at most 2 minutes); prints
# its tables and saves its JSON in $OUT. A failed scenario is reported and
# the others still run.
FAILED=()
mkdir -p "$OUT"
run() {
    local name=$1 cmd rc=0
    shift
    cmd="driver.js $name $*"
    cmd=${cmd//$URL_1/\$URL1}
    cmd=${cmd//$URL_2/\$URL2}
    cmd=${cmd//redis:\/\/127.0.0.1:$REDIS_PORT/\$REDIS}
    echo >&2
    echo "== socket.io $name: $cmd" >&2
    JWT_SECRET=$SECRET timeout 120 "${PIN_CLIENT[@]}" node "$PEER/driver.js" "$name" "$@" --save "$OUT/$name.json" >"$DIR/$name.md" || rc=$?
    if [ "$rc" = 0 ]; then
        cat "$DIR/$name.md"
    else
        echo "socket.io $name failed (exit $rc$([ "$rc" = 124 ] && echo ': timed out'))" | tee -a "$DIR/$name.md" >&2
        rm -f "$OUT/$name.json"
        FAILED+=("$name")
    fi
    for n in 1 2; do
        kill -0 "${NODE_PIDS[$((n - 1))]}" 2>/dev/null || { echo "Socket.IO node $n has exited" >&2; exit 1; }
    done
}

run connect --url "$URL_1" -n "$CONNS" --concurrency 100 --idle 5
run fanout --url "$URL_1" --url "$URL_2" -m 1000 --rate 100 --duration "$DUR" --max-duration "$DUR" --inflight 64
run chat --url "$URL_1" --url "$URL_2" -r 100 -k 10 --rate 1 --duration "$DUR"
run churn --url "$URL_1" --url "$URL_2" --redis "redis://127.0.0.1:$REDIS_PORT" \
    -c 200 --rooms 20 -p 2 --rate 100 --duration "$DUR"

# What the nodes printed besides their start line (errors, warnings).
PROBLEMS=$(for n in 1 2; do
    grep -v ' listening on ' "$DIR/node-$n.log" | sort | uniq -c | sort -rn | head -n 10 | sed "s/^/  node $n: /" || true
done)
echo >&2
echo "Socket.IO node log lines: ${PROBLEMS:-none}" >&2
echo "JSON results in $OUT; total $((SECONDS - STARTED)) s" >&2
[ ${#FAILED[@]} = 0 ] || { echo "failed: ${FAILED[*]}" >&2; exit 1; }
