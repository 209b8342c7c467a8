#!/usr/bin/env bash
# The measurements behind docs/CAPACITY.md that need gateways:
#
#   scripts/capacity.sh gateway   # one Redis, one gateway: the gateway's CPU
#                                 # µs per delivery and per client publish,
#                                 # and Redis's per publish, from two loads
#   scripts/capacity.sh cluster   # a 3+3 Redis Cluster and three gateways at
#                                 # two load levels: CPU predicted by the
#                                 # coefficients (env, below) vs measured
#
# Load: `broker-bench chat` (R rooms × K members spread round-robin over the
# gateways, every member publishing at RATE/s; the publisher gets its own
# message too, so a publish is K deliveries). CPU: utime + stime of each
# process (/proc/<pid>/stat, all threads), over WINDOW seconds in the middle
# of the publishing phase. Nothing is pinned: the load tool shares the two
# cores, and its own CPU is reported.
#
# The cluster run predicts with these coefficients (defaults: the figures in
# docs/CAPACITY.md; pass fresh ones to check them):
#   GW_US_DELIVERY GW_US_PUBLISH    gateway µs per delivery / per client publish
#   REDIS_US_BASE REDIS_US_NODE     master µs per publish + per node with members
#   REPLICA_US_PUBLISH              replica µs per replicated publish
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MODE=${1:-}
WINDOW=${WINDOW:-10}
SECRET=capacity-secret-capacity-secret-0123
DIR=$(mktemp -d -t broker-capacity.XXXXXX)
REDIS_DIRS=()
REDIS_PORTS=()
cleanup() {
    stop_bench_gateways 2>/dev/null || true
    local i
    for i in "${!REDIS_PORTS[@]}"; do
        stop_redis "${REDIS_DIRS[$i]}" "${REDIS_PORTS[$i]}"
    done
    rm -rf "$DIR"
}
trap cleanup EXIT
ensure_bench_binaries "${NO_BUILD:-}"
bench_gateway_config >"$DIR/gateway.toml"

# Clock ticks of CPU (user + system, all threads) a process has used.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

# run_load LABEL ROOMS MEMBERS RATE URLS...: runs broker-bench chat, samples
# the CPU of every pid in PIDS (and the load tool) over WINDOW seconds of
# its publishing; sets PUB_S, DELIV_S and CPU_<i> (cores) for PIDS[i], and
# BENCH_CPU.
run_load() {
    local label=$1 rooms=$2 members=$3 rate=$4 out="$DIR/bench-$1.json" log="$DIR/bench-$1.log"
    shift 4
    local urls=() u
    for u in "$@"; do urls+=(--url "$u"); done
    BROKER_AUTH__SECRET=$SECRET "$BENCH" --json chat "${urls[@]}" -r "$rooms" -k "$members" \
        --rate "$rate" --duration $((WINDOW + 8)) --drain 3 --concurrency 50 >"$out" 2>"$log" &
    local bench_pid=$!
    local waited=0
    until grep -q "acked" "$log" 2>/dev/null; do
        sleep 0.2
        waited=$((waited + 1))
        [ $waited -lt 300 ] || { echo "$label: no publishing after 60 s" >&2; tail "$log" >&2; exit 1; }
    done
    sleep 3
    local before=() after=() p bench_before bench_after
    for p in "${PIDS[@]}"; do before+=("$(ticks "$p")"); done
    bench_before=$(ticks "$bench_pid")
    sleep "$WINDOW"
    for p in "${PIDS[@]}"; do after+=("$(ticks "$p")"); done
    bench_after=$(ticks "$bench_pid")
    wait "$bench_pid" || { echo "$label: broker-bench failed" >&2; tail "$log" >&2; exit 1; }
    local i
    for i in "${!PIDS[@]}"; do
        printf -v "CPU_$i" '%s' "$(awk -v a="${before[$i]}" -v b="${after[$i]}" -v hz="$HZ" -v w="$WINDOW" 'BEGIN {printf "%.4f", (b - a) / hz / w}')"
    done
    BENCH_CPU=$(awk -v a="$bench_before" -v b="$bench_after" -v hz="$HZ" -v w="$WINDOW" 'BEGIN {printf "%.3f", (b - a) / hz / w}')
    PUB_S=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["publish_per_s"])' "$out")
    DELIV_S=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["delivered_per_s"])' "$out")
}

redis_pid() { cat "$1/redis.pid"; }

case "$MODE" in
gateway)
    REDIS_DIRS=("$DIR/redis")
    REDIS_PORT=$(start_redis "$DIR/redis" 6600 "" --save '' --appendonly no)
    REDIS_PORTS=("$REDIS_PORT")
    start_bench_gateway 1 cap 8600 9600
    PIDS=("${GW_PIDS[0]}" "$(redis_pid "$DIR/redis")")
    echo "| load | publishes/s | deliveries/s | gateway cores | Redis cores | load tool cores |"
    echo "|---|---:|---:|---:|---:|---:|"
    # Big rooms: deliveries dominate. Pairs: client publishes dominate.
    run_load fanout 4 250 0.4 "$WS_1"
    G1=$CPU_0 R1=$CPU_1 P1=$PUB_S D1=$DELIV_S
    echo "| 4 rooms × 250, 0.4 msg/s each | $P1 | $D1 | $G1 | $R1 | $BENCH_CPU |"
    run_load pairs 500 2 2 "$WS_1"
    G2=$CPU_0 R2=$CPU_1 P2=$PUB_S D2=$DELIV_S
    echo "| 500 rooms × 2, 2 msg/s each | $P2 | $D2 | $G2 | $R2 | $BENCH_CPU |"
    awk -v g1="$G1" -v p1="$P1" -v d1="$D1" -v g2="$G2" -v p2="$P2" -v d2="$D2" \
        -v r1="$R1" -v r2="$R2" 'BEGIN {
        # g = d × us_d + p × us_p, two equations.
        det = d1 * p2 - d2 * p1
        ud = (g1 * p2 - g2 * p1) / det * 1e6
        up = (d1 * g2 - d2 * g1) / det * 1e6
        printf "\ngateway: %.2f µs per delivery, %.2f µs per client publish\n", ud, up
        printf "Redis (one node per room): %.2f µs per publish at 4 rooms × 250, %.2f at 500 × 2\n", r1 / p1 * 1e6, r2 / p2 * 1e6
    }'
    ;;
cluster)
    GW_US_DELIVERY=${GW_US_DELIVERY:-0.9}
    GW_US_PUBLISH=${GW_US_PUBLISH:-30}
    REDIS_US_BASE=${REDIS_US_BASE:-3.0}
    REDIS_US_NODE=${REDIS_US_NODE:-1.0}
    REPLICA_US_PUBLISH=${REPLICA_US_PUBLISH:-2.0}
    addrs=()
    for i in 0 1 2 3 4 5; do
        REDIS_DIRS+=("$DIR/redis-$i")
        port=$(start_redis "$DIR/redis-$i" $((6700 + 10 * i)) "" --save '' --appendonly no \
            --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000)
        REDIS_PORTS+=("$port")
        addrs+=("127.0.0.1:$port")
    done
    redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 ||
        { cat "$DIR/create.log" >&2; exit 1; }
    for _ in $(seq 100); do
        ok=0
        for p in "${REDIS_PORTS[@]}"; do
            redis-cli -p "$p" CLUSTER INFO | grep -q "cluster_state:ok" && ok=$((ok + 1))
        done
        [ $ok = 6 ] && break
        sleep 0.2
    done
    urls=""
    for p in "${REDIS_PORTS[@]}"; do urls+="\"redis://127.0.0.1:$p\","; done
    printf '[redis]\nurl = [%s]\n' "${urls%,}" >>"$DIR/gateway.toml"
    REDIS_PORT=""
    for n in 1 2 3; do start_bench_gateway "$n" cap 8700 9700; done
    masters=() replicas=()
    for i in "${!REDIS_PORTS[@]}"; do
        if redis-cli -p "${REDIS_PORTS[$i]}" ROLE | head -n 1 | grep -q master; then
            masters+=("$(redis_pid "${REDIS_DIRS[$i]}")")
        else
            replicas+=("$(redis_pid "${REDIS_DIRS[$i]}")")
        fi
    done
    PIDS=("${GW_PIDS[@]}" "${masters[@]}" "${replicas[@]}")
    echo "3 masters + 3 replicas, 3 gateways; every room has members on all 3 gateways."
    echo "coefficients: gateway $GW_US_DELIVERY µs/delivery + $GW_US_PUBLISH µs/client publish;" \
        "master $REDIS_US_BASE + $REDIS_US_NODE × 3 nodes µs/publish; replica $REPLICA_US_PUBLISH µs/publish"
    echo
    echo "| load | publishes/s | deliveries/s | gateways: predicted / measured (cores) | masters: predicted / measured | replicas: predicted / measured | load tool |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for level in ${LEVELS:-200:20:0.5 400:20:1}; do
        IFS=: read -r rooms members rate <<<"$level"
        run_load "level-$rooms-$members-$rate" "$rooms" "$members" "$rate" "$WS_1" "$WS_2" "$WS_3"
        gw=$(awk -v a="$CPU_0" -v b="$CPU_1" -v c="$CPU_2" 'BEGIN {printf "%.3f", a + b + c}')
        ma=$(awk -v a="$CPU_3" -v b="$CPU_4" -v c="$CPU_5" 'BEGIN {printf "%.3f", a + b + c}')
        re=$(awk -v a="$CPU_6" -v b="$CPU_7" -v c="$CPU_8" 'BEGIN {printf "%.3f", a + b + c}')
        read -r pgw pma pre < <(awk -v p="$PUB_S" -v d="$DELIV_S" -v ud="$GW_US_DELIVERY" -v up="$GW_US_PUBLISH" \
            -v rb="$REDIS_US_BASE" -v rn="$REDIS_US_NODE" -v rr="$REPLICA_US_PUBLISH" \
            'BEGIN {printf "%.3f %.3f %.3f", (d * ud + p * up) / 1e6, p * (rb + 3 * rn) / 1e6, p * rr / 1e6}')
        echo "| $rooms rooms × $members, $rate msg/s each | $PUB_S | $DELIV_S | $pgw / $gw | $pma / $ma | $pre / $re | $BENCH_CPU |"
    done
    ;;
*)
    echo "usage: $0 gateway|cluster" >&2
    exit 2
    ;;
esac
