#!/usr/bin/env bash
# Same client, two servers: the Socket.IO peer's load driver
# (bench/socketio/driver.js, socket.io-client 4) against this broker's
# gateway at /socket.io/ (docs/SOCKETIO.md), with `--dialect broker`, the
# same scenarios and parameters as scripts/bench-peer.sh runs against the
# Socket.IO server: connect storm, fan-out (100 msg/s, then max rate), chat.
# (churn reads server.js's presence sets and is not run here.)
#
#   Redis with the module on a free port, --save '' in a temporary dir
#   two gateway nodes (lib.sh: bench_gateway_config, the same as
#   bench-gateway.sh; `socketio.enabled` is on by default)
#   driver.js connect / fanout / chat --dialect broker, each within 2 minutes
#
# The nodes' memory and connection counts come from their admin listener's
# /metrics (process_resident_memory_bytes, broker_connections), their CPU
# time from /proc/<pid>/stat (/metrics counts it in whole seconds): the
# driver gets each node's admin address and pid (--admin, --pid).
#
# Prints every table on stdout, progress on stderr, and saves each
# scenario's JSON (broker-bench's shape) as $BENCH_OUT/<scenario>.json.
# Does not touch docs/: scripts/bench.sh puts it next to the peer's runs.
# Everything it starts is stopped on exit, however it exits. About a minute
# and a half.
#
# Environment:
#   BENCH_OUT=DIR      where the JSON goes (default: a new temporary dir, printed)
#   BENCH_CONNS=10000  connections of the connect scenario
#   BENCH_DURATION=10  seconds of each timed phase (fanout, chat)
#   BENCH_NO_BUILD=1   use the binaries in target/release as they are
#   BENCH_KEEP=1       keep the working dir (Redis and gateway logs, config)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DRIVER="$ROOT/bench/socketio/driver.js"
CONNS=${BENCH_CONNS:-10000}
DUR=${BENCH_DURATION:-10}
SECRET=bench-secret
DIR=$(mktemp -d -t broker-sio-gw-bench.XXXXXX)
OUT=${BENCH_OUT:-$(mktemp -d -t broker-sio-gw-results.XXXXXX)}
REDIS_PORT=""
STARTED=$SECONDS

cleanup() {
    stop_bench_gateways
    [ -n "$REDIS_PORT" ] && stop_redis "$DIR" "$REDIS_PORT"
    if [ -n "${BENCH_KEEP:-}" ]; then
        echo "kept $DIR" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_bench_binaries "${BENCH_NO_BUILD:-}"
ensure_socketio_modules bench-sio
bench_pinning
# One file descriptor per connection: as high as we may (the gateways and
# the driver inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

REDIS_PORT=$(start_redis "$DIR" 6600 "" --save '' --appendonly no)
REDIS_VERSION=$(redis-cli -p "$REDIS_PORT" INFO server | tr -d '\r' | awk -F: '/^redis_version:/ {print $2}')

bench_gateway_config >"$DIR/gateway.toml"
start_bench_gateway 1 gw-sio 18280 19290
start_bench_gateway 2 gw-sio 18280 19290
# The driver's node URLs: the gateways' public listeners (socket.io-client
# adds /socket.io/).
for n in 1 2; do
    ws=WS_$n
    hostport=${!ws#ws://}
    hostport=${hostport%/ws}
    printf -v "URL_$n" 'http://%s' "$hostport"
    # An Engine.IO handshake on long-polling: anything but 200 means no
    # /socket.io/ route (or a broken one).
    status=$(http_status "${hostport##*:}" "/socket.io/?EIO=4&transport=polling" || true)
    if [ "$status" != 200 ]; then
        echo "gateway $n: GET /socket.io/?EIO=4&transport=polling answered '${status:-nothing}', not 200:" \
            "is socketio.enabled on in this build?" >&2
        exit 1
    fi
done
echo "Redis $REDIS_VERSION on port $REDIS_PORT; gateways $URL_1 (admin $ADMIN_1), $URL_2 (admin $ADMIN_2)" >&2

# run NAME ARGS...: one scenario of driver.js --dialect broker (at most 2
# minutes); prints its tables and saves its JSON in $OUT. A failed
# scenario is reported and the others still run.
FAILED=()
mkdir -p "$OUT"
run() {
    local name=$1 cmd rc=0 n
    shift
    cmd="driver.js $name --dialect broker $*"
    cmd=${cmd//$URL_1/\$URL1}
    cmd=${cmd//$URL_2/\$URL2}
    cmd=${cmd//$ADMIN_1/\$ADMIN1}
    cmd=${cmd//$ADMIN_2/\$ADMIN2}
    cmd=${cmd//--pid ${GW_PIDS[0]}/--pid \$PID1}
    cmd=${cmd//--pid ${GW_PIDS[1]}/--pid \$PID2}
    echo >&2
    echo "== gateway /socket.io/ $name: $cmd" >&2
    JWT_SECRET=$SECRET timeout 120 "${PIN_CLIENT[@]}" node "$DRIVER" "$name" --dialect broker "$@" \
        --save "$OUT/$name.json" >"$DIR/$name.md" || rc=$?
    if [ "$rc" = 0 ]; then
        cat "$DIR/$name.md"
    else
        echo "gateway /socket.io/ $name failed (exit $rc$([ "$rc" = 124 ] && echo ': timed out'))" |
            tee -a "$DIR/$name.md" >&2
        rm -f "$OUT/$name.json"
        FAILED+=("$name")
    fi
    for n in 1 2; do
        kill -0 "${GW_PIDS[$((n - 1))]}" 2>/dev/null || { echo "gateway $n has exited" >&2; exit 1; }
    done
}

NODE_1=(--url "$URL_1" --admin "$ADMIN_1" --pid "${GW_PIDS[0]}")
NODE_2=(--url "$URL_2" --admin "$ADMIN_2" --pid "${GW_PIDS[1]}")
run connect "${NODE_1[@]}" -n "$CONNS" --concurrency 100 --idle 5
run fanout "${NODE_1[@]}" "${NODE_2[@]}" \
    -m 1000 --rate 100 --duration "$DUR" --max-duration "$DUR" --inflight 64
run chat "${NODE_1[@]}" "${NODE_2[@]}" \
    -r 100 -k 10 --rate 1 --duration "$DUR"

# What the gateways logged above INFO, by message (colours, timestamps and
# ids cut), leaving out the expected warning about the short bench secret.
PROBLEMS=$(for n in 1 2; do
    sed -E 's/\x1b\[[0-9;]*m//g' "$DIR/gateway-$n.log" 2>/dev/null |
        grep -E '^[^ ]+ +(WARN|ERROR) ' | grep -v 'auth.secret is shorter' |
        sed -E 's/^[^ ]+ +//; s/(conn|user|node|ip|sid)=[^ ]+/\1=…/g' |
        sort | uniq -c | sort -rn | head -n 10 | sed "s/^/  node $n: /" || true
done)
echo >&2
echo "gateway log lines above INFO: ${PROBLEMS:-none}" >&2
echo "JSON results in $OUT; total $((SECONDS - STARTED)) s" >&2
[ ${#FAILED[@]} = 0 ] || { echo "failed: ${FAILED[*]}" >&2; exit 1; }
