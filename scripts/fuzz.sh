#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (socketio, client_frame, server_frame,
# envelope, jwt) for a bounded time each, starting from the committed seed
# corpus in fuzz/corpus/<target>/.
#
#   scripts/fuzz.sh [SECONDS]     # per target; default 60 (`make fuzz`)
#
# New interesting inputs go to target/fuzz-corpus/<target>/ (copy them into
# fuzz/corpus/ to keep them); a crash leaves its input in
# fuzz/artifacts/<target>/ and fails the run. Needs the nightly toolchain
# (cargo fuzz builds with -Zsanitizer); installs cargo-fuzz when missing.
# With FUZZ_OPTIONAL=1 a machine without nightly skips with a message
# instead of failing (that is how `make test` runs the short version).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_PER_TARGET=${1:-60}
# FUZZ_TARGETS="socketio jwt" runs only those.
read -r -a TARGETS <<<"${FUZZ_TARGETS:-client_frame server_frame envelope jwt socketio}"

if ! cargo +nightly --version >/dev/null 2>&1; then
    if [ -n "${FUZZ_OPTIONAL:-}" ]; then
        echo "fuzz: skipped, no nightly toolchain here (the corpus replay in tests/fuzz_corpus.rs still ran)" >&2
        exit 0
    fi
    echo "fuzz: cargo fuzz needs the nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz..." >&2
    cargo install cargo-fuzz --locked
fi

cd "$ROOT/fuzz"
echo "fuzz: building the targets (nightly, sanitizer)..." >&2
cargo +nightly fuzz build -O
FAILED=()
for target in "${TARGETS[@]}"; do
    found="$ROOT/target/fuzz-corpus/$target"
    mkdir -p "$found"
    echo "fuzz: $target for ${SECONDS_PER_TARGET}s" >&2
    if ! cargo +nightly fuzz run -O "$target" "$found" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 2>"$ROOT/target/fuzz-$target.log"; then
        tail -n 30 "$ROOT/target/fuzz-$target.log" >&2
        FAILED+=("$target")
    else
        grep -E '^stat::number_of_executed_units|^Done' "$ROOT/target/fuzz-$target.log" | sed "s/^/  $target: /" >&2 || true
    fi
done
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${FAILED[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: no failure in ${#TARGETS[@]} targets × ${SECONDS_PER_TARGET}s" >&2
