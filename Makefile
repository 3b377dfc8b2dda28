# The two commands of the README:
#   make run    local RabbitMQ (scripts/rabbitmq.sh) + partlog on 127.0.0.1:50051
#   make test   local RabbitMQ + the whole test suite against it
# Other targets are for development.

CARGO ?= cargo
CONFIG ?= config/partlog.toml

# buf (proto lint, breaking-change check, `buf curl` in README examples),
# from the npm package that ships its binary, pinned, into .tools/.
BUF_VERSION := 1.75.0
TOOLS := .tools
BUF := $(TOOLS)/node_modules/.bin/buf
BUF_STAMP := $(TOOLS)/buf-$(BUF_VERSION).installed
# cargo deny (advisories, licenses, bans, sources: deny.toml), pinned, built from crates.io
# into .tools/; the RustSec database it checks against is the snapshot in supply-chain/
# (scripts/advisory-db.sh).
DENY_VERSION := 0.20.2
DENY := $(TOOLS)/cargo-deny/bin/cargo-deny
DENY_STAMP := $(TOOLS)/cargo-deny-$(DENY_VERSION).installed
ADVISORY_DB := supply-chain/advisory-db.tar.gz
ADVISORY_STAMP := $(TOOLS)/advisory-db.unpacked

.PHONY: run test test-patches test-cluster soak soak-cluster bench fuzz broker broker-cluster broker-stop browser build lint fmt clean-broker tools deny-tools proto-baseline

run: broker
	$(CARGO) build --release --locked --bin partlog
	./target/release/partlog serve --config $(CONFIG)

test: broker browser tools test-patches
	$(CARGO) test --locked --all-targets

# The patched crates' own unit tests, each in its directory (patches/*/PATCHES.md).
test-patches:
	cd patches/rabbitmq-stream-protocol && CARGO_TARGET_DIR=$(CURDIR)/target/patches $(CARGO) test --locked --lib
	cd patches/rabbitmq-stream-client && CARGO_TARGET_DIR=$(CURDIR)/target/patches $(CARGO) test --lib

# Cluster behaviour on three local nodes (leader failover); CI runs it too.
# The node-loss test (SIGKILL) runs last, on its own: the others measure failover on a cluster
# that has not just recovered a crashed node.
test-cluster: broker-cluster
	$(CARGO) test --locked --features cluster-tests --test cluster -- --nocapture $(NODE_LOSS_TESTS:%=--skip %)
	$(CARGO) test --locked --features cluster-tests --test cluster -- --nocapture --exact $(NODE_LOSS_TESTS)

# Tests that kill a node: each alone.
NODE_LOSS_TESTS = a_killed_leader_node_leaves_a_bounded_double_active_window a_resize_during_a_node_kill_keeps_each_keys_order

# 60 s of load with a broker restart in the middle; prints the counts.
soak: broker
	$(CARGO) test --locked --release --features soak --test soak -- --nocapture

# The same against the three-node cluster (the one make test-cluster leaves running).
soak-cluster: broker-cluster
	$(CARGO) test --locked --release --features soak --test soak -- --nocapture

# partlog against the native stream client in one run (~8 minutes on 2 cores); prints a table of
# ratios and writes bench/results/<UTC time>.json. Flags: make bench ARGS="--help".
bench: broker
	$(CARGO) bench --locked --bench partlog_vs_native -- $(ARGS)

# The generative checks of every decoder of broker bytes (src/generative.rs), each for
# FUZZ_SECONDS of fresh random cases (make test runs one short round of each).
FUZZ_SECONDS ?= 120
fuzz:
	PARTLOG_FUZZ_SECONDS=$(FUZZ_SECONDS) $(CARGO) test --locked --release --lib generative

# With a stream TLS listener (5551) beside the plain one (5552): tests/broker_tls.rs
# connects partlog through it. A node started earlier without it stops here with a hint
# (`scripts/rabbitmq.sh restart --tls`).
broker:
	scripts/rabbitmq.sh start --tls

broker-cluster:
	scripts/rabbitmq.sh start-cluster

# Headless Chromium and chromedriver for the console's browser test (tests/console.rs),
# from Debian's packages; does nothing when both are installed.
browser:
	scripts/browser.sh install

broker-stop:
	scripts/rabbitmq.sh stop

build:
	$(CARGO) build --locked --all-targets

lint: tools deny-tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets --all-features -- -D warnings
	$(DENY) --locked check
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(BUF) breaking --against proto/baseline.json

# Project-local tools; a new BUF_VERSION (DENY_VERSION, snapshot) installs again.
tools: $(BUF_STAMP)

deny-tools: $(DENY_STAMP) $(ADVISORY_STAMP)

$(DENY_STAMP):
	rm -rf $(TOOLS)/cargo-deny-*.installed
	$(CARGO) install --locked --version $(DENY_VERSION) --root $(TOOLS)/cargo-deny cargo-deny
	touch $@

$(ADVISORY_STAMP): $(ADVISORY_DB) supply-chain/advisory-db.commit scripts/advisory-db.sh
	scripts/advisory-db.sh unpack $(TOOLS)/advisory-db
	touch $@

$(BUF_STAMP):
	rm -rf $(TOOLS)/buf-*.installed
	npm install --prefix $(TOOLS) --no-save --no-audit --no-fund --loglevel=error @bufbuild/buf@$(BUF_VERSION)
	$(BUF) --version
	touch $@

# The API as released, which `buf breaking` compares the proto with: run it
# when releasing, after which only compatible changes pass `make lint`.
proto-baseline: tools
	$(BUF) build --exclude-source-info -o proto/baseline.json

fmt:
	$(CARGO) fmt --all

clean-broker:
	scripts/rabbitmq.sh wipe
