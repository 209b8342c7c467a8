# Shell helpers shared by the scripts (sourced): Redis with the module, free ports, bench gateways.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODULE="$ROOT/target/release/libbroker_module.so"
GATEWAY="$ROOT/target/release/broker-gateway"
BENCH="$ROOT/target/release/broker-bench"

# CPU pinning of the benchmarks (docs/BENCHMARKS.md, "How the figures are
# made"): a bench script calls `bench_pinning` once; then the servers
# (Redis, gateway or Socket.IO nodes) start under $PIN_SERVER and the load
# tool under $PIN_CLIENT, so the two sides never fight for one core. Both
# stay empty (nothing pinned) outside the benchmarks, with BENCH_PIN=0, on
# one core, or without taskset.
PIN_SERVER=()
PIN_CLIENT=()
bench_pinning() {
    if [ "${BENCH_PIN:-1}" = 0 ] || [ "$(nproc)" -lt 2 ] || ! command -v taskset >/dev/null; then
        return 0
    fi
    PIN_SERVER=(taskset -c "${BENCH_SERVER_CPUS:-0}")
    PIN_CLIENT=(taskset -c "${BENCH_CLIENT_CPUS:-1}")
    echo "pinning: servers on CPU ${BENCH_SERVER_CPUS:-0}, load tool on CPU ${BENCH_CLIENT_CPUS:-1} (BENCH_PIN=0: off)" >&2
}

# port_in_use PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port PREFERRED: PREFERRED when nothing listens there, else the first free
# port above it. The port can still be taken before we bind it; callers retry.
free_port() {
    local port=$1
    while port_in_use "$port"; do
        port=$((port + 1))
    done
    echo "$port"
}

# wait_redis PORT SECONDS: poll PING until Redis answers or the time is up.
wait_redis() {
    local port=$1 deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        if [ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# pid_alive PIDFILE NAME: true when PIDFILE names a running process whose
# command line contains NAME (so a recycled pid is not mistaken for ours).
pid_alive() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2"
}

# start_redis DIR PREFERRED_PORT "MODULE ARGS" [SERVER OPTIONS...]: start a
# daemonized redis-server with the module, logging to DIR/redis.log, pid in
# DIR/redis.pid; prints the port it listens on. Tries the next free port when
# one is taken.
start_redis() {
    local dir=$1 port=$2 module_args=$3 attempt
    shift 3
    if [ ! -f "$MODULE" ]; then
        echo "module not found at $MODULE: run 'make build' first" >&2
        return 1
    fi
    mkdir -p "$dir"
    # shellcheck disable=SC2086 # module_args is a list of words on purpose
    for attempt in 1 2 3 4 5; do
        port=$(free_port "$port")
        rm -f "$dir/redis.pid"
        "${PIN_SERVER[@]}" redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
            --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
            --enable-debug-command local "$@" \
            --loadmodule "$MODULE" $module_args >/dev/null
        if wait_redis "$port" 10; then
            echo "$port"
            return 0
        fi
        if ! grep -q "Address already in use" "$dir/redis.log" 2>/dev/null; then
            break
        fi
        port=$((port + 1))
    done
    echo "redis-server did not start; last lines of $dir/redis.log:" >&2
    tail -n 20 "$dir/redis.log" >&2 || true
    return 1
}

# stop_redis DIR PORT: shut down the Redis started by start_redis (no save),
# waiting for it to exit.
stop_redis() {
    local dir=$1 port=$2 pid i
    pid_alive "$dir/redis.pid" redis-server || return 0
    pid=$(cat "$dir/redis.pid")
    redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

# http_status PORT PATH: the status code of GET http://127.0.0.1:PORT/PATH.
http_status() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
        head -n 1 <&3 | awk '{print $2}'
    ) 2>/dev/null
}

# The bench scripts' gateways (scripts/bench-gateway.sh, scripts/attack.sh).
# They set DIR (holds gateway.toml and the logs), SECRET and REDIS_PORT
# (empty: gateway.toml names the Redis, e.g. a cluster's seeds); each
# started gateway's pid goes into GW_PIDS.
GW_PIDS=()

# start_bench_gateway N NAME PORT_BASE ADMIN_BASE: node NAME-N on free ports
# near PORT_BASE + 10 N and ADMIN_BASE + 10 N, waits until /readyz says 200;
# sets WS_N and ADMIN_N. Exits the script when the gateway dies or is not
# ready within 10 s.
start_bench_gateway() {
    local n=$1 name=$2 port admin pid i
    port=$(free_port $(($3 + 10 * n)))
    admin=$(free_port $(($4 + 10 * n)))
    local redis_env=()
    [ -n "${REDIS_PORT:-}" ] && redis_env=(BROKER_REDIS__URL="redis://127.0.0.1:$REDIS_PORT")
    env "${redis_env[@]}" BROKER_AUTH__SECRET=$SECRET \
        BROKER_LISTEN="127.0.0.1:$port" BROKER_ADMIN_LISTEN="127.0.0.1:$admin" \
        BROKER_NODE_ID="$name-$n" RUST_LOG=${RUST_LOG:-info} \
        "${PIN_SERVER[@]}" "$GATEWAY" --config "$DIR/gateway.toml" >"$DIR/gateway-$n.log" 2>&1 </dev/null &
    pid=$!
    GW_PIDS+=("$pid")
    for i in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "gateway $n exited:" >&2
            tail -n 20 "$DIR/gateway-$n.log" >&2
            exit 1
        fi
        [ "$(http_status "$port" /readyz)" = 200 ] && break
        sleep 0.1
    done
    [ "$(http_status "$port" /readyz)" = 200 ] || { echo "gateway $n not ready" >&2; exit 1; }
    printf -v "WS_$n" 'ws://127.0.0.1:%s/ws' "$port"
    printf -v "ADMIN_$n" '127.0.0.1:%s' "$admin"
}

# stop_bench_gateways: SIGTERM every gateway of GW_PIDS, SIGKILL what is
# still there after 5 s.
stop_bench_gateways() {
    local pid i
    for pid in "${GW_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${GW_PIDS[@]}"; do
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
}

# ensure_bench_binaries NO_BUILD: builds the module, the gateway and the
# load tool (release) unless NO_BUILD is set, then checks all three exist.
ensure_bench_binaries() {
    if [ -z "${1:-}" ]; then
        echo "building (release)..." >&2
        (cd "$ROOT" && cargo build --release -p broker-module -p broker-gateway -p broker-bench)
    fi
    local bin
    for bin in "$MODULE" "$GATEWAY" "$BENCH"; do
        [ -f "$bin" ] || { echo "missing $bin: build first" >&2; exit 1; }
    done
}

# bench_gateway_config: the benchmarks' gateway configuration. The chat
# namespace without a rate limit (the defaults would refuse the load), no
# history, presence requests allowed, no join/leave events (a 1,000-member
# room would otherwise get a million of them while filling); connection
# limits high enough for every scenario from few source IPs; and no
# per-connection request limit (`limits.requests`, 200 per 10 s by default,
# would cap churn's 200 connections at 5,000 joins + leaves a second and an
# rpc run at 20 rpc/s per connection: the figure would be the limit's).
bench_gateway_config() {
    cat <<'EOF'
[limits]
max_conns_per_user = 1000000
max_conns_per_ip = 1000000

[limits.requests]
count = 1000000
period_s = 1
burst = 1000000

[namespaces.chat]
join = "public"
publish = "members"
presence = true
join_leave = false
history = 0
EOF
}


# ensure_socketio_modules WHO: node is there, and bench/socketio's npm
# packages (the peer's server and the driver) are installed from the
# committed lock (`npm ci` when node_modules is missing or older than it).
ensure_socketio_modules() {
    local peer="$ROOT/bench/socketio"
    command -v node >/dev/null || { echo "$1: node is not installed (apt-get install nodejs npm)" >&2; exit 1; }
    if [ ! -f "$peer/node_modules/.package-lock.json" ] ||
        [ "$peer/package-lock.json" -nt "$peer/node_modules/.package-lock.json" ]; then
        echo "$1: npm ci in bench/socketio..." >&2
        (cd "$peer" && npm ci --no-audit --no-fund --loglevel=error) >&2
    fi
}
