#!/usr/bin/env bash
# The attack bench (`make attack`): a Redis of our own with the module, two
# gateway nodes with the default limits, 1,000 well-behaved chat clients
# (100 rooms x 10 members, 1 msg/s each, reading everything) and six attacks
# in turn, each for ATTACK_SECONDS: unauthenticated sockets, non-reading
# `history` clients, join/leave cycling, `presence` polling of a
# 10,000-member room, bad `refresh` tokens, garbage frames
# (broker-bench attack, bench/src/scenario/attack.rs).
#
# Prints the table and, unless ATTACK_NO_DOC=1 or --short, writes it into
# docs/OPERATIONS.md between the attack-bench markers. Exits non-zero when a
# goal is missed (p99 during an attack >= 2 x max(quiet p99, 1 ms), or a
# well-behaved client closed). Everything it starts is stopped on exit.
#
#   scripts/attack.sh            the full run (about 3-4 minutes)
#   scripts/attack.sh --short    no doc; what `make test` runs, with
#                                ATTACK_SECONDS=5 ATTACK_SCALE=0.2
#
# Environment:
#   ATTACK_SECONDS=20   seconds of the quiet window and of each attack
#   ATTACK_SCALE=1.0    multiplies every count (clients, attackers, room size)
#   ATTACK_NO_BUILD=1   use the binaries in target/release as they are
#   ATTACK_NO_DOC=1     do not touch docs/OPERATIONS.md
#   ATTACK_KEEP=1       keep the temporary dir (logs, config, JSON results)
#   ATTACK_ARGS="..."   more broker-bench attack options (e.g. --attacks preauth,garbage)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SHORT=""
[ "${1:-}" = "--short" ] && SHORT=1
DOC="$ROOT/docs/OPERATIONS.md"
SECS=${ATTACK_SECONDS:-20}
SCALE=${ATTACK_SCALE:-1.0}
SETTLE=3
[ -n "$SHORT" ] && SETTLE=1.5
SECRET=attack-bench-secret
DIR=$(mktemp -d -t broker-attack.XXXXXX)
REDIS_PORT=""
STARTED=$SECONDS

cleanup() {
    stop_bench_gateways
    [ -n "$REDIS_PORT" ] && stop_redis "$DIR" "$REDIS_PORT"
    if [ -n "${ATTACK_KEEP:-}" ]; then
        echo "kept $DIR" >&2
    else
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_bench_binaries "${ATTACK_NO_BUILD:-}"

REDIS_PORT=$(start_redis "$DIR" 6600 "" --save '' --appendonly no)
REDIS_VERSION=$(redis-cli -p "$REDIS_PORT" INFO server | tr -d '\r' | awk -F: '/^redis_version:/ {print $2}')

# Every limit at its default. Namespaces: `chat` for the well-behaved clients
# (no join/leave events, no history), `big` keeps large messages for the
# history attack, `crowd` is the presence attack's room; `atk` (join/leave
# cycling) has no table, so every namespace default.
cat >"$DIR/gateway.toml" <<'TOML'
[namespaces.chat]
join_leave = false
history = 0

[namespaces.big]
history = 1000
history_ttl_s = 3600

[namespaces.crowd]
join_leave = false
presence = true
TOML

start_bench_gateway 1 gw-attack 18180 19190
start_bench_gateway 2 gw-attack 18180 19190
echo "Redis $REDIS_VERSION on port $REDIS_PORT; gateways $WS_1 (admin $ADMIN_1), $WS_2 (admin $ADMIN_2)" >&2

CMD="broker-bench attack --url \$WS1 --url \$WS2 --admin \$ADMIN1 --admin \$ADMIN2 --redis \$REDIS --seconds $SECS --scale $SCALE --settle $SETTLE ${ATTACK_ARGS:-}"
echo "== ${CMD}" >&2
STATUS=0
# shellcheck disable=SC2086 # ATTACK_ARGS is a list of words on purpose
BROKER_AUTH__SECRET=$SECRET timeout $((60 + 12 * (SECS + 4))) "$BENCH" attack \
    --url "$WS_1" --url "$WS_2" --admin "$ADMIN_1" --admin "$ADMIN_2" \
    --redis "redis://127.0.0.1:$REDIS_PORT" --seconds "$SECS" --scale "$SCALE" \
    --settle "$SETTLE" ${ATTACK_ARGS:-} \
    --save "$DIR/attack.json" >"$DIR/attack.md" || STATUS=$?
cat "$DIR/attack.md"

# What the gateways logged above INFO, by message.
problems() {
    local n
    for n in 1 2; do
        sed -E 's/\x1b\[[0-9;]*m//g' "$DIR/gateway-$n.log" 2>/dev/null |
            grep -E '^[^ ]+ +(WARN|ERROR) ' | grep -v 'auth.secret is shorter' |
            sed -E 's/^[^ ]+ +//; s/(conn|user|node|ip|peer)=[^ ]+/\1=…/g' |
            sort | uniq -c | sort -rn | head -n 8 | sed "s/^/  node $n: /" || true
    done
}
PROBLEMS=$(problems)
for n in 1 2; do
    kill -0 "${GW_PIDS[$((n - 1))]}" 2>/dev/null || {
        PROBLEMS+=$'\n'"  node $n: the gateway process exited during the run"
        STATUS=1
    }
done
echo "gateway log lines above INFO: ${PROBLEMS:-none}" >&2
ELAPSED=$((SECONDS - STARTED))
echo "total ${ELAPSED}s, exit $STATUS" >&2

if [ -n "$SHORT" ] || [ -n "${ATTACK_NO_DOC:-}" ]; then
    exit "$STATUS"
fi

COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT+=" (with uncommitted changes)"
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
SECTION="$DIR/section.md"
{
    echo "<!-- attack-bench:begin (written by scripts/attack.sh; edit the script, not this part) -->"
    echo
    echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC') at commit \`$COMMIT\`:"
    echo "$(nproc) cores ($CPU), $MEM memory, Linux $(uname -r), Redis $REDIS_VERSION;"
    echo "Redis, both gateway nodes and broker-bench (well-behaved clients and attackers in"
    echo "one process) share these cores. Whole run: ${ELAPSED} s, exit status $STATUS."
    echo
    echo '```sh'
    echo "$CMD"
    echo '```'
    echo
    cat "$DIR/attack.md"
    if [ -n "$PROBLEMS" ]; then
        echo "Gateway log lines above INFO, counted by message:"
        echo
        echo '```'
        echo "$PROBLEMS"
        echo '```'
        echo
    fi
    echo "<!-- attack-bench:end -->"
} >"$SECTION"
if [ -f "$DOC" ] && grep -q '<!-- attack-bench:begin' "$DOC"; then
    awk -v section="$SECTION" '
        /<!-- attack-bench:begin/ { while ((getline line < section) > 0) print line; skip = 1; next }
        /<!-- attack-bench:end -->/ { skip = 0; next }
        !skip { print }
    ' "$DOC" >"$DIR/doc.md"
    cat "$DIR/doc.md" >"$DOC"
    echo "results written to docs/OPERATIONS.md" >&2
else
    echo "docs/OPERATIONS.md has no attack-bench markers; not written" >&2
fi
exit "$STATUS"
