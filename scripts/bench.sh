#!/usr/bin/env bash
# `make bench`: this broker and the Socket.IO peer side by side, on this
# machine, with the same scenarios and parameters, repeated; writes the
# "Side by side" section of docs/BENCHMARKS.md (medians and ratios) and
# the chart docs/bench-chart.svg.
#
#   BENCH_RUNS=3       runs of each side (alternating ours, theirs)
#   BENCH_DURATION=5   seconds of each timed phase (fan-out, chat, churn)
#   BENCH_CONNS=10000  connections of the connect storm
#
# Each run: scripts/bench-gateway.sh (our Redis + module, two gateway
# nodes, broker-bench) then scripts/bench-peer.sh (plain Redis, two
# Socket.IO nodes, the Node driver). About 8 minutes with the defaults.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-3}
export BENCH_DURATION=${BENCH_DURATION:-5}
export BENCH_CONNS=${BENCH_CONNS:-10000}
OUT=$(mktemp -d -t broker-bench-compare.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
STARTED=$SECONDS

echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release -p broker-module -p broker-gateway -p broker-bench) >&2
for run in $(seq "$RUNS"); do
    echo "== run $run of $RUNS: ours" >&2
    BENCH_NO_BUILD=1 BENCH_NO_DOC=1 BENCH_OUT="$OUT/ours/$run" "$ROOT/scripts/bench-gateway.sh" >/dev/null ||
        echo "ours, run $run: a scenario failed" >&2
    echo "== run $run of $RUNS: Socket.IO" >&2
    BENCH_OUT="$OUT/peer/$run" "$ROOT/scripts/bench-peer.sh" >/dev/null ||
        echo "Socket.IO, run $run: a scenario failed" >&2
done

ELAPSED=$((SECONDS - STARTED))
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT+=" (with uncommitted changes)"
SIO=$(node -e 'console.log(require(process.argv[1]+"/bench/socketio/node_modules/socket.io/package.json").version)' "$ROOT" 2>/dev/null || echo "?")
ADAPTER=$(node -e 'console.log(require(process.argv[1]+"/bench/socketio/node_modules/@socket.io/redis-adapter/package.json").version)' "$ROOT" 2>/dev/null || echo "?")
MACHINE="Run on $(date -u '+%Y-%m-%d %H:%M UTC') at commit \`$COMMIT\`: $(nproc) cores ($CPU), $MEM,
Linux $(uname -r), $(redis-server --version | awk '{print $3}' | tr -d 'v='), Node $(node --version),
socket.io $SIO, @socket.io/redis-adapter $ADAPTER. Redis, both nodes and the load tool of each side
share the same cores: both sides are measured with the same handicap."
python3 "$ROOT/scripts/bench-report.py" "$OUT" "$ROOT/docs/BENCHMARKS.md" "$ROOT/docs/bench-chart.svg" \
    --machine "$MACHINE" \
    --command "make bench   # BENCH_RUNS=$RUNS BENCH_DURATION=$BENCH_DURATION BENCH_CONNS=$BENCH_CONNS" \
    --elapsed "whole run ${ELAPSED} s"
echo "written: docs/BENCHMARKS.md (side by side), docs/bench-chart.svg" >&2
