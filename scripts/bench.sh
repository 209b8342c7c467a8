#!/usr/bin/env bash
# `make bench`: this broker and the Socket.IO peer side by side, on this
# machine, with the same scenarios and parameters, repeated; writes the
# "Side by side" section of docs/BENCHMARKS.md (medians and ratios) and
# the chart docs/bench-chart.svg, and the "Same client, two servers"
# section (the peer's Node driver against our gateway's /socket.io/ and
# against the Socket.IO server).
#
#   BENCH_RUNS=5       runs of each side (alternating ours, theirs, sio)
#   BENCH_PIN=1        servers on CPU BENCH_SERVER_CPUS [0], load tools on BENCH_CLIENT_CPUS [1]; 0: unpinned
#   BENCH_DURATION=5   seconds of each timed phase (fan-out, chat, churn)
#   BENCH_CONNS=10000  connections of the connect storm
#   BENCH_SIDES="ours peer sio"  which sides run (the sections whose sides
#                      all ran are written: ours for "Side by side", peer
#                      and sio for "Same client")
#   BENCH_NO_BUILD=1   use the binaries in target/release as they are
#   BENCH_KEEP=1       keep the JSON results (the dir is printed), and each
#                      script keeps its working dir (logs)
#
# Each run: scripts/bench-gateway.sh (our Redis + module, two gateway
# nodes, broker-bench), scripts/bench-peer.sh (plain Redis, two Socket.IO
# nodes, the Node driver), then scripts/bench-sio.sh (our Redis + module,
# two gateway nodes, the same Node driver with --dialect broker: connect,
# fanout, chat). About 12 minutes with the defaults.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-5}
export BENCH_DURATION=${BENCH_DURATION:-5}
export BENCH_CONNS=${BENCH_CONNS:-10000}
SIDES=" ${BENCH_SIDES:-ours peer sio} "
OUT=$(mktemp -d -t broker-bench-compare.XXXXXX)
if [ -n "${BENCH_KEEP:-}" ]; then
    trap 'echo "kept $OUT" >&2' EXIT
else
    trap 'rm -rf "$OUT"' EXIT
fi
STARTED=$SECONDS

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    echo "building (release)..." >&2
    (cd "$ROOT" && cargo build --release -p broker-module -p broker-gateway -p broker-bench) >&2
fi
for run in $(seq "$RUNS"); do
    if [[ $SIDES == *" ours "* ]]; then
        echo "== run $run of $RUNS: ours" >&2
        BENCH_NO_BUILD=1 BENCH_NO_DOC=1 BENCH_OUT="$OUT/ours/$run" "$ROOT/scripts/bench-gateway.sh" >/dev/null ||
            echo "ours, run $run: a scenario failed" >&2
    fi
    if [[ $SIDES == *" peer "* ]]; then
        echo "== run $run of $RUNS: Socket.IO" >&2
        BENCH_OUT="$OUT/peer/$run" "$ROOT/scripts/bench-peer.sh" >/dev/null ||
            echo "Socket.IO, run $run: a scenario failed" >&2
    fi
    if [[ $SIDES == *" sio "* ]]; then
        echo "== run $run of $RUNS: socket.io-client against the gateway's /socket.io/" >&2
        BENCH_NO_BUILD=1 BENCH_OUT="$OUT/sio/$run" "$ROOT/scripts/bench-sio.sh" >/dev/null ||
            echo "gateway /socket.io/, run $run: a scenario failed" >&2
    fi
done

ELAPSED=$((SECONDS - STARTED))
if [ "${BENCH_PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PINNING="On each side Redis and both server nodes run on CPU ${BENCH_SERVER_CPUS:-0} and the load tool on
CPU ${BENCH_CLIENT_CPUS:-1} (taskset; scripts/lib.sh bench_pinning), so the two never take each other's core."
else
    PINNING="Redis, both nodes and the load tool of each side share the same cores (BENCH_PIN=0): both sides are
measured with the same handicap."
fi
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT+=" (with uncommitted changes)"
SIO=$(node -e 'console.log(require(process.argv[1]+"/bench/socketio/node_modules/socket.io/package.json").version)' "$ROOT" 2>/dev/null || echo "?")
CLIENT=$(node -e 'console.log(require(process.argv[1]+"/bench/socketio/node_modules/socket.io-client/package.json").version)' "$ROOT" 2>/dev/null || echo "?")
ADAPTER=$(node -e 'console.log(require(process.argv[1]+"/bench/socketio/node_modules/@socket.io/redis-adapter/package.json").version)' "$ROOT" 2>/dev/null || echo "?")
MACHINE="Run on $(date -u '+%Y-%m-%d %H:%M UTC') at commit \`$COMMIT\`: $(nproc) cores ($CPU), $MEM,
Linux $(uname -r), $(redis-server --version | awk '{print $3}' | tr -d 'v='), Node $(node --version),
socket.io $SIO, @socket.io/redis-adapter $ADAPTER, socket.io-client $CLIENT. $PINNING"
CMD="make bench   # BENCH_RUNS=$RUNS BENCH_DURATION=$BENCH_DURATION BENCH_CONNS=$BENCH_CONNS"
[ -z "${BENCH_SIDES:-}" ] || CMD+=" BENCH_SIDES=\"$BENCH_SIDES\""
python3 "$ROOT/scripts/bench-report.py" "$OUT" "$ROOT/docs/BENCHMARKS.md" "$ROOT/docs/bench-chart.svg" \
    --machine "$MACHINE" \
    --command "$CMD" \
    --elapsed "whole run ${ELAPSED} s"
echo "written: docs/BENCHMARKS.md" >&2
