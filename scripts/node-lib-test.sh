#!/usr/bin/env bash
# Tests of the Node backend library (clients/node) against a real
# redis-server with the module: one Redis and a 3-master Redis Cluster, both
# started by the tests themselves on free ports (test/helpers.js), plus a
# `tsc --noEmit` check of the types.
#
#   scripts/node-lib-test.sh [node --test args...]
#
# 1. `npm ci` in clients/node when node_modules is missing or
#    package-lock.json changed since the last install (a hash of the lock is
#    kept in node_modules/.lock-hash),
# 2. `npm test`: typecheck, then node --test test/.
#
# Needs target/release/libbroker_module.so (make build; BROKER_MODULE
# overrides the path), redis-server and redis-cli 7.0+, and Node 20+. It does
# not build the module. The tests kill every server they start.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DIR="$ROOT/clients/node"
export BROKER_MODULE=${BROKER_MODULE:-$MODULE}

log() { printf '== %s\n' "$*"; }

if [ ! -f "$BROKER_MODULE" ]; then
    echo "missing $BROKER_MODULE: build the module first (make build)" >&2
    exit 1
fi
for tool in node npm redis-server redis-cli; do
    command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "Node $(node --version) is too old: the library needs Node 20 or newer" >&2
    exit 1
fi

lock_hash=$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$DIR/node_modules" ] || [ "$(cat "$DIR/node_modules/.lock-hash" 2>/dev/null)" != "$lock_hash" ]; then
    log "npm ci (clients/node)"
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" >"$DIR/node_modules/.lock-hash"
fi

log "clients/node: typecheck and tests (module $BROKER_MODULE)"
cd "$DIR"
if [ $# -gt 0 ]; then
    npm run --silent typecheck
    node --test --test-concurrency=1 "$@"
else
    npm test --silent
fi
