# One entry point for people and CI. Every target installs what it needs by itself.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install debian-deps node-deps contract proto test test-citus lint typecheck unit run drill bench-core bench-ingest bench-http bench-agent bench-streams bench-recovery bench-hostile bench-commit bench-anchor clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# Debian packages the tests and the recovery commands call (PostgreSQL, its client tools,
# openssl); installs only what is missing.
debian-deps:
	@bash scripts/debian-deps.sh

# solc-js and anvil from npm, exactly as package-lock.json pins them (docs/CONTRACT.md).
# The stamp lives inside node_modules, so deleting node_modules reinstalls, and so does a
# lockfile newer than the last install.
NODE_STAMP := node_modules/.installed

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $(NODE_STAMP)

node-deps: $(NODE_STAMP)

# Regenerate the gRPC modules from src/stateset_sequencer/proto/*.proto (docs/GRPC.md);
# tests/unit/test_proto.py fails while the committed ones are behind.
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

# Rebuild the committed contract artifact from contracts/SetRegistry.sol.
contract: node-deps
	node scripts/build_contract.js

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src/stateset_sequencer tests bench

# Three workers on two cores: much of the suite waits on servers, databases and child
# processes. Whole files go to one worker (--dist loadfile), so a module's fixtures are
# built once.
TEST_WORKERS ?= 3
unit: $(STAMP) debian-deps node-deps
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

test: lint typecheck unit

# The suites that touch PostgreSQL, on a Citus coordinator you started yourself (Citus is
# not packaged for Debian, so CI cannot; docs/SCALING.md, section 6). Every scratch
# database gets the extension. The runbook checks are left out: they expect plain
# PostgreSQL.
test-citus: $(STAMP)
	@test -n "$(SEQUENCER_TEST_DATABASE_URL)" || { echo "set SEQUENCER_TEST_DATABASE_URL to the Citus server" >&2; exit 2; }
	SEQUENCER_TEST_CITUS=1 SEQUENCER_TEST_DATABASE_URL="$(SEQUENCER_TEST_DATABASE_URL)" \
		$(BIN)/pytest tests/contract tests/recovery tests/api -k "not sqlite and not runbook"

# The service on the embedded default: SQLite under ./data, no other setup. The first
# start prints a bootstrap admin API key once. HOST/PORT/DATABASE_URL etc. override.
run: $(STAMP)
	$(BIN)/stateset-sequencer serve

bench-core: $(STAMP)
	$(BIN)/python bench/bench_core.py $(or $(BENCH_ARGS),--events 10000)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis build *.egg-info src/*.egg-info

bench-ingest: $(STAMP) debian-deps
	$(BIN)/python bench/bench_ingest.py $(BENCH_ARGS)

bench-http: $(STAMP) debian-deps
	$(BIN)/python bench/bench_http.py $(BENCH_ARGS)

# The offline-first agent's push rate (outbox, receipts, cursor) against the server's own
# HTTP ingest rate at batch sizes 1, 100 and 1000, in the same run.
bench-agent: $(STAMP) debian-deps
	$(BIN)/python bench/bench_agent.py $(BENCH_ARGS)

# gRPC Push beside HTTP ingest, and live delivery latency across two server processes
# (docs/STREAMS.md, docs/GRPC.md).
bench-streams: $(STAMP) debian-deps
	$(BIN)/python bench/bench_streams.py $(BENCH_ARGS)

# The five disaster drills at full size (docs/DISASTER_RECOVERY.md, section 7): their own
# PostgreSQL clusters, anvil, sequencers and agents on loopback; reports and timelines in
# drill-reports/. DRILL_ARGS overrides, e.g. DRILL_ARGS='pitr --events 20000'.
drill: $(STAMP) debian-deps node-deps
	$(BIN)/sequencer-cli drill $(or $(DRILL_ARGS),all --events 200000 --streams 20 --agents 8) --report drill-reports

bench-recovery: $(STAMP) debian-deps
	$(BIN)/python bench/bench_recovery.py $(BENCH_ARGS)

# Commitments over a 100k-event stream on SQLite and PostgreSQL, with a proof for every
# event, against the in-memory hashing floor.
bench-commit: $(STAMP) debian-deps
	$(BIN)/python bench/bench_commit.py $(BENCH_ARGS)

# Commitments anchored per second on a real node (anvil on loopback), against the floor of
# plain signed transactions with their receipts on the same node.
bench-anchor: $(STAMP) node-deps
	$(BIN)/python bench/bench_anchor.py $(BENCH_ARGS)

# The hostile cases of the hardening issue, each against a real server on loopback: a
# poisoned batch among good ones, oversized unauthenticated bodies and bad-key floods and
# idle connections, pages of large events, and key revocation across two nodes.
# QUICK=1 runs each small (the docs test does), for a check that they work, not figures.
bench-hostile: $(STAMP) debian-deps
	$(BIN)/python bench/poison_mix.py $(if $(QUICK),--duration 1 --backends sqlite --poisons scheme)
	$(BIN)/python bench/hostile_http.py $(if $(QUICK),--bodies 3 --bad-keys 120 --slow 5 --idle 5)
	$(BIN)/python bench/page_memory.py $(if $(QUICK),--backend sqlite --events 6 --payload-kb 200 --readers 2 --rounds 1 --limit 6)
	$(BIN)/python bench/revocation_propagation.py $(if $(QUICK),--rounds 1 --off-rounds 0)

# eventsourcing's PostgreSQL recorder (the "store only" peer) beside our service-layer and
# HTTP ingest, with the COPY and 2-thread verify floors, in one run on one PostgreSQL
# server. The peer comes from the peers extra, installed here when missing: its
# requirements alone, read from pyproject.toml, so the project's own install is untouched.
PEERS_STAMP := $(VENV)/.peers-stamp

$(PEERS_STAMP): $(STAMP) pyproject.toml constraints.txt
	$(BIN)/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["peers"]))' > $(VENV)/.peers-requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -r $(VENV)/.peers-requirements.txt
	@touch $(PEERS_STAMP)

.PHONY: bench-peers
bench-peers: $(PEERS_STAMP) debian-deps
	$(BIN)/python bench/bench_peers.py $(BENCH_ARGS)
