#!/usr/bin/env bash
# The measurements behind docs/CAPACITY.md that need gateways, on one Redis
# or a 3+3 Redis Cluster, with three gateways:
#
#   scripts/capacity.sh single    # one Redis: calibrate the coefficients
#   scripts/capacity.sh cluster   # 3+3 cluster: calibrate, then check the
#                                 # prediction at two load levels the
#                                 # calibration did not run
#   scripts/capacity.sh sparse    # one Redis, three gateways, 10,000
#                                 # connections each getting ~0.5 messages
#                                 # a second: gateway CPU per delivery where
#                                 # no write batches (the million-connection
#                                 # estimate's regime)
#
# Calibration: eight runs (rooms of 100 members or pairs, two rates each,
# their members on one, two or three gateways; every connection receives 2
# to 20 messages a second, so each delivery is about one write: the
# per-delivery cost of the usual workloads, higher than at hundreds of
# messages a second per connection, where writes batch), and a
# least-squares fit of
#   gateways' cores = g × gateways + d × deliveries/s + q × client publishes/s
#                     + e × envelopes/s (a publish's envelope to each gateway
#                     with members of its room)
#   masters' cores  = f × masters + r × publishes/s + n × envelopes/s
#   replicas' cores = h × replicas + s × publishes/s + t × envelopes/s
# The check: rooms of 20 members over all three gateways at 0.5, 1.5 and 3
# publishes per member per second (the last fills a 2-core machine),
# predicted from the fit, then measured.
#
# Load: `broker-bench chat` (R rooms × K members spread round-robin over the
# gateways, every member publishing at RATE/s; the publisher gets its own
# message too, so a publish is K deliveries). CPU: utime + stime of each
# process (/proc/<pid>/stat, all threads), over WINDOW seconds in the middle
# of the publishing phase. Nothing is pinned: the load tool shares the two
# cores, and its own CPU is reported.
#
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
    read -r PUB_S DELIV_S < <(python3 -c '
import json, sys
rows = {}
for section in json.load(open(sys.argv[1]))["results"].values():
    if isinstance(section, dict):
        rows.update(section)
print(round(rows["publish_per_s"]), round(rows["delivered_per_s"]))' "$out")
}

redis_pid() { cat "$1/redis.pid"; }

# The three gateways, after Redis is up (REDIS_PORT, or gateway.toml).
start_gateways() {
    for n in 1 2 3; do start_bench_gateway "$n" cap 8600 9600; done
    URLS=("$WS_1" "$WS_2" "$WS_3")
}

# calibrate: the eight runs, their rows in $DIR/points (gateways, publishes/s,
# deliveries/s, gateway cores, master cores, replica cores).
calibrate() {
    echo "| calibration run | gateways | publishes/s | deliveries/s | gateway cores | master cores | replica cores | load tool cores |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    : >"$DIR/points"
    local run rooms members rate gws
    for run in "40 100 0.1 1" "40 100 0.2 1" "1000 2 1 1" "1000 2 2 1" "1000 2 1 2" "1000 2 2 2" "40 100 0.1 3" "40 100 0.2 3"; do
        read -r rooms members rate gws <<<"$run"
        run_load "r$rooms-$members-$rate-$gws" "$rooms" "$members" "$rate" "${URLS[@]:0:$gws}"
        sums
        echo "| $rooms rooms × $members, $rate msg/s each | $gws | $PUB_S | $DELIV_S | $GW | $MA | $RE | $BENCH_CPU |"
        echo "$gws $PUB_S $DELIV_S $GW $MA $RE" >>"$DIR/points"
    done
}

# sums: the CPU of the gateways (PIDS 0-2), masters and replicas (the rest).
sums() {
    GW=$(awk -v a="$CPU_0" -v b="$CPU_1" -v c="$CPU_2" 'BEGIN {printf "%.3f", a + b + c}')
    MA=0
    RE=0
    local i
    for i in "${!MASTER_IDX[@]}"; do
        local v="CPU_${MASTER_IDX[$i]}"
        MA=$(awk -v a="$MA" -v b="${!v}" 'BEGIN {printf "%.3f", a + b}')
    done
    for i in "${!REPLICA_IDX[@]}"; do
        local v="CPU_${REPLICA_IDX[$i]}"
        RE=$(awk -v a="$RE" -v b="${!v}" 'BEGIN {printf "%.3f", a + b}')
    done
}

# fit [CHECK_FILE]: the coefficients from $DIR/points; with CHECK_FILE
# (rows like the points), the predictions next to what was measured.
fit() {
    python3 - "$DIR/points" "${#MASTER_IDX[@]}" "${#REPLICA_IDX[@]}" "$@" <<'PY'
import sys
pts = [list(map(float, l.split())) for l in open(sys.argv[1])]
masters, replicas = int(sys.argv[2]), int(sys.argv[3])
def solve(rows, ys):
    n = len(rows[0])
    a = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    b = [sum(r[i] * y for r, y in zip(rows, ys)) for i in range(n)]
    for c in range(n):
        piv = max(range(c, n), key=lambda r: abs(a[r][c]))
        a[c], a[piv], b[c], b[piv] = a[piv], a[c], b[piv], b[c]
        for r in range(n):
            if r != c:
                f = a[r][c] / a[c][c]
                a[r] = [x - f * y for x, y in zip(a[r], a[c])]
                b[r] -= f * b[c]
    return [b[i] / a[i][i] for i in range(n)]
gw_row = lambda p: [3, p[2], p[1], p[1] * p[0]]
rd_row = lambda p: [1, p[1], p[1] * p[0]]
g, d, q, e = solve([gw_row(p) for p in pts], [p[3] for p in pts])
g /= 3
f, r, n = solve([rd_row(p) for p in pts], [p[4] for p in pts])
print()
print(f"gateway: {g:.4f} cores each + {d * 1e6:.2f} µs per delivery + {q * 1e6:.1f} µs per client publish + {e * 1e6:.1f} µs per envelope received")
print(f"masters: {f:.4f} cores + {r * 1e6:.1f} µs per publish + {n * 1e6:.1f} µs per envelope")
gw = lambda p: 3 * g + d * p[2] + q * p[1] + e * p[1] * p[0]
ma = lambda p: f + r * p[1] + n * p[1] * p[0]
if replicas:
    h, s, t = solve([rd_row(p) for p in pts], [p[5] for p in pts])
    print(f"replicas: {h:.4f} cores + {s * 1e6:.1f} µs per publish + {t * 1e6:.1f} µs per envelope (one bus message each)")
    re = lambda p: h + s * p[1] + t * p[1] * p[0]
else:
    re = lambda p: 0.0
worst = 0.0
for p in pts:
    worst = max(worst, abs(gw(p) - p[3]) / p[3], abs(ma(p) - p[4]) / p[4])
print(f"calibration runs: the fit is within {worst * 100:.0f} % of every run (gateways, masters)")
if len(sys.argv) > 4:
    print()
    print("| check run | publishes/s | deliveries/s | gateways: predicted / measured | masters: predicted / measured | replicas: predicted / measured | load tool |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for line in open(sys.argv[4]):
        label, rest = line.split("|")
        p = list(map(float, rest.split()))
        def cell(pred, got):
            return f"{pred:.3f} / {got:.3f} ({(pred - got) / got * 100:+.0f} %)" if got else f"{pred:.3f} / 0"
        print(f"| {label} | {p[1]:.0f} | {p[2]:.0f} | {cell(gw(p), p[3])} | {cell(ma(p), p[4])} | {cell(re(p), p[5])} | {p[6]:.3f} |")
PY
}

# one_redis: one Redis and the three gateways on it.
one_redis() {
    REDIS_DIRS=("$DIR/redis")
    REDIS_PORT=$(start_redis "$DIR/redis" 6600 "" --save '' --appendonly no)
    REDIS_PORTS=("$REDIS_PORT")
    start_gateways
    PIDS=("${GW_PIDS[@]}" "$(redis_pid "$DIR/redis")")
    MASTER_IDX=(3)
    REPLICA_IDX=()
}

case "$MODE" in
single)
    one_redis
    echo "one Redis, three gateways (2,000 or 4,000 connections per run)"
    echo
    calibrate
    fit
    ;;
sparse)
    one_redis
    echo "| run | publishes/s | deliveries/s | gateway cores | µs per delivery (all gateway CPU) | Redis cores | Redis µs per publish |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for run in "100 100 0.005" "100 100 0.01"; do
        read -r rooms members rate <<<"$run"
        run_load "sparse-$rate" "$rooms" "$members" "$rate" "${URLS[@]}"
        sums
        awk -v r="$rooms" -v m="$members" -v rate="$rate" -v p="$PUB_S" -v d="$DELIV_S" -v g="$GW" -v ma="$MA" \
            'BEGIN {printf "| %d rooms × %d on 3 gateways, %s msg/s each | %d | %d | %.3f | %.1f | %.3f | %.0f |\n", r, m, rate, p, d, g, g / d * 1e6, ma, ma / p * 1e6}'
    done
    ;;
cluster)
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
    for _ in $(seq 150); do
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
    start_gateways
    PIDS=("${GW_PIDS[@]}")
    MASTER_IDX=()
    REPLICA_IDX=()
    for i in "${!REDIS_PORTS[@]}"; do
        PIDS+=("$(redis_pid "${REDIS_DIRS[$i]}")")
        if redis-cli -p "${REDIS_PORTS[$i]}" ROLE | head -n 1 | grep -q master; then
            MASTER_IDX+=($((${#PIDS[@]} - 1)))
        else
            REPLICA_IDX+=($((${#PIDS[@]} - 1)))
        fi
    done
    echo "3 masters + 3 replicas, three gateways (2,000 or 4,000 connections per calibration run, 3,000 per check run)"
    echo
    calibrate
    : >"$DIR/check"
    for level in ${LEVELS:-150:20:0.5 150:20:1.5 150:20:3}; do
        IFS=: read -r rooms members rate <<<"$level"
        run_load "check-$rooms-$members-$rate" "$rooms" "$members" "$rate" "${URLS[@]}"
        sums
        echo "$rooms rooms × $members on 3 gateways, $rate msg/s each|3 $PUB_S $DELIV_S $GW $MA $RE $BENCH_CPU" >>"$DIR/check"
    done
    fit "$DIR/check"
    ;;
*)
    echo "usage: $0 single|cluster|sparse" >&2
    exit 2
    ;;
esac
