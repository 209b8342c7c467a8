#!/usr/bin/env bash
# `make autobahn`: the Autobahn WebSocket conformance cases against the
# gateway's WebSocket layer.
#
# Starts Redis with the module and one gateway with `testing.echo = true`,
# which serves a plain echo WebSocket at GET /echo on the same stack as /ws
# (hyper upgrade + fastwebsockets, same reader settings). kosoku (PyPI), a
# runner of the Autobahn TestSuite's own case files, drives cases 1-7 and 9
# against it as the fuzzing client. Cases 10 (auto-fragmentation) and 12-13
# (permessage-deflate, which the gateway does not offer) are left out.
#
# Everything lives under target/: the venv in target/autobahn-venv, Redis,
# the gateway's config and log, and the reports (index.json, index.html) in
# target/autobahn/. Exits 1 when a case is FAILED (or could not run);
# NON-STRICT, INFORMATIONAL and UNIMPLEMENTED are accepted and listed.
#
#   AUTOBAHN_CASES="1.* 2.*"   run other cases (globs, space-separated)
#   AUTOBAHN_PARALLEL=2        cases run at once (default 2)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VENV="$ROOT/target/autobahn-venv"
WORK="$ROOT/target/autobahn"
KOSOKU_VERSION=0.1.0
CASES=${AUTOBAHN_CASES:-"1.* 2.* 3.* 4.* 5.* 6.* 7.* 9.*"}
PARALLEL=${AUTOBAHN_PARALLEL:-2}

if [ ! -x "$GATEWAY" ] || [ ! -f "$MODULE" ]; then
    echo "autobahn: build first (make build): need $GATEWAY and $MODULE" >&2
    exit 1
fi

# The runner, in its own venv (created once, reused).
if ! "$VENV/bin/python" -c 'import kosoku' >/dev/null 2>&1; then
    echo "autobahn: installing kosoku $KOSOKU_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "kosoku==$KOSOKU_VERSION"
fi

rm -rf "$WORK"
mkdir -p "$WORK/redis"
redis_port=""
gateway_pid=""
cleanup() {
    if [ -n "$gateway_pid" ]; then
        kill "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
    if [ -n "$redis_port" ]; then
        stop_redis "$WORK/redis" "$redis_port"
    fi
}
trap cleanup EXIT

redis_port=$(start_redis "$WORK/redis" 6420 "" --save '' --appendonly no)
listen_port=$(free_port 9420)
admin_port=$(free_port $((listen_port + 1)))
cat >"$WORK/gateway.toml" <<EOF
listen = "127.0.0.1:$listen_port"
admin_listen = "127.0.0.1:$admin_port"
node_id = "autobahn"

[redis]
url = "redis://127.0.0.1:$redis_port"

[auth]
secret = "autobahn-only-secret-autobahn-only-secret"

[testing]
echo = true
EOF
# Only the file configures this gateway.
env $(env | grep -o '^BROKER_[A-Za-z0-9_]*' | sed 's/^/-u /') \
    RUST_LOG=warn NO_COLOR=1 "$GATEWAY" --config "$WORK/gateway.toml" >"$WORK/gateway.log" 2>&1 &
gateway_pid=$!

ready=""
for _ in $(seq 150); do
    kill -0 "$gateway_pid" 2>/dev/null || break
    if "$VENV/bin/python" - "$listen_port" <<'EOF' 2>/dev/null; then
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
        ready=1
        break
    fi
    sleep 0.1
done
if [ -z "$ready" ]; then
    echo "autobahn: the gateway did not become ready; its log:" >&2
    sed 's/^/  | /' "$WORK/gateway.log" >&2
    exit 1
fi

url="ws://127.0.0.1:$listen_port/echo"
echo "autobahn: cases $CASES against $url (parallelism $PARALLEL)"
include=()
for c in $CASES; do
    include+=(-i "$c")
done
started=$SECONDS
# kosoku's own exit status treats any verdict but OK as a failure; the
# verdicts are judged below from its report instead.
"$VENV/bin/kosoku" "${include[@]}" -p "$PARALLEL" -o "$WORK/reports" "$url" \
    >"$WORK/kosoku.log" 2>&1 || true
echo "autobahn: ran in $((SECONDS - started)) s"

if [ ! -f "$WORK/reports/index.json" ]; then
    echo "autobahn: kosoku wrote no report; its output:" >&2
    sed 's/^/  | /' "$WORK/kosoku.log" >&2
    exit 1
fi

if ! kill -0 "$gateway_pid" 2>/dev/null; then
    echo "autobahn: the gateway died during the run; its log:" >&2
    sed 's/^/  | /' "$WORK/gateway.log" >&2
    exit 1
fi

"$VENV/bin/python" - "$WORK/reports/index.json" <<'EOF'
"""Summarises the report; exit 1 on any FAILED (or unrunnable) case."""
import json
import sys
from collections import Counter

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED"}
CLOSE_ACCEPTED = {"OK", "INFORMATIONAL"}


def key(case_id):
    return tuple(int(p) for p in case_id.split("."))


with open(sys.argv[1]) as f:
    index = json.load(f)
results = {cid: r for agent in index.values() for cid, r in agent.items()}
behaviors = Counter(r["behavior"] for r in results.values())
closes = Counter(r["behaviorClose"] for r in results.values())
print(f"autobahn: {len(results)} cases; behavior {dict(behaviors)}; close {dict(closes)}")

failed, notes = [], []
for cid in sorted(results, key=key):
    r = results[cid]
    line = f"  {cid:8} {r['behavior']:14} close {r['behaviorClose']:14} code {r['remoteCloseCode']}"
    if r["behavior"] not in ACCEPTED or r["behaviorClose"] not in CLOSE_ACCEPTED:
        failed.append(line)
    elif r["behavior"] != "OK" or r["behaviorClose"] != "OK":
        notes.append(line)
if notes:
    print("accepted, not OK:")
    print("\n".join(notes))
if failed:
    print("FAILED:")
    print("\n".join(failed))
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1)
print(f"{len(results)} passed, 0 failed")
EOF
