#!/usr/bin/env bash
# `make bench-module`: what the broker's commands cost next to the native Redis
# commands closest to them, measured with redis-benchmark against a Redis of
# our own (free port, temporary dir), non-pipelined and pipelined (-P 16).
#
#   BROKER.THROTTLE            vs SET           (one key read and written)
#   BROKER.JOIN / BROKER.LEAVE vs SADD / SREM   (set membership)
#   BROKER.PUBLISH             vs PUBLISH       (fan-out through Pub/Sub)
#
# The PUBLISH rows use rooms whose members live on 1 or 4 gateway nodes: the
# module publishes once per node that hosts members, so the cost follows the
# number of nodes, not of members. One subscriber listens on every node channel
# (and on the native channel), as gateways would.
#
# Next to ops/s, the pipelined runs report the server's CPU time per command
# (its main thread's, from /proc/<pid>/schedstat): on a machine shared with
# other work, ops/s move with whatever else runs, CPU time per command much
# less.
#
# BENCH_N (default 100000) requests per run; about a minute in all.
# BENCH_MODULE: another build of the module to measure (a copy of an older
# build, for a before/after comparison on the same machine state).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MODULE=${BENCH_MODULE:-$MODULE}

N=${BENCH_N:-100000}
DIR=$(mktemp -d -t broker-bench.XXXXXX)
SUB_PID=""
PORT=""

cleanup() {
    [ -n "$SUB_PID" ] && kill "$SUB_PID" 2>/dev/null || true
    [ -n "$PORT" ] && stop_redis "$DIR" "$PORT"
    rm -rf "$DIR"
}
trap cleanup EXIT

# No output-buffer limit for subscribers: the one below must not be cut off
# when it falls behind during the pipelined runs.
PORT=$(start_redis "$DIR" 6400 "HISTORY chat 100 300" --save '' --appendonly no \
    --client-output-buffer-limit "pubsub 0 0 0")
cli() { redis-cli -p "$PORT" "$@"; }

# Fails loudly when a command errors: redis-benchmark would count error
# replies as operations.
check() {
    local out
    out=$(cli --no-raw "$@" 2>&1)
    if [[ "$out" == "(error)"* ]]; then
        echo "bench: '$*' fails: $out" >&2
        exit 1
    fi
}

# CPU time of the server's main thread so far, ns.
server_ns() {
    awk '{print $1}' "/proc/$(cat "$DIR/redis.pid")/schedstat" 2>/dev/null || echo 0
}

# ops/s of one redis-benchmark run and the server's CPU µs per command:
# bench [-P 16] CMD ARGS...
bench() {
    local extra=() before after ops
    if [ "$1" = "-P" ]; then
        extra=(-P "$2")
        shift 2
    fi
    before=$(server_ns)
    ops=$(redis-benchmark -p "$PORT" -q -n "$N" -r 100000 --csv "${extra[@]}" "$@" |
        tail -n 1 | cut -d, -f2 | tr -d '"')
    after=$(server_ns)
    echo "$ops $(awk -v a="$before" -v b="$after" -v n="$N" 'BEGIN {printf "%.3f", (b - a) / 1000 / n}')"
}

echo "setting up (Redis $(redis-server --version | awk '{print $3}' | sed 's/^v=//') on port $PORT, $N requests per run)..."
for n in n1 n2 n3 n4; do cli BROKER.NODE.LEASE "$n" 600000 >/dev/null; done
# Rooms of 1,000 members: chat:big over 4 nodes, chat:one on 1 node; chat:few
# has 8 members over the same 4 nodes. Every connection is opened first, as a
# gateway would, including the 100,000 that the JOIN/LEAVE runs pick from
# (redis-benchmark's __rand_int__ is a 12-digit number).
{
    for i in $(seq 1000); do
        n=$((i % 4 + 1))
        printf 'BROKER.CONN.OPEN u%d b%d n%d 127.0.0.1\r\n' "$i" "$i" "$n"
        printf 'BROKER.JOIN chat:big u%d b%d n%d\r\n' "$i" "$i" "$n"
        printf 'BROKER.CONN.OPEN u%d o%d n1 127.0.0.1\r\n' "$i" "$i"
        printf 'BROKER.JOIN chat:one u%d o%d n1\r\n' "$i" "$i"
    done
    for i in $(seq 8); do
        n=$((i % 4 + 1))
        printf 'BROKER.CONN.OPEN u%d f%d n%d 127.0.0.1\r\n' "$i" "$i" "$n"
        printf 'BROKER.JOIN chat:few u%d f%d n%d\r\n' "$i" "$i" "$n"
    done
    for i in $(seq 0 99999); do
        printf 'BROKER.CONN.OPEN bench c%012d n1 127.0.0.1\r\n' "$i"
    done
} | cli --pipe >/dev/null
for room in chat:big chat:one chat:few; do
    echo "  $room: $(cli BROKER.ROOM.COUNT "$room" | tr '\n' ' ')"
done
# One subscriber on every node channel and on the native channel; its output
# goes nowhere, it only makes Redis write every message to a client.
redis-cli -p "$PORT" SUBSCRIBE broker:node:n1 broker:node:n2 broker:node:n3 broker:node:n4 chan >/dev/null &
SUB_PID=$!
for _ in $(seq 50); do
    [ "$(cli PUBSUB NUMSUB chan | tail -n 1)" = 1 ] && break
    sleep 0.1
done

# Each case: label | module command | native command.
cases=(
    "THROTTLE vs SET|BROKER.THROTTLE tk 100 1000000 1|SET sk v"
    "JOIN vs SADD|BROKER.JOIN chat:bench bench c__rand_int__ n1|SADD s m__rand_int__"
    "LEAVE vs SREM|BROKER.LEAVE chat:bench bench c__rand_int__|SREM s m__rand_int__"
    "PUBLISH 1000 members/4 nodes|BROKER.PUBLISH chat:big ev hi FORMAT string|PUBLISH chan hi"
    "PUBLISH 1000 members/1 node|BROKER.PUBLISH chat:one ev hi FORMAT string|PUBLISH chan hi"
    "PUBLISH 8 members/4 nodes|BROKER.PUBLISH chat:few ev hi FORMAT string|PUBLISH chan hi"
)
for c in "${cases[@]}"; do
    IFS='|' read -r _ module native <<<"$c"
    # shellcheck disable=SC2086 # the commands are word lists
    check ${module//__rand_int__/000000000001}
done

printf '\n%-30s %12s %12s %7s   %12s %12s %7s   %9s %9s %7s\n' "" "module" "native" "ratio" \
    "module -P16" "native -P16" "ratio" "module us" "native us" "ratio"
for c in "${cases[@]}"; do
    IFS='|' read -r label module native <<<"$c"
    # shellcheck disable=SC2086 # the commands are word lists
    {
        read -r m1 _ < <(bench $module)
        read -r n1 _ < <(bench $native)
        read -r m16 mus < <(bench -P 16 $module)
        read -r n16 nus < <(bench -P 16 $native)
    }
    printf '%-30s %12.0f %12.0f %7.2f   %12.0f %12.0f %7.2f   %9.2f %9.2f %7.2f\n' "$label" \
        "$m1" "$n1" "$(awk -v a="$m1" -v b="$n1" 'BEGIN {print a / b}')" \
        "$m16" "$n16" "$(awk -v a="$m16" -v b="$n16" 'BEGIN {print a / b}')" \
        "$mus" "$nus" "$(awk -v a="$mus" -v b="$nus" 'BEGIN {print (a > 0) ? b / a : 0}')"
done
echo
echo "ops/s; ratio = module / native (1.00: as fast as the native command)."
echo "us: the server's CPU time per command in the -P16 runs; its ratio = native / module."
echo "INFO broker after the runs (connections: 2,008 in rooms + 100,000 for JOIN/LEAVE):"
cli INFO broker | grep -v '^#' | tr -d '\r' | grep . | sed 's/^/  /'
