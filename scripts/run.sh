#!/usr/bin/env bash
# `make run` / `make stop`: a local Redis with the module and one gateway.
#
#   scripts/run.sh start    start (or reuse) Redis, (re)start the gateway
#   scripts/run.sh stop     stop both
#   scripts/run.sh status   say what runs where
#
# Everything lives in .run/ (gitignored): pid files, logs, the chosen port.
# Redis gets a free port (6390 when free, never assuming 6379). A Redis left
# by an earlier `make run` is reused when the module has not been rebuilt
# since, and restarted otherwise. Extra module arguments come from
# BROKER_MODULE_ARGS (default: chat rooms keep 100 messages for 300 s).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RUN="$ROOT/.run"
MODULE_ARGS=${BROKER_MODULE_ARGS:-HISTORY chat 100 300}

module_stamp() { stat -c '%Y %s' "$MODULE"; }

redis_running() {
    pid_alive "$RUN/redis.pid" redis-server && [ -f "$RUN/redis.port" ] &&
        [ "$(redis-cli -p "$(cat "$RUN/redis.port")" PING 2>/dev/null)" = PONG ]
}

stop_gateway() {
    local pid i
    pid_alive "$RUN/gateway.pid" broker-gateway || { rm -f "$RUN/gateway.pid"; return 0; }
    pid=$(cat "$RUN/gateway.pid")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN/gateway.pid"
}

stop_all() {
    stop_gateway
    if [ -f "$RUN/redis.port" ]; then
        stop_redis "$RUN" "$(cat "$RUN/redis.port")"
    fi
    rm -f "$RUN/redis.pid" "$RUN/redis.port" "$RUN/module.stamp"
}

start_redis_here() {
    local port
    port=$(start_redis "$RUN" 6390 "$MODULE_ARGS" --save '' --appendonly no)
    echo "$port" >"$RUN/redis.port"
    module_stamp >"$RUN/module.stamp"
}

start_gateway() {
    local port=$1 listen admin args=()
    listen=${BROKER_LISTEN:-127.0.0.1:$(free_port 8080)}
    admin=${BROKER_ADMIN_LISTEN:-127.0.0.1:$(free_port 9091)}
    [ -f "$ROOT/config/gateway.toml" ] && args=(--config "$ROOT/config/gateway.toml")
    BROKER_REDIS__URL=${BROKER_REDIS__URL:-redis://127.0.0.1:$port} \
        BROKER_LISTEN=$listen BROKER_ADMIN_LISTEN=$admin \
        nohup "$GATEWAY" "${args[@]}" >"$RUN/gateway.log" 2>&1 </dev/null &
    echo $! >"$RUN/gateway.pid"
    # Wait until it listens (or exits: e.g. a bad configuration).
    local i
    for i in $(seq 20); do
        kill -0 "$(cat "$RUN/gateway.pid")" 2>/dev/null || break
        port_in_use "${listen##*:}" && break
        sleep 0.1
    done
    echo "gateway output (.run/gateway.log):"
    sed 's/^/  | /' "$RUN/gateway.log"
    if kill -0 "$(cat "$RUN/gateway.pid")" 2>/dev/null; then
        echo "gateway running (pid $(cat "$RUN/gateway.pid")):"
        echo "  WebSocket  ws://$listen/ws     demo page  http://$listen/"
        echo "  admin      http://$admin/metrics"
        echo "  publish    curl -XPOST http://$admin/api/publish -d '{\"room\":\"chat:lobby\",\"ev\":\"message\",\"data\":{\"text\":\"hi\"}}'"
        echo "  dev token  curl 'http://$listen/dev/token?user=alice'"
    else
        echo "gateway exited: see the log above"
        rm -f "$RUN/gateway.pid"
    fi
}

case "${1:-start}" in
start)
    mkdir -p "$RUN"
    if [ ! -f "$GATEWAY" ]; then
        echo "gateway not found at $GATEWAY: run 'make build' first" >&2
        exit 1
    fi
    if redis_running && [ "$(module_stamp)" = "$(cat "$RUN/module.stamp" 2>/dev/null)" ]; then
        echo "reusing Redis from an earlier 'make run' (module unchanged)"
    else
        redis_running && echo "module rebuilt: restarting Redis"
        stop_all
        start_redis_here
    fi
    stop_gateway
    port=$(cat "$RUN/redis.port")
    echo "Redis $(redis-server --version | awk '{print $3}' | sed 's/^v=//') with the broker module on 127.0.0.1:$port (log .run/redis.log)"
    start_gateway "$port"
    echo
    echo "try:"
    echo "  redis-cli -p $port BROKER.ONLINE"
    echo "  redis-cli -p $port BROKER.NODE.LEASE n1 600000"
    echo "  redis-cli -p $port BROKER.CONN.OPEN alice c1 n1 127.0.0.1"
    echo "  redis-cli -p $port BROKER.JOIN chat:lobby alice c1 n1 PRESENCE"
    echo "  redis-cli -p $port BROKER.PUBLISH chat:lobby message '{\"text\":\"hi\"}' FORMAT json"
    echo "  redis-cli -p $port BROKER.HISTORY chat:lobby"
    echo "stop with: make stop"
    ;;
stop)
    stop_all
    echo "stopped"
    ;;
status)
    if redis_running; then
        echo "Redis on 127.0.0.1:$(cat "$RUN/redis.port") (pid $(cat "$RUN/redis.pid"))"
    else
        echo "Redis not running"
    fi
    if pid_alive "$RUN/gateway.pid" broker-gateway; then
        echo "gateway pid $(cat "$RUN/gateway.pid")"
    else
        echo "gateway not running"
    fi
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
