#!/usr/bin/env bash
# The Socket.IO peer (bench/socketio): a plain Redis on a free port, two
# Socket.IO 4 nodes with @socket.io/redis-adapter, and the Node driver
# running the same four scenarios with the same parameters as
# scripts/bench-gateway.sh. Installs the npm packages with `npm ci` from the
# committed lock when node_modules is missing or older than the lock.
#
# Environment: BENCH_CONNS (10000), BENCH_DURATION (10), BENCH_OUT=DIR (also
# copy each scenario's JSON there), BENCH_KEEP=1 (keep the temporary dir).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PEER="$ROOT/bench/socketio"
CONNS=${BENCH_CONNS:-10000}
DUR=${BENCH_DURATION:-10}
SECRET=bench-secret
DIR=$(mktemp -d -t broker-sio-bench.XXXXXX)
REDIS_PORT=""
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    [ -n "$REDIS_PORT" ] && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    if [ -n "${BENCH_KEEP:-}" ]; then echo "kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v node >/dev/null || { echo "bench-peer: node is not installed (apt-get install nodejs npm)" >&2; exit 1; }
if [ ! -d "$PEER/node_modules" ] || [ "$PEER/package-lock.json" -nt "$PEER/node_modules" ]; then
    echo "bench-peer: npm ci..." >&2
    (cd "$PEER" && npm ci --no-audit --no-fund >&2)
    touch "$PEER/node_modules"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# A plain Redis: the peer needs no module.
REDIS_PORT=$(free_port 6700)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$DIR" --daemonize no >"$DIR/redis.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

URLS=()
for n in 1 2; do
    port=$(free_port $((3000 + 10 * n)))
    PORT=$port NODE_ID="sio-$n" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" JWT_SECRET=$SECRET \
        node "$PEER/server.js" >"$DIR/node-$n.log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 100); do
        grep -q listening "$DIR/node-$n.log" 2>/dev/null && break
        sleep 0.1
    done
    grep -q listening "$DIR/node-$n.log" || { echo "socket.io node $n did not start:" >&2; cat "$DIR/node-$n.log" >&2; exit 1; }
    URLS+=("http://127.0.0.1:$port")
done
echo "Socket.IO nodes ${URLS[*]} on Redis port $REDIS_PORT" >&2

FAILED=0
run() {
    local name=$1
    shift
    echo "== socket.io $name" >&2
    if JWT_SECRET=$SECRET timeout 180 node "$PEER/driver.js" "$name" "$@" --save "$DIR/$name.json" >"$DIR/$name.md"; then
        cat "$DIR/$name.md"
        if [ -n "${BENCH_OUT:-}" ]; then mkdir -p "$BENCH_OUT" && cp "$DIR/$name.json" "$BENCH_OUT/"; fi
    else
        echo "$name failed (exit $?)" >&2
        FAILED=1
    fi
}
run connect --url "${URLS[0]}" -n "$CONNS" --concurrency 100 --idle 5
run fanout --url "${URLS[0]}" --url "${URLS[1]}" -m 1000 --rate 100 --duration "$DUR" --max-duration "$DUR" --inflight 64
run chat --url "${URLS[0]}" --url "${URLS[1]}" -r 100 -k 10 --rate 1 --duration "$DUR"
run churn --url "${URLS[0]}" --url "${URLS[1]}" --redis "redis://127.0.0.1:$REDIS_PORT" -c 200 --rooms 20 -p 2 --rate 100 --duration "$DUR"
exit $FAILED
