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

.PHONY: run test test-cluster soak soak-cluster bench fuzz broker broker-cluster broker-stop build lint fmt clean-broker tools proto-baseline

run: broker
	$(CARGO) build --release --locked --bin partlog
	./target/release/partlog serve --config $(CONFIG)

test: broker tools
	$(CARGO) test --locked --all-targets

# Cluster behaviour on three local nodes (leader failover); CI runs it too.
test-cluster: broker-cluster
	$(CARGO) test --locked --features cluster-tests --test cluster -- --nocapture

# 60 s of load with a broker restart in the middle; prints the counts.
soak: broker
	$(CARGO) test --locked --release --features soak --test soak -- --nocapture

# The same against the three-node cluster (the one make test-cluster leaves running).
soak-cluster: broker-cluster
	$(CARGO) test --locked --release --features soak --test soak -- --nocapture

# partlog against the native stream client in one run (~9 minutes on 2 cores); prints a table of
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

broker-stop:
	scripts/rabbitmq.sh stop

build:
	$(CARGO) build --locked --all-targets

lint: tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets --all-features -- -D warnings
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(BUF) breaking --against proto/baseline.json

# Project-local tools; a new BUF_VERSION installs again.
tools: $(BUF_STAMP)

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
