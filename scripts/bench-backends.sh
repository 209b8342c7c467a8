#!/usr/bin/env bash
# Backends in the loop (issue 16), measured with broker-bench (bench/), all
# on this machine:
#
#   events    cost of the lifecycle stream: the connect storm (10,000
#             connections) and the churn scenario against Redis with the
#             module's `EVENTS 0` (no stream) and with the default (10000),
#             alternating, BENCH_RUNS times each; INFO commandstats of the
#             module's commands per run
#   rpc       client `rpc` round trip through one gateway and a Node backend
#             (scripts/bench-rpc-backend.mjs, an echo on clients/node) at
#             1,000, 10,000 and 20,000 rpc/s offered, BENCH_RUNS times each, with a
#             `top` snapshot of redis, gateway, node and the tool per run
#   webhooks  two gateways POSTing the lifecycle stream to the tool's own
#             receiver while connections churn (200 connect-join-leave-close
#             cycles/s, 1,200 events/s), BENCH_RUNS times: lag now - ts,
#             every event written received
#
# Prints every table and writes the "Backends" section of docs/BENCHMARKS.md
# (between the bench-backends markers) with medians over the runs. About 6
# minutes once built. Everything it starts (each part's Redis on a free port
# with --save '' in a temporary dir, the gateways, the Node backend) is
# stopped on exit, however it exits.
#
# Environment:
#   BENCH_NO_BUILD=1       use the binaries in target/release as they are
#   BENCH_NO_DOC=1         do not touch docs/BENCHMARKS.md
#   BENCH_KEEP=1           keep the temporary dir (logs, configs, JSON results)
#   BENCH_RUNS=3           runs of each measurement
#   BENCH_PARTS="events rpc webhooks"   the parts to run
#   BENCH_CONNS=10000      connections of the connect storm
#   BENCH_DURATION=10      seconds of churn (events) and of each rpc run
#   BENCH_HOOK_SECONDS=20  seconds of churn of each webhook run
#   BENCH_RPC_RATES="1000 10000 20000"  offered rpc/s
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOC="$ROOT/docs/BENCHMARKS.md"
RUNS=${BENCH_RUNS:-3}
PARTS=${BENCH_PARTS:-events rpc webhooks}
CONNS=${BENCH_CONNS:-10000}
DUR=${BENCH_DURATION:-10}
HOOK_DUR=${BENCH_HOOK_SECONDS:-20}
RPC_RATES=${BENCH_RPC_RATES:-1000 10000 20000}
SECRET=bench-secret
HOOK_SECRET=bench-hook-secret
BASE=$(mktemp -d -t broker-backends-bench.XXXXXX)
DIR=$BASE
RESULTS="$BASE/results"
mkdir -p "$RESULTS"
REDIS_PORT=""
REDIS_DIR=""
NODE_PID=""
STARTED=$SECONDS

# stop_part: the gateways, the Node backend and the Redis of the current part.
stop_part() {
    stop_bench_gateways
    GW_PIDS=()
    if [ -n "$NODE_PID" ]; then
        kill "$NODE_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$NODE_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$NODE_PID" 2>/dev/null || true
        NODE_PID=""
    fi
    if [ -n "$REDIS_PORT" ]; then
        stop_redis "$REDIS_DIR" "$REDIS_PORT"
        REDIS_PORT=""
    fi
}
cleanup() {
    stop_part
    if [ -n "${BENCH_KEEP:-}" ]; then
        echo "kept $BASE" >&2
    else
        rm -rf "$BASE"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_bench_binaries "${BENCH_NO_BUILD:-}"

# start_part NAME "MODULE ARGS" GATEWAYS: a fresh Redis with the module
# (MODULE ARGS) and GATEWAYS gateway nodes with $DIR/gateway.toml, where DIR
# is $BASE/NAME (write the config there first: see part_dir).
part_dir() {
    DIR="$BASE/$1"
    mkdir -p "$DIR"
}
start_part() {
    local args=$2 count=$3 n
    REDIS_DIR="$DIR/redis"
    REDIS_PORT=$(start_redis "$REDIS_DIR" 6600 "$args" --save '' --appendonly no)
    for n in $(seq "$count"); do
        start_bench_gateway "$n" gw-bk 18280 19290
    done
}

# bench NAME ARGS...: one broker-bench run (at most 3 minutes), tables to
# stdout and $RESULTS/NAME.md, JSON in $RESULTS/NAME.json.
FAILED=()
bench() {
    local name=$1
    shift
    echo "== $name: broker-bench $*" >&2
    if BROKER_AUTH__SECRET=$SECRET BROKER_WEBHOOKS__SECRET=$HOOK_SECRET timeout 180 \
        "$BENCH" "$@" --quiet --save "$RESULTS/$name.json" >"$RESULTS/$name.md"; then
        cat "$RESULTS/$name.md"
    else
        echo "$name failed (exit $?)" | tee -a "$RESULTS/$name.md" >&2
        FAILED+=("$name")
    fi
}

# commandstats NAME: the module's commands' calls and usec_per_call.
commandstats() {
    redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' |
        grep -E '^cmdstat_broker\.' >"$RESULTS/$1.cmdstats" || true
}

# warnings NAME: what the current part's gateways logged above INFO.
warnings() {
    local f
    for f in "$DIR"/gateway-*.log; do
        [ -f "$f" ] || continue
        sed -E 's/\x1b\[[0-9;]*m//g' "$f" | grep -E '^[^ ]+ +(WARN|ERROR) ' |
            grep -v 'auth.secret is shorter' |
            sed -E 's/^[^ ]+ +//; s/(conn|user|node|ip|id)=[^ ]+/\1=…/g' || true
    done | sort | uniq -c | sort -rn | head -n 10 >"$RESULTS/$1.warnings"
}

REDIS_VERSION=$(redis-server --version | sed -E 's/.* v=([^ ]+).*/\1/')

# 1. The lifecycle stream's cost.
if [[ " $PARTS " == *" events "* ]]; then
    for run in $(seq "$RUNS"); do
        # Alternate which goes first, so a drift of the machine's load
        # does not always favour the same one.
        if [ $((run % 2)) -eq 1 ]; then modes="off on"; else modes="on off"; fi
        for mode in $modes; do
            part_dir "events-$mode-$run"
            bench_gateway_config >"$DIR/gateway.toml"
            if [ "$mode" = off ]; then args="EVENTS 0"; else args=""; fi
            start_part "events-$mode-$run" "$args" 2
            redis-cli -p "$REDIS_PORT" CONFIG RESETSTAT >/dev/null
            bench "connect-$mode-$run" connect --url "$WS_1" --admin "$ADMIN_1" \
                -n "$CONNS" --concurrency 100 --idle 0
            bench "churn-$mode-$run" churn --url "$WS_1" --url "$WS_2" --admin "$ADMIN_1" --admin "$ADMIN_2" \
                --redis "redis://127.0.0.1:$REDIS_PORT" -c 200 --rooms 20 -p 2 --rate 100 --duration "$DUR"
            commandstats "events-$mode-$run"
            redis-cli -p "$REDIS_PORT" INFO broker | tr -d '\r' |
                grep -E '^(broker_)?events_(written|failed):' >"$RESULTS/events-$mode-$run.info" || true
            redis-cli -p "$REDIS_PORT" XLEN broker:events >>"$RESULTS/events-$mode-$run.info" 2>&1 || true
            warnings "events-$mode-$run"
            stop_part
        done
    done
fi

# 2. RPC through a Node backend.
if [[ " $PARTS " == *" rpc "* ]]; then
    command -v node >/dev/null || { echo "node is not installed" >&2; exit 1; }
    NODE_DIR="$ROOT/clients/node"
    lock_hash=$(sha256sum "$NODE_DIR/package-lock.json" | cut -d' ' -f1)
    if [ ! -d "$NODE_DIR/node_modules" ] || [ "$(cat "$NODE_DIR/node_modules/.lock-hash" 2>/dev/null)" != "$lock_hash" ]; then
        echo "npm ci (clients/node)" >&2
        (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
        echo "$lock_hash" >"$NODE_DIR/node_modules/.lock-hash"
    fi
    part_dir rpc
    bench_gateway_config >"$DIR/gateway.toml"
    start_part rpc "" 1
    node "$ROOT/scripts/bench-rpc-backend.mjs" "redis://127.0.0.1:$REDIS_PORT" 256 \
        >"$DIR/backend.log" 2>&1 </dev/null &
    NODE_PID=$!
    for _ in $(seq 100); do
        grep -q ready "$DIR/backend.log" 2>/dev/null && break
        kill -0 "$NODE_PID" 2>/dev/null || { cat "$DIR/backend.log" >&2; exit 1; }
        sleep 0.1
    done
    grep -q ready "$DIR/backend.log" || { echo "the Node backend is not ready" >&2; exit 1; }
    GW_PID=${GW_PIDS[0]}
    REDIS_PID=$(cat "$REDIS_DIR/redis.pid")
    for run in $(seq "$RUNS"); do
        for rate in $RPC_RATES; do
            name="rpc-$rate-$run"
            echo "== $name: broker-bench rpc -n 100 --rate $rate --duration $DUR" >&2
            BROKER_AUTH__SECRET=$SECRET "$BENCH" rpc --url "$WS_1" --admin "$ADMIN_1" \
                -n 100 --rate "$rate" --duration "$DUR" --warmup 2 --quiet \
                --save "$RESULTS/$name.json" >"$RESULTS/$name.md" &
            bench_pid=$!
            # CPU over 3 s in the middle of the measured phase.
            sleep $((2 + DUR / 2 - 1))
            top -b -d 3 -n 2 -p "$REDIS_PID,$GW_PID,$NODE_PID,$bench_pid" 2>/dev/null |
                awk '/^top -/ {n++} n == 2' >"$RESULTS/$name.top" || true
            if wait "$bench_pid"; then
                cat "$RESULTS/$name.md"
            else
                echo "$name failed" | tee -a "$RESULTS/$name.md" >&2
                FAILED+=("$name")
            fi
        done
    done
    redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' |
        grep -E '^cmdstat_(broker\.rpc|xadd|xreadgroup|xack)' >"$RESULTS/rpc.cmdstats" || true
    warnings rpc
    grep -v '^ready$' "$DIR/backend.log" | sort | uniq -c | sort -rn | head -n 10 >"$RESULTS/rpc.backend" || true
    stop_part
fi

# 3. Webhook delivery.
if [[ " $PARTS " == *" webhooks "* ]]; then
    part_dir webhooks
    HOOK_PORT=$(free_port 18399)
    { bench_gateway_config; cat <<EOF

[webhooks]
url = "http://127.0.0.1:$HOOK_PORT/hooks"
EOF
    } >"$DIR/gateway.toml"
    export BROKER_WEBHOOKS__SECRET=$HOOK_SECRET
    start_part webhooks "" 2
    unset BROKER_WEBHOOKS__SECRET
    for run in $(seq "$RUNS"); do
        bench "webhooks-$run" webhooks --url "$WS_1" --url "$WS_2" --admin "$ADMIN_1" --admin "$ADMIN_2" \
            --redis "redis://127.0.0.1:$REDIS_PORT" --listen "127.0.0.1:$HOOK_PORT" \
            --rate 200 --duration "$HOOK_DUR"
    done
    warnings webhooks
    stop_part
fi

ELAPSED=$((SECONDS - STARTED))
echo "total ${ELAPSED}s" >&2
[ -n "${BENCH_NO_DOC:-}" ] && exit $((${#FAILED[@]} > 0))

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT+=" (with uncommitted changes)"
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
MACHINE="$(nproc) cores ($CPU), $MEM memory, Linux $(uname -r), Redis $REDIS_VERSION, Node $(node --version 2>/dev/null || echo '-')"
python3 "$ROOT/scripts/bench-backends-report.py" "$RESULTS" "$DOC" \
    --runs "$RUNS" --date "$(date -u '+%Y-%m-%d %H:%M UTC')" --commit "$COMMIT" \
    --machine "$MACHINE" --elapsed "$ELAPSED" --conns "$CONNS" --duration "$DUR" \
    --hook-seconds "$HOOK_DUR" --rpc-rates "$RPC_RATES"
echo "results written to docs/BENCHMARKS.md" >&2
exit $((${#FAILED[@]} > 0))
