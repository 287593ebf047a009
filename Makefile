# Cairn's commands. `make devnet` runs the main job, `make test` the tests.
# Both install what the machine lacks first (scripts/install-deps.sh).

SHELL := /bin/bash
# One target directory outside the clone, reused across clones and CI runs
# (a cold build compiles RocksDB from C++ source).
export CARGO_TARGET_DIR ?= $(HOME)/.cache/cairn/target
DEVNET_DIR ?= devnet
# Empty: a new devnet is Raft, an existing one keeps its engine.
ENGINE ?=
VALIDATORS ?=
FRESH ?=

.PHONY: deps build test devnet bench bench-network soak chaos fuzz fuzz-merge fuzz-seeds lint fmt
SEEDS ?= 10000

deps:
	@scripts/install-deps.sh

# One build for everything (the release profile, see Cargo.toml): the tests,
# the devnet, the soaks and the benchmarks run the same binaries.
build: deps
	cargo build --release --workspace --bins

# Binaries first: the end-to-end tests run them as real processes (and
# the dashboard's in a browser: install-deps --test adds Chromium).
test: build
	@scripts/install-deps.sh --test
	cargo test --release --workspace --no-fail-fast

devnet: build
	@scripts/devnet.sh "$(DEVNET_DIR)" "$(ENGINE)" "$(VALIDATORS)" "$(FRESH)"

bench: deps
	cargo bench -p cairn-chain

# Throughput and latency of a fresh 4-validator devnet per engine; writes
# the table in docs/benchmarks.md. ENGINES=, RATES=, DURATION=.
bench-network: build
	scripts/bench-network.sh

# The consensus simulator over many seeds per scenario (SCENARIOS=raft/figure8
# for one; see `cairn-sim list`).
# (Built with the workspace's features: a build of one package would
# resolve them anew and rebuild RocksDB.)
soak: build
	$(CARGO_TARGET_DIR)/release/cairn-sim soak --seeds $(SEEDS) $(SCENARIOS)

# A real devnet under load and a seeded schedule of faults (kill -9,
# SIGSTOP, partitions), then a check of every node's chain against what the
# clients saw. A failing run prints the command that replays it.
# BYZANTINE=equivocate (PBFT) runs validator 0 as a Byzantine process.
SEED ?= 1
DURATION ?= 120
RATE ?= 50
FAULTS ?= kill,pause,isolate,halves,skew,disk-full
chaos: build
	$(CARGO_TARGET_DIR)/release/cairn-chaos --engine $(or $(ENGINE),raft) --seed $(SEED) --duration $(DURATION) \
		--validators $(or $(VALIDATORS),4) --rate $(RATE) --faults $(FAULTS) \
		$(if $(BYZANTINE),--byzantine $(BYZANTINE))

# cargo-fuzz on every decoder and handler that takes bytes from a peer or a
# user (nightly; installed if missing): FUZZ_SECONDS per target, or the
# targets named in FUZZ_TARGETS. `make test` replays fuzz/corpus and
# fuzz/regressions on stable.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: deps
	scripts/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Folds what fuzz runs found into the committed corpus (inputs that add
# coverage only).
fuzz-merge: deps
	scripts/fuzz --merge $(FUZZ_TARGETS)

# Writes the seed inputs (valid messages, recorded engine runs, generated
# configuration files) into fuzz/corpus.
fuzz-seeds: build
	$(CARGO_TARGET_DIR)/release/cairn-fuzz-seeds fuzz/corpus

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all
