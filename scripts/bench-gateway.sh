#!/usr/bin/env bash
# Gateway benchmarks with broker-bench (bench/): a Redis of our own with the
# module, two gateway nodes, and four scenarios, all on this machine.
#
#   connect  10,000 connections to node 1; memory per idle connection
#   fanout   1 room, 1,000 subscribers over both nodes, 1 publisher:
#            100 msg/s for 10 s, then max rate (64 in flight) for 10 s
#   chat     100 rooms x 10 members over both nodes, 1 msg/s per member, 10 s
#   churn    200 connections joining/leaving 20 rooms for 10 s while 2
#            publishers send 100 msg/s each; BROKER.ROOM.COUNT checked exactly
#
# Prints every table and writes them into the "Gateway" section of
# docs/BENCHMARKS.md (between the bench-gateway markers). About 2-3 minutes
# once built. Everything it starts (Redis on a free port with --save '' in a
# temporary dir, the gateways) is stopped on exit, however it exits.
#
# Environment:
#   BENCH_NO_BUILD=1   use the binaries in target/release as they are
#   BENCH_NO_DOC=1     do not touch docs/BENCHMARKS.md
#   BENCH_KEEP=1       keep the temporary dir (logs, config, JSON results)
#   BENCH_CONNS=10000  connections of the connect scenario
#   BENCH_DURATION=10  seconds of each timed phase (fanout, chat, churn)
#   BENCH_OUT=DIR      also copy each scenario's JSON results into DIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DOC="$ROOT/docs/BENCHMARKS.md"
CONNS=${BENCH_CONNS:-10000}
DUR=${BENCH_DURATION:-10}
SECRET=bench-secret
DIR=$(mktemp -d -t broker-gw-bench.XXXXXX)
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
bench_pinning

REDIS_PORT=$(start_redis "$DIR" 6500 "" --save '' --appendonly no)
REDIS_VERSION=$(redis-cli -p "$REDIS_PORT" INFO server | tr -d '\r' | awk -F: '/^redis_version:/ {print $2}')

bench_gateway_config >"$DIR/gateway.toml"

start_bench_gateway 1 gw-bench 18080 19090
start_bench_gateway 2 gw-bench 18080 19090
echo "Redis $REDIS_VERSION on port $REDIS_PORT; gateways $WS_1 (admin $ADMIN_1), $WS_2 (admin $ADMIN_2)" >&2

# The commands, as they appear in the report (URLs and ports vary per run).
CMD_CONNECT="broker-bench connect --url \$WS1 --admin \$ADMIN1 -n $CONNS --concurrency 100 --idle 5"
CMD_FANOUT="broker-bench fanout --url \$WS1 --url \$WS2 --admin \$ADMIN1 --admin \$ADMIN2 -m 1000 --rate 100 --duration $DUR --max-duration $DUR --inflight 64"
CMD_CHAT="broker-bench chat --url \$WS1 --url \$WS2 --admin \$ADMIN1 --admin \$ADMIN2 -r 100 -k 10 --rate 1 --duration $DUR"
CMD_CHURN="broker-bench churn --url \$WS1 --url \$WS2 --admin \$ADMIN1 --admin \$ADMIN2 --redis \$REDIS -c 200 --rooms 20 -p 2 --rate 100 --duration $DUR"

# run NAME COMMAND...: runs a scenario (at most 2 minutes), prints its
# tables and keeps them (and the JSON) in $DIR. A failed scenario is
# reported, and the others still run.
FAILED=()
run() {
    local name=$1 cmd
    shift
    cmd="$*"
    cmd=${cmd//$WS_1/\$WS1}
    cmd=${cmd//$WS_2/\$WS2}
    cmd=${cmd//$ADMIN_1/\$ADMIN1}
    cmd=${cmd//$ADMIN_2/\$ADMIN2}
    cmd=${cmd//redis:\/\/127.0.0.1:$REDIS_PORT/\$REDIS}
    echo >&2
    echo "== $name: ${cmd#"$BENCH" }" >&2
    if BROKER_AUTH__SECRET=$SECRET timeout 120 "${PIN_CLIENT[@]}" "$@" --save "$DIR/$name.json" >"$DIR/$name.md"; then
        cat "$DIR/$name.md"
        if [ -n "${BENCH_OUT:-}" ]; then
            mkdir -p "$BENCH_OUT" && cp "$DIR/$name.json" "$BENCH_OUT/"
        fi
    else
        echo "$name failed (exit $?)" | tee "$DIR/$name.md" >&2
        FAILED+=("$name")
    fi
}

run connect "$BENCH" connect --url "$WS_1" --admin "$ADMIN_1" -n "$CONNS" --concurrency 100 --idle 5
run fanout "$BENCH" fanout --url "$WS_1" --url "$WS_2" --admin "$ADMIN_1" --admin "$ADMIN_2" \
    -m 1000 --rate 100 --duration $DUR --max-duration $DUR --inflight 64
run chat "$BENCH" chat --url "$WS_1" --url "$WS_2" --admin "$ADMIN_1" --admin "$ADMIN_2" \
    -r 100 -k 10 --rate 1 --duration $DUR
run churn "$BENCH" churn --url "$WS_1" --url "$WS_2" --admin "$ADMIN_1" --admin "$ADMIN_2" \
    --redis "redis://127.0.0.1:$REDIS_PORT" -c 200 --rooms 20 -p 2 --rate 100 --duration $DUR

# What the gateways logged above INFO, by message (colours, timestamps and
# ids cut), leaving out the expected warning about the short bench secret.
problems() {
    local n
    for n in 1 2; do
        sed -E 's/\x1b\[[0-9;]*m//g' "$DIR/gateway-$n.log" 2>/dev/null |
            grep -E '^[^ ]+ +(WARN|ERROR) ' | grep -v 'auth.secret is shorter' |
            sed -E 's/^[^ ]+ +//; s/(conn|user|node|ip)=[^ ]+/\1=…/g' |
            sort | uniq -c | sort -rn | head -n 10 | sed "s/^/  node $n: /" || true
    done
}
PROBLEMS=$(problems)
for n in 1 2; do
    kill -0 "${GW_PIDS[$((n - 1))]}" 2>/dev/null || PROBLEMS+=$'\n'"  node $n: the gateway process exited during the run"
done
echo >&2
echo "gateway log lines above INFO: ${PROBLEMS:-none}" >&2
ELAPSED=$((SECONDS - STARTED))
echo "total ${ELAPSED}s" >&2

[ -n "${BENCH_NO_DOC:-}" ] && exit $((${#FAILED[@]} > 0))

# The report section.
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT+=" (with uncommitted changes)"
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
SECTION="$DIR/section.md"
{
    echo "<!-- bench-gateway:begin (written by scripts/bench-gateway.sh; edit the script, not this part) -->"
    echo
    echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC') at commit \`$COMMIT\`:"
    echo "$(nproc) cores ($CPU), $MEM memory, Linux $(uname -r), Redis $REDIS_VERSION."
    echo "The machine is shared with other work and noisy: Redis, both gateway nodes and"
    echo "the load tool also share its cores, so the figures are a floor, and two runs"
    echo "can differ by tens of percent. Whole run: ${ELAPSED} s."
    echo
    echo '```sh'
    echo "scripts/bench-gateway.sh   # which runs, against its own Redis (\$REDIS) and two gateway nodes"
    echo "                           # (\$WS1, \$WS2: ws://127.0.0.1:PORT/ws; \$ADMIN1, \$ADMIN2: admin host:port):"
    echo "$CMD_CONNECT"
    echo "$CMD_FANOUT"
    echo "$CMD_CHAT"
    echo "$CMD_CHURN"
    echo '```'
    echo
    for name in connect fanout chat churn; do
        echo "### $name"
        echo
        cat "$DIR/$name.md"
    done
    echo "### Gateway logs"
    echo
    if [ -n "$PROBLEMS" ]; then
        echo "Lines above INFO, counted by message:"
        echo
        echo '```'
        echo "$PROBLEMS"
        echo '```'
    else
        echo "Nothing above INFO."
    fi
    echo
    echo "<!-- bench-gateway:end -->"
} >"$SECTION"

# Replace the marked part of docs/BENCHMARKS.md (or add a Gateway section).
if [ -f "$DOC" ] && grep -q '<!-- bench-gateway:begin' "$DOC"; then
    awk -v section="$SECTION" '
        /<!-- bench-gateway:begin/ { while ((getline line < section) > 0) print line; skip = 1; next }
        /<!-- bench-gateway:end -->/ { skip = 0; next }
        !skip { print }
    ' "$DOC" >"$DIR/doc.md"
    cat "$DIR/doc.md" >"$DOC"
else
    { [ -f "$DOC" ] || echo "# Benchmarks"; echo; echo "## Gateway"; echo; cat "$SECTION"; } >>"$DOC"
fi
echo "results written to docs/BENCHMARKS.md" >&2
exit $((${#FAILED[@]} > 0))
