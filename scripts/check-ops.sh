#!/usr/bin/env bash
# Checks the operations files: config/prometheus.yml, config/alerts.yml (+
# its unit tests), config/grafana-dashboard.json, config/redis.conf,
# config/systemd/*.service and their runbook anchors in docs/OPERATIONS.md.
#
#   scripts/check-ops.sh        exit status 0 when every check passes
#
# Needs promtool (Debian package prometheus, installed by scripts/deps.sh)
# and python3. Uses redis-server and target/release/libbroker_module.so
# when present (config/redis.conf is then loaded for real), and
# systemd-analyze when present (complaints that the binaries are not
# installed at their production paths are ignored).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

failures=0
pass() { echo "ok    $*"; }
fail() {
    echo "FAIL  $*" >&2
    failures=$((failures + 1))
}
skip() { echo "skip  $*"; }

TMP=$(mktemp -d)
REDIS_PORT=""
cleanup() {
    if [ -n "$REDIS_PORT" ]; then
        stop_redis "$TMP/redis" "$REDIS_PORT"
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

if ! command -v promtool >/dev/null 2>&1; then
    echo "check-ops: promtool is missing (apt-get install prometheus, or make deps)" >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "check-ops: python3 is missing" >&2
    exit 1
fi

# run DESCRIPTION COMMAND...: runs the command quietly; shows its output on failure.
run() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then
        pass "$what"
    else
        fail "$what"
        sed 's/^/      /' <<<"$out" >&2
    fi
}

# --- Prometheus -------------------------------------------------------------
run "promtool check config config/prometheus.yml" promtool check config config/prometheus.yml
run "promtool check rules config/alerts.yml" promtool check rules config/alerts.yml
run "promtool test rules config/alerts_test.yml" promtool test rules config/alerts_test.yml

# --- Metric names, dashboard, alert tests, runbook anchors --------------------
# The metrics docs/HTTP.md promises (/metrics) and every broker_* metric that
# gateway/src/metrics.rs defines must appear on the dashboard; every
# broker_* name the dashboard and the alerts use must exist in metrics.rs.
# Every alert needs a test that expects it to fire, and its runbook_url
# anchor must be a heading of docs/OPERATIONS.md.
cat >"$TMP/check.py" <<'EOF'
import json, re, sys

DOCUMENTED = [
    "broker_connections", "broker_messages_delivered_total",
    "broker_messages_published_total", "broker_publish_latency_seconds",
    "broker_redis_command_duration_seconds", "broker_errors_total",
    "broker_auth_failures_total", "broker_rate_limited_total",
    "broker_slow_consumer_disconnects_total", "process_resident_memory_bytes",
]
PROCESS = {
    "process_cpu_seconds_total", "process_open_fds", "process_max_fds",
    "process_virtual_memory_bytes", "process_resident_memory_bytes",
    "process_start_time_seconds", "process_threads",
}
problems = []

# Names as registered: a "broker_..." literal followed by its help text.
defined = set(re.findall(r'"(broker_[a-z_]+)",\s*"[A-Z0-9]', open("gateway/src/metrics.rs").read()))
if not defined:
    problems.append("no broker_* metric names found in gateway/src/metrics.rs")

def base(name):
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: -len(suffix)] in defined:
            return name[: -len(suffix)]
    return name

def used_names(text):
    return {base(n) for n in re.findall(r"\b((?:broker|process)_[a-z_]+)\b", text)}

# Dashboard: valid JSON, every metric present, every query valid PromQL.
try:
    dash = json.load(open("config/grafana-dashboard.json"))
except Exception as err:  # noqa: BLE001
    print(f"config/grafana-dashboard.json is not valid JSON: {err}")
    sys.exit(1)
exprs = []
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            if t.get("expr"):
                exprs.append((p.get("title", "?"), t["expr"]))
        walk(p.get("panels", []))
walk(dash.get("panels", []))
if not exprs:
    problems.append("the dashboard has no queries")
dash_text = "\n".join(e for _, e in exprs)
dash_names = used_names(dash_text)
for name in DOCUMENTED + sorted(defined):
    if name not in dash_names:
        problems.append(f"dashboard: no panel queries {name}")
for name in sorted(dash_names):
    if name not in defined and name not in PROCESS:
        problems.append(f"dashboard: {name} is not a metric of gateway/src/metrics.rs")
# promtool checks PromQL inside rule files: write the dashboard's queries,
# with Grafana's variables replaced, as recording rules.
with open(sys.argv[1], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, expr) in enumerate(exprs):
        expr = (expr.replace("$__rate_interval", "5m").replace("$job", ".*")
                .replace("$instance", ".*"))
        out.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(expr)}\n")

# Alerts: names used exist; one firing test per alert; runbook anchors.
alerts_text = open("config/alerts.yml").read()
for name in sorted(used_names(alerts_text)):
    if name not in defined and name not in PROCESS:
        problems.append(f"alerts.yml: {name} is not a metric of gateway/src/metrics.rs")
alerts = re.findall(r"^\s*- alert:\s*(\S+)", alerts_text, re.M)
if not alerts:
    problems.append("alerts.yml: no alerts found")
tests_text = open("config/alerts_test.yml").read()
# A firing test: "alertname: X" followed by exp_alerts with an entry.
fired = set(re.findall(r"alertname:\s*(\S+)\s*\n\s*exp_alerts:\s*\n\s*- exp_labels:", tests_text))
for alert in alerts:
    if alert not in fired:
        problems.append(f"alerts_test.yml: no test expects {alert} to fire")

def slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")
try:
    ops = open("docs/OPERATIONS.md").read()
except OSError:
    ops = ""
    problems.append("docs/OPERATIONS.md is missing")
anchors = {slug(h) for h in re.findall(r"^#+\s+(.*)$", ops, re.M)}
anchors |= set(re.findall(r'<a (?:id|name)="([^"]+)"', ops))
for url in re.findall(r"runbook_url:\s*\"?([^\"\s]+)", alerts_text):
    if "#" not in url:
        problems.append(f"alerts.yml: runbook_url {url} names no section")
        continue
    anchor = url.split("#", 1)[1]
    if anchor not in anchors:
        problems.append(f"alerts.yml: runbook_url {url}: no such heading in docs/OPERATIONS.md")

for p in problems:
    print(p)
print(f"{len(exprs)} dashboard queries, {len(alerts)} alerts, {len(defined)} broker_* metrics", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
run "dashboard JSON, metric names, alert tests, runbook anchors" python3 "$TMP/check.py" "$TMP/dashboard-rules.yml"
if [ -s "$TMP/dashboard-rules.yml" ]; then
    run "dashboard queries are valid PromQL (promtool)" promtool check rules "$TMP/dashboard-rules.yml"
fi

# --- redis.conf ---------------------------------------------------------------
# Load config/redis.conf for real: the module path, port and dir pointed at
# this checkout, the commented ACL users switched on.
if command -v redis-server >/dev/null 2>&1 && [ -f "$MODULE" ]; then
    mkdir -p "$TMP/redis"
    REDIS_PORT=$(free_port 6490)
    sed -e "s#^loadmodule /usr/lib/broker/libbroker_module.so#loadmodule $MODULE#" \
        -e "s#^dir .*#dir $TMP/redis#" \
        -e "s#^port .*#port $REDIS_PORT#" \
        -e "s#^bind .*#bind 127.0.0.1#" \
        -e "s#^supervised .*#supervised no#" \
        -e "s#^\# user #user #" \
        config/redis.conf >"$TMP/redis/redis.conf"
    cat >>"$TMP/redis/redis.conf" <<EOF
daemonize yes
pidfile $TMP/redis/redis.pid
logfile $TMP/redis/redis.log
EOF
    redis_ok=yes
    redis-server "$TMP/redis/redis.conf" >/dev/null 2>&1 || redis_ok=no
    rcli() { redis-cli -p "$REDIS_PORT" --no-auth-warning "$@" 2>&1; }
    for _ in $(seq 50); do
        [ "$(rcli --user admin --pass CHANGE-ME PING)" = PONG ] && break
        sleep 0.1
    done
    if [ "$redis_ok" = yes ] && [ "$(rcli --user admin --pass CHANGE-ME PING)" = PONG ]; then
        problems=()
        rcli --user admin --pass CHANGE-ME MODULE LIST | grep -qx broker || problems+=("module not loaded")
        [ "$(rcli --user admin --pass CHANGE-ME CONFIG GET aof-use-rdb-preamble | tail -n 1)" = yes ] ||
            problems+=("aof-use-rdb-preamble is not yes")
        [ "$(rcli --user admin --pass CHANGE-ME CONFIG GET maxmemory-policy | tail -n 1)" = noeviction ] ||
            problems+=("maxmemory-policy is not noeviction")
        lease=$(rcli --user broker-gateway --pass CHANGE-ME BROKER.NODE.LEASE check-ops 1000 | tail -n 1)
        [ "$lease" = 0 ] || problems+=("ACL user broker-gateway cannot take a lease: $lease")
        open=$(rcli --user broker-gateway --pass CHANGE-ME BROKER.CONN.OPEN u1 c1 check-ops 127.0.0.1)
        [ "$open" = OK ] || problems+=("ACL user broker-gateway cannot open a connection: $open")
        pub=$(rcli --user broker-backend --pass CHANGE-ME BROKER.PUBLISH chat:check message '{}' FORMAT json)
        [ "$pub" = 1 ] || problems+=("ACL user broker-backend cannot publish: $pub")
        if [ ${#problems[@]} -eq 0 ]; then
            pass "config/redis.conf loads the module (port $REDIS_PORT), settings and ACL users work"
        else
            fail "config/redis.conf: ${problems[*]}"
        fi
        rcli --user admin --pass CHANGE-ME SHUTDOWN NOSAVE >/dev/null || true
        for _ in $(seq 50); do
            pid_alive "$TMP/redis/redis.pid" redis-server || break
            sleep 0.1
        done
        REDIS_PORT=""
    else
        fail "config/redis.conf: redis-server did not start"
        tail -n 20 "$TMP/redis/redis.log" 2>/dev/null | sed 's/^/      /' >&2 || true
        # It may still be starting: cleanup stops it by pid file.
    fi
else
    skip "config/redis.conf: redis-server or $MODULE missing (make build)"
fi

# --- systemd units ------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
    for unit in config/systemd/broker-redis.service config/systemd/broker-gateway@.service; do
        # Exit status 1 when the binary is not installed here; judge by the
        # messages instead, minus that one.
        out=$(systemd-analyze verify "$unit" 2>&1 || true)
        others=$(grep -v 'is not executable: No such file or directory' <<<"$out" || true)
        # Messages about this unit (its file or its name); others are about
        # the machine (no systemd running, other units) and are not ours.
        rest=$(grep -E "$(basename "$unit" | sed 's/@/@?/; s/\.service//')" <<<"$others" || true)
        if [ -n "$rest" ]; then
            fail "systemd-analyze verify $unit"
            sed 's/^/      /' <<<"$rest" >&2
        elif [ -n "$others" ]; then
            skip "systemd-analyze verify $unit: said only $(head -n 1 <<<"$others")"
        else
            pass "systemd-analyze verify $unit (missing /usr/bin binaries ignored)"
        fi
    done
else
    skip "systemd units: systemd-analyze not installed"
fi

if [ "$failures" -gt 0 ]; then
    echo "check-ops: $failures check(s) failed" >&2
    exit 1
fi
echo "check-ops: all checks passed"
