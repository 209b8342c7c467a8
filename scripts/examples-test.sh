#!/usr/bin/env bash
# Every example of examples/ end to end, headless: for each, Redis with the
# module, its gateway node(s) and its backend on free ports, then its
# scenario.mjs (real WebSocket clients), then everything stopped
# (scripts/example.sh --test NAME). Non-zero when a scenario fails.
#
#   scripts/examples-test.sh [NAME...]     (default: all four)
#
# Each scenario gets EXAMPLE_TIMEOUT seconds (30), start and stop not
# counted. Needs the release binaries (make build; not built here),
# redis-server 7+, Node 20+ and npm (npm ci in examples/ when needed).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAMES=("$@")
[ ${#NAMES[@]} -gt 0 ] || NAMES=(payment-status order-tracking support-chat admin-broadcast)
export SCENARIO_TIMEOUT=${EXAMPLE_TIMEOUT:-30}

START=$SECONDS
passed=0
failed=()
for name in "${NAMES[@]}"; do
    t=$SECONDS
    if "$ROOT/scripts/example.sh" --test "$name"; then
        passed=$((passed + 1))
        printf '== [%s] passed in %d s\n' "$name" $((SECONDS - t))
    else
        failed+=("$name")
        printf '== [%s] FAILED after %d s\n' "$name" $((SECONDS - t))
    fi
done
printf '== examples: %d passed, %d failed in %d s%s\n' "$passed" "${#failed[@]}" $((SECONDS - START)) \
    "${failed[*]:+ (failed: ${failed[*]})}"
echo "examples: $passed passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
