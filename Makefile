# The two commands of the README:
#   make run    local RabbitMQ (scripts/rabbitmq.sh) + partlog on 127.0.0.1:50051
#   make test   local RabbitMQ + the whole test suite against it
# Other targets are for development.

CARGO ?= cargo
CONFIG ?= config/partlog.toml

.PHONY: run test test-cluster soak bench broker broker-cluster broker-stop build lint fmt clean-broker

run: broker
	$(CARGO) build --release --locked --bin partlog
	./target/release/partlog serve --config $(CONFIG)

test: broker
	$(CARGO) test --locked --all-targets

# Cluster behaviour on three local nodes (leader failover); CI runs it too.
test-cluster: broker-cluster
	$(CARGO) test --locked --features cluster-tests --test cluster -- --nocapture

# 60 s of load with a broker restart in the middle; prints the counts.
soak: broker
	$(CARGO) test --locked --release --features soak --test soak -- --nocapture

# partlog against the native stream client in one run (~9 minutes on 2 cores); prints a table of
# ratios and writes bench/results/<UTC time>.json. Flags: make bench ARGS="--help".
bench: broker
	$(CARGO) bench --locked --bench partlog_vs_native -- $(ARGS)

broker:
	scripts/rabbitmq.sh start

broker-cluster:
	scripts/rabbitmq.sh start-cluster

broker-stop:
	scripts/rabbitmq.sh stop

build:
	$(CARGO) build --locked --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets --all-features -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-broker:
	scripts/rabbitmq.sh wipe
