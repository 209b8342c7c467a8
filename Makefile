# The few things a user of this repository wants to do. `make` alone lists them.
#
# Everything here works on a fresh Debian machine with cargo installed:
# `deps` installs what is missing (and nothing when all is present).

SHELL := /bin/bash
CARGO ?= cargo
# Each test spawns its own redis-server; two test threads per binary suit the
# two-core machines this runs on. Override with `make test TEST_THREADS=8`.
TEST_THREADS ?= 2
# Seconds per fuzz target: `make fuzz` and the short run inside `make test`.
FUZZ_SECONDS ?= 60
FUZZ_SHORT_SECONDS ?= 15
# `make chaos`: seconds of faults, clients, and which fault kinds
# (comma-separated: gateway-kill,master-kill,pause,sleep,cut,restart-rdb,restart-aof).
CHAOS_SECONDS ?= 600
CHAOS_CLIENTS ?= 3000
CHAOS_FAULTS ?= gateway-kill,master-kill,pause,sleep,cut,restart-rdb,restart-aof
# A short run (`make chaos-short`, about 90 s); not part of `make test`: its
# verdict depends on timing on a loaded machine (docs/OPERATIONS.md, "Fault harness").
CHAOS_SHORT = --seconds 60 --clients 300 --rate 60 --rooms 30 --quiet-s 2-4
# `make attack`: seconds of the quiet window and of each attack, and a factor
# on every count (1,000 well-behaved clients, 5,000 unauthenticated sockets...).
ATTACK_SECONDS ?= 20
ATTACK_SCALE ?= 1.0
# The short attack run inside `make test` (about 35 s): only the attacks whose
# goals hold on a 2-core machine, with a 2 ms floor for the quiet p99 (see
# docs/OPERATIONS.md, "Attack bench").
ATTACK_SHORT = --attacks joinleave,refresh,garbage --floor-ms 2

.DEFAULT_GOAL := help
.PHONY: help deps build test chaos chaos-short run stop example examples-test socketio-test bench bench-module bench-gateway bench-backends bench-peer bench-sio browser-test check-ops fuzz attack clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

deps: ## install what is missing on Debian (redis-server, redis-tools, libclang-dev, clippy, rustfmt)
	@# scripts/deps.sh runs `apt-get update` then `apt-get install -y libclang-dev redis-server ...`
	@# only for what is missing, so a machine with everything installed is left alone.
	@scripts/deps.sh

build: deps ## build the module (target/release/libbroker_module.so) and the gateway (target/release/broker-gateway)
	$(CARGO) build --release --workspace

test: build ## run every test (Rust, browser, ops files, a short fuzz, a short attack bench), then clippy and rustfmt checks
	$(CARGO) test --workspace --release -- --test-threads=$(TEST_THREADS)
	@scripts/autobahn.sh
	scripts/browser-test.sh
	scripts/node-lib-test.sh
	scripts/socketio-test.sh
	scripts/examples-test.sh
	scripts/check-ops.sh
	FUZZ_OPTIONAL=1 scripts/fuzz.sh $(FUZZ_SHORT_SECONDS)
	ATTACK_NO_BUILD=1 ATTACK_SECONDS=5 ATTACK_SCALE=0.2 ATTACK_ARGS="$(ATTACK_SHORT)" scripts/attack.sh --short
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --all -- --check

chaos-short: build ## the fault harness for 60 s with 300 clients, every fault kind
	$(CARGO) run --release -q -p broker-tests --bin chaos -- $(CHAOS_SHORT) --faults $(CHAOS_FAULTS)

chaos: build ## fault harness: cluster + single Redis, 3 gateways, CHAOS_CLIENTS clients, CHAOS_SECONDS of faults; prints the figures
	$(CARGO) run --release -q -p broker-tests --bin chaos -- --seconds $(CHAOS_SECONDS) --clients $(CHAOS_CLIENTS) --faults $(CHAOS_FAULTS)

autobahn: build ## run the Autobahn WebSocket conformance cases (kosoku) against the gateway
	@scripts/autobahn.sh

run: build ## start Redis with the module (free port, state in .run/) and a gateway, print how to reach them
	@scripts/run.sh start

stop: ## stop what `make run` started
	@scripts/run.sh stop

example: build ## run one use-case example in the foreground: make example NAME=payment-status|order-tracking|support-chat|admin-broadcast
	@if [ -z "$(NAME)" ]; then echo "usage: make example NAME=payment-status|order-tracking|support-chat|admin-broadcast" >&2; exit 2; fi
	@scripts/example.sh $(NAME)

examples-test: build ## run every example's scenario headless (examples/*/scenario.mjs against real gateways)
	@scripts/examples-test.sh

socketio-test: build ## socket.io-client 4.8 (both parsers) against /socket.io/ on two gateway nodes, with a Node backend
	@scripts/socketio-test.sh

check-ops: ## check config/: Prometheus config and alert rules (promtool), dashboard, redis.conf, systemd units
	@scripts/check-ops.sh

fuzz: deps ## run the cargo-fuzz targets for FUZZ_SECONDS each (nightly; installs cargo-fuzz)
	@scripts/fuzz.sh $(FUZZ_SECONDS)

bench-module: build ## compare BROKER.* commands with native Redis commands (redis-benchmark)
	@scripts/bench-module.sh

browser-test: build ## JS client unit tests and two browsers chatting through two gateway nodes (headless Chromium)
	@scripts/browser-test.sh

bench-gateway: build ## load-test two gateway nodes (connect storm, fan-out, chat, churn); writes docs/BENCHMARKS.md
	@scripts/bench-gateway.sh

bench-backends: build ## backends in the loop: lifecycle stream cost, RPC through a Node backend, webhook lag (medians of 3); writes docs/BENCHMARKS.md
	@BENCH_NO_BUILD=1 scripts/bench-backends.sh

attack: build ## well-behaved chat clients under six attacks in turn (ATTACK_SECONDS, ATTACK_SCALE); table into docs/OPERATIONS.md
	@ATTACK_NO_BUILD=1 ATTACK_SECONDS=$(ATTACK_SECONDS) ATTACK_SCALE=$(ATTACK_SCALE) scripts/attack.sh

bench-peer: ## the Socket.IO 4 + redis-adapter peer alone (npm ci from bench/socketio/package-lock.json)
	@scripts/bench-peer.sh

bench-sio: build ## the Socket.IO peer's Node driver (socket.io-client) against two gateway nodes' /socket.io/: connect, fan-out, chat
	@BENCH_NO_BUILD=1 scripts/bench-sio.sh

bench: build ## this broker and the Socket.IO peer side by side, and the same client against both servers (medians of 5 runs, ratios, chart) into docs/BENCHMARKS.md
	@BENCH_NO_BUILD=1 scripts/bench.sh

clean: stop ## remove build output and .run/
	$(CARGO) clean
	rm -rf .run
