#!/usr/bin/env bash
# Measures the Redis CPU coefficients of docs/CAPACITY.md: the server's CPU
# time per publish, per gateway node the room has members on, and per
# stored history entry; and per `CONN.OPEN` and per `JOIN` of a new room,
# as redis-benchmark drives a Redis of our own (free port,
# temporary dir) pipelined (-P 16).
#
#   scripts/measure-redis-cpu.sh             # BENCH_N=200000 per run
#
# Rooms `cap:n<K>` have one member on each of K nodes (K = 1, 2, 4, 8, 16),
# every node channel has a subscriber (as a gateway would), `hist:n1`
# keeps history (100 messages). A replica follows the master; its CPU per
# replicated publish is reported too. CPU time is each server's main
# thread's (/proc/<pid>/schedstat), so other work on the machine moves it
# little.
# Prints a Markdown table and the least-squares fit
#   µs per publish = base + per_node × K
# plus what history adds per publish. BENCH_MODULE=<so> measures another
# build (an older one, for a before/after comparison).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MODULE=${BENCH_MODULE:-$MODULE}

N=${BENCH_N:-200000}
DIR=$(mktemp -d -t broker-cap.XXXXXX)
SUB_PID=""
PORT=""
REPLICA_PORT=""
cleanup() {
    [ -n "$SUB_PID" ] && kill "$SUB_PID" 2>/dev/null || true
    [ -n "$REPLICA_PORT" ] && stop_redis "$DIR/replica" "$REPLICA_PORT"
    [ -n "$PORT" ] && stop_redis "$DIR" "$PORT"
    rm -rf "$DIR"
}
trap cleanup EXIT

PORT=$(start_redis "$DIR" 6450 "HISTORY hist 100 300" --save '' --appendonly no \
    --client-output-buffer-limit "pubsub 0 0 0")
REPLICA_PORT=$(start_redis "$DIR/replica" 6460 "HISTORY hist 100 300" --save '' --appendonly no \
    --replicaof 127.0.0.1 "$PORT")
cli() { redis-cli -p "$PORT" "$@"; }
for _ in $(seq 100); do
    redis-cli -p "$REPLICA_PORT" INFO replication | grep -q "master_link_status:up" && break
    sleep 0.1
done
main_ns() {
    awk '{print $1}' "/proc/$(cat "$1/redis.pid")/schedstat" 2>/dev/null || echo 0
}
# The CPU µs per command of one pipelined run, the master's and (after it
# caught up) the replica's: us CMD ARGS...
us() {
    local before after rbefore rafter
    before=$(main_ns "$DIR")
    rbefore=$(main_ns "$DIR/replica")
    redis-benchmark -p "$PORT" -q -n "$N" -r 100000000 -P 16 --csv "$@" >/dev/null
    after=$(main_ns "$DIR")
    cli WAIT 1 10000 >/dev/null
    rafter=$(main_ns "$DIR/replica")
    awk -v a="$before" -v b="$after" -v c="$rbefore" -v d="$rafter" -v n="$N" \
        'BEGIN {printf "%.3f %.3f\n", (b - a) / 1000 / n, (d - c) / 1000 / n}'
}

channels=()
for k in $(seq 16); do
    cli BROKER.NODE.LEASE "n$k" 600000 >/dev/null
    channels+=("broker:node:n$k")
done
{
    for K in 1 2 4 8 16; do
        for k in $(seq "$K"); do
            printf 'BROKER.JOIN cap:n%d u%d c%d-%d n%d\r\n' "$K" "$k" "$K" "$k" "$k"
        done
    done
    printf 'BROKER.JOIN hist:n1 u1 h1 n1\r\n'
} | cli --pipe >/dev/null
redis-cli -p "$PORT" SUBSCRIBE "${channels[@]}" >/dev/null &
SUB_PID=$!
for _ in $(seq 50); do
    [ "$(cli PUBSUB NUMSUB broker:node:n16 | tail -n 1)" = 1 ] && break
    sleep 0.1
done

echo "Redis $(redis-server --version | awk '{print $3}' | sed 's/^v=//'), $N commands per run, -P 16"
echo
echo "| command | master CPU µs per command | replica CPU µs per command |"
echo "|---|---:|---:|"
xs=()
ys=()
for K in 1 2 4 8 16; do
    read -r u r < <(us BROKER.PUBLISH "cap:n$K" ev hello FORMAT string)
    xs+=("$K")
    ys+=("$u")
    echo "| \`PUBLISH\`, members on $K node(s), no history | $u | $r |"
done
read -r h r < <(us BROKER.PUBLISH hist:n1 ev hello FORMAT string)
echo "| \`PUBLISH\`, 1 node, history kept (100) | $h | $r |"
read -r o r < <(us BROKER.CONN.OPEN bench c__rand_int__ n1 127.0.0.1)
echo "| \`CONN.OPEN\` (a new connection each, one user) | $o | $r |"
read -r j r < <(us BROKER.JOIN cap:r__rand_int__ u1 j__rand_int__ n1)
echo "| \`JOIN\` of a new room (a new connection each) | $j | $r |"
echo
awk -v xs="${xs[*]}" -v ys="${ys[*]}" -v h="$h" 'BEGIN {
    n = split(xs, x, " "); split(ys, y, " ")
    for (i = 1; i <= n; i++) { sx += x[i]; sy += y[i]; sxx += x[i] * x[i]; sxy += x[i] * y[i] }
    b = (n * sxy - sx * sy) / (n * sxx - sx * sx); a = (sy - b * sx) / n
    printf "fit: µs per publish = %.2f + %.2f × nodes; history adds %.2f per publish\n", a, b, h - y[1]
}'
