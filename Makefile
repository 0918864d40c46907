# GoZon — the commands of the contract. See README.md.

CARGO ?= cargo

.PHONY: run test test-deps alert-rules bench bench-grown profile chaos chaos-cluster lint browser-test compose-check compose-up compose-down compose-smoke build-release clean-test-leftovers

## Build in release mode and run the whole system in the foreground (Ctrl-C stops it gracefully),
## the services on their own least-privilege broker logins (scripts/run.sh).
run: build-release
	scripts/run.sh

build-release:
	$(CARGO) build --release --locked -p gozon -p gozon-loadgen -p gozon-chaos

## The load benchmark against a freshly started release build; pass options with BENCH_ARGS,
## e.g. make bench BENCH_ARGS="--rate 400 --duration 60" (see gozon-loadgen --help).
bench: build-release
	scripts/bench.sh $(BENCH_ARGS)

## Where an order's CPU goes: the benchmark against a private PostgreSQL with pg_stat_statements,
## each role sampled by perf; flame graphs and per-statement costs land in profile-output/.
## Needs perf (Debian linux-perf) and inferno (cargo install inferno); PROFILE_SAMPLES=0 measures
## the statements alone, without perf.
profile: build-release
	scripts/profile.sh $(BENCH_ARGS)

## The benchmark against databases already holding 10 million orders (GROWN_ORDERS), made and
## filled once by scripts/grown/*.sql (several minutes) and reused; GROWN_RESEED=1 refills them.
bench-grown: build-release
	scripts/bench-grown.sh $(BENCH_ARGS)

## The fault harness on private PostgreSQL and RabbitMQ servers: load, SIGKILLs, crashes, cut
## connections, then the audit; pass options with CHAOS_ARGS (see gozon-chaos --help).
chaos: build-release
	./target/release/gozon-chaos $(CHAOS_ARGS)

## The fault harness on a three-node RabbitMQ cluster (network namespaces: needs root), five
## minutes, two instances of each service; more options with CHAOS_ARGS.
chaos-cluster: build-release
	./target/release/gozon-chaos --rabbitmq-nodes 3 --instances 2 --duration 300 $(CHAOS_ARGS)

TEST_TARGETS := --workspace --locked --lib --bins --tests

## Every test: lints, unit and integration tests against the real PostgreSQL and RabbitMQ,
## end to end through the gateway, and the browser test of the web UI. Installs what it needs
## besides PostgreSQL, RabbitMQ and Rust first (test-deps). The crates have no doc tests: running
## rustdoc over each of them for none is left out.
test: test-deps lint compose-check alert-rules
	CARGO='$(CARGO)' TEST_TARGETS='$(TEST_TARGETS)' scripts/test.sh
	$(MAKE) browser-test

## Chromium, docker-compose and the browser test's node modules, each only when missing.
test-deps:
	scripts/test-deps.sh

## The Prometheus alert rules, checked and unit-tested with promtool (Debian's prometheus).
alert-rules:
	promtool check rules deploy/prometheus/alerts.yml
	cd deploy/prometheus && promtool test rules alerts_test.yml

## The compose file is valid, and (a test in crates/gozon/tests/docs.rs) every variable it sets
## is a setting of the role it runs. Running it is compose-smoke's part.
compose-check:
	docker-compose -f docker-compose.yml config -q

## docker-compose.yml built and started (docker compose up --build), on a private Docker engine
## where none answers, with local stand-ins for images that cannot be pulled; returns once every
## container is healthy and prints the gateway's URL. More `up` options: COMPOSE_ARGS.
compose-up:
	scripts/compose/up.sh $(COMPOSE_ARGS)

## The stack down (volumes kept; COMPOSE_ARGS=-v removes them) and the private engine stopped.
compose-down:
	scripts/compose/down.sh $(COMPOSE_ARGS)

## Up, the seed's scenario, the management UI, Prometheus, two replicas of each service,
## containers killed under load with the audit, a crash restarted by the engine, down and up
## keeping the data, idle memory; then down (docs/compose.md: what it checks, how long it takes).
compose-smoke:
	scripts/compose/smoke.sh

## The web UI in headless Chromium (Debian's /usr/bin/chromium, or $$CHROMIUM), driven by
## playwright-core against `gozon run`; screenshots go to test-output/. The binary is the one the
## integration tests build, with their features: `cargo build -p gozon` would build the graph again.
browser-test: test-deps
	$(CARGO) test $(TEST_TARGETS) --no-run
	cd tests/browser && node --test

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Drop databases and broker logins left by test runs that crashed (only ours: named gozon_test_…).
clean-test-leftovers:
	-rabbitmqctl -q list_users 2>/dev/null | awk '$$1 ~ /^gozon_test_/ {print $$1}' | xargs -r -n1 rabbitmqctl -q delete_user
	psql -h 127.0.0.1 -U postgres -d postgres -Atc \
	  "SELECT 'DROP DATABASE IF EXISTS \"' || datname || '\" WITH (FORCE);' FROM pg_database WHERE datname LIKE 'gozon\_test\_%'" \
	  | psql -h 127.0.0.1 -U postgres -d postgres -q
