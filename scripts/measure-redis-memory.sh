#!/usr/bin/env bash
# Measures what the broker module's state costs in Redis memory, for the
# sizing table of docs/OPERATIONS.md.
#
#   scripts/measure-redis-memory.sh              # N=10000 connections
#   N=50000 ROOMS_PER_CONN=20 scripts/measure-redis-memory.sh
#
# Starts its own redis-server (free port, temporary directory, --save '',
# no AOF) with target/release/libbroker_module.so loaded as
#   --loadmodule libbroker_module.so HISTORY hist <HIST_SIZE> 3600
# takes a node lease, then feeds generated commands through
# `redis-cli --pipe` (RESP) phase by phase and reads INFO memory
# `used_memory` after each phase. The module allocates through Redis's
# allocator, so used_memory includes the registry. Phases:
#
#   1. BROKER.CONN.OPEN u<i> c<i> n1 <ip>         N connections (N users)
#   2. BROKER.JOIN user:u<i> u<i> c<i> n1         each connection's personal
#                                                 room (what the gateway does)
#   3. BROKER.JOIN chat:r<k> u<i> c<i> n1 PRESENCE  ROOMS_PER_CONN shared rooms
#                                                 per connection, over
#                                                 SHARED_ROOMS rooms
#   4. BROKER.PUBLISH hist:h<k> message {"t":"<random>"} FORMAT json
#                                                 HIST_ROOMS rooms x HIST_SIZE
#                                                 messages of PAYLOAD bytes of
#                                                 JSON, kept as history
#   5. SAVE: the RDB file size with all of the above
#
# Prints a Markdown table. Needs redis-server and redis-cli (scripts/deps.sh)
# and the module (make build). Stops its Redis on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${N:-10000}
ROOMS_PER_CONN=${ROOMS_PER_CONN:-10}
SHARED_ROOMS=${SHARED_ROOMS:-1000}
HIST_ROOMS=${HIST_ROOMS:-100}
HIST_SIZE=${HIST_SIZE:-100}
PAYLOAD=${PAYLOAD:-100}

DIR=$(mktemp -d)
PORT=""
cleanup() {
    [ -n "$PORT" ] && stop_redis "$DIR" "$PORT"
    rm -rf "$DIR"
}
trap cleanup EXIT

PORT=$(start_redis "$DIR" 6500 "HISTORY hist $HIST_SIZE 3600" --save '' --appendonly no)
cli() { redis-cli -p "$PORT" "$@"; }

used_memory() {
    cli INFO memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'
}

# Reads commands, one per line, arguments separated by single spaces (no
# argument contains a space), and writes them as RESP for `redis-cli --pipe`.
to_resp() {
    awk '{
        printf "*%d\r\n", NF
        for (i = 1; i <= NF; i++) printf "$%d\r\n%s\r\n", length($i), $i
    }'
}

# pipe FILE: sends the commands of FILE; fails when any reply is an error.
pipe() {
    local out
    out=$(to_resp <"$1" | cli --pipe 2>&1)
    if ! grep -q 'errors: 0,' <<<"$out"; then
        echo "redis-cli --pipe reported errors for $1:" >&2
        echo "$out" >&2
        exit 1
    fi
}

cli BROKER.NODE.LEASE n1 3600000 >/dev/null
sleep 0.3
m0=$(used_memory)

# 1. connections (one user each, IPs spread so no per-IP limit applies).
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++)
    printf "BROKER.CONN.OPEN u%d c%d n1 10.%d.%d.%d\n", i, i, int(i / 65536) % 256, int(i / 256) % 256, i % 256 }' \
    >"$DIR/open.txt"
pipe "$DIR/open.txt"
m1=$(used_memory)

# 2. personal rooms: one room with one member per connection.
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++)
    printf "BROKER.JOIN user:u%d u%d c%d n1\n", i, i, i }' >"$DIR/personal.txt"
pipe "$DIR/personal.txt"
m2=$(used_memory)

# 3. shared rooms: connection i joins rooms (i + j * step) mod SHARED_ROOMS.
awk -v n="$N" -v r="$ROOMS_PER_CONN" -v s="$SHARED_ROOMS" 'BEGIN {
    step = int(s / r); if (step < 1) step = 1
    for (i = 0; i < n; i++) for (j = 0; j < r; j++)
        printf "BROKER.JOIN chat:r%d u%d c%d n1 PRESENCE\n", (i + j * step) % s, i, i }' \
    >"$DIR/shared.txt"
pipe "$DIR/shared.txt"
m3=$(used_memory)
rooms_held=$(cli INFO broker | tr -d '\r' | awk -F: '$1 == "broker_rooms" { print $2 }')

# 4. history: HIST_ROOMS rooms of the namespace "hist" (HISTORY hist ...),
# HIST_SIZE messages each, a JSON payload of PAYLOAD bytes.
# Random letters, so the RDB size is not flattered by compression.
awk -v rooms="$HIST_ROOMS" -v size="$HIST_SIZE" -v p="$PAYLOAD" 'BEGIN {
    srand(1); abc = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    for (m = 0; m < size; m++) for (k = 0; k < rooms; k++) {
        fill = ""; for (c = 0; c < p - 8; c++) fill = fill substr(abc, int(rand() * 62) + 1, 1)
        printf "BROKER.PUBLISH hist:h%d message {\"t\":\"%s\"} FORMAT json\n", k, fill }
}' \
    >"$DIR/history.txt"
pipe "$DIR/history.txt"
m4=$(used_memory)
# Messages kept in hist:h0 and the size of one stored frame (Lua, so the
# binary frame is measured, not printed).
history_lua='local r = redis.call("BROKER.HISTORY", KEYS[1])
for i = 1, #r, 2 do
    if r[i] == "messages" then return {#r[i + 1], #r[i + 1][1]} end
end
return {-1, -1}'
reply=$(cli EVAL "$history_lua" 1 hist:h0)
kept=$(sed -n 1p <<<"$reply")
frame_bytes=$(sed -n 2p <<<"$reply")
if [ "$kept" != "$HIST_SIZE" ]; then
    echo "expected $HIST_SIZE messages in the history of hist:h0, found $kept" >&2
    exit 1
fi

# 5. RDB size with everything above.
cli SAVE >/dev/null
rdb=$(stat -c %s "$DIR/dump.rdb")

info=$(cli INFO broker | tr -d '\r' | grep -v '^#' | grep . | tr '\n' ' ')
hist_msgs=$((HIST_ROOMS * HIST_SIZE))
shared_memberships=$((N * ROOMS_PER_CONN))

per() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a / b }'; }

echo "Redis $(redis-server --version | awk '{print $3}' | sed 's/^v=//'), module $(basename "$MODULE"), N=$N"
echo "INFO broker at the end: $info"
echo "history of hist:h0: $kept messages kept, each a frame of $frame_bytes bytes (payload: $PAYLOAD bytes of JSON)"
echo
echo "| what | count | used_memory delta | per item |"
echo "|---|---:|---:|---:|"
echo "| baseline (module loaded, one node lease) | | $m0 B total | |"
echo "| connection (\`CONN.OPEN\`) | $N | $((m1 - m0)) B | $(per $((m1 - m0)) "$N") B |"
echo "| personal room \`user:<id>\` (room + 1 member) | $N | $((m2 - m1)) B | $(per $((m2 - m1)) "$N") B |"
echo "| membership in a shared room ($SHARED_ROOMS rooms, $ROOMS_PER_CONN per conn, PRESENCE) | $shared_memberships | $((m3 - m2)) B | $(per $((m3 - m2)) "$shared_memberships") B |"
echo "| history message ($PAYLOAD-byte JSON payload, $HIST_ROOMS rooms x $HIST_SIZE) | $hist_msgs | $((m4 - m3)) B | $(per $((m4 - m3)) "$hist_msgs") B |"
echo "| RDB file with all of the above | | $rdb B | |"
echo
echo "rooms held by the module after phase 3: $rooms_held"
