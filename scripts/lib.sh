# Shell helpers shared by scripts/run.sh and scripts/bench-module.sh (sourced).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODULE="$ROOT/target/release/libbroker_module.so"
GATEWAY="$ROOT/target/release/broker-gateway"

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
        redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
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
