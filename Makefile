# Everything a fresh machine needs; `make test` is what CI runs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo sim bench bench-sim soak clean test-processes bench-shared

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'  # dev includes the extras: aiohttp, plot, bench
	touch $(STAMP)

# mypy reads what to check from pyproject.toml: src, tests and benchmarks, all strict except
# that tests need no annotations.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# Two test processes per core: the suite is mostly waiting on simulators and subprocesses (on
# 2 cores: 270 s with 2 workers, 222 s with 3, 191 s with 4, all passing).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) * 2 )))
# Lint runs beside the tests (mypy is half a minute of one core); its output follows theirs.
test: $(STAMP)
	@$(MAKE) --no-print-directory lint > $(VENV)/lint.log 2>&1 & lint=$$!; \
	$(BIN)/pytest -n $(TEST_WORKERS); tests=$$?; \
	wait $$lint; linted=$$?; cat $(VENV)/lint.log; \
	[ $$linted -eq 0 ] || echo "make test: lint failed (above)" >&2; \
	[ $$tests -eq 0 ] && [ $$linted -eq 0 ]

# 1,000 prompts through `runfleet batch` on the simulated `tight` account (600 RPM enforced per
# second) at 10x speed. Exit status 1 only says that some runs failed, as the scenario makes 1 % do.
demo: $(STAMP)
	mkdir -p .demo
	$(BIN)/runfleet batch examples/prompts.jsonl --out .demo/results.jsonl --model gpt-5-mini \
		--sim tight --sim-time-scale 0.1 --fresh --summary-json .demo/summary.json \
		|| [ $$? -eq 1 ]

# The README's Benchmarks section: every table and plot there comes from these commands
# (about 90 minutes on 2 cores). Each writes its table (.md), figures (.json) and plot (.png).
BENCH := $(BIN)/runfleet bench --runs 500
bench: $(STAMP)
	mkdir -p docs/bench
	$(BENCH) --scenario ample --json docs/bench/ample.json --plot docs/bench/ample.png \
		--strategies 'naive,classic,fixed2s,fleet,fleet:webhooks,fleet:webhooks,drop=20%' \
		| tee docs/bench/ample.md
	$(BENCH) --scenario ample --kind assistants --strategies classic,fixed2s,sdk,fleet \
		--json docs/bench/ample-assistants.json | tee docs/bench/ample-assistants.md
	$(BENCH) --scenario tight --kind assistants --json docs/bench/tight.json \
		--plot docs/bench/tight.png | tee docs/bench/tight.md
	$(BENCH) --scenario ample --frontier --json docs/bench/frontier.json \
		--plot docs/bench/frontier.png | tee docs/bench/frontier.md
	$(BIN)/runfleet bench --scenario ample --runs 2000 --strategies classic,fleet \
		--json docs/bench/ample-2000.json | tee docs/bench/ample-2000.md
	$(BIN)/runfleet bench --scenario tokens --runs 1000 --strategies classic,cookbook,fleet \
		--time-scale 0.1 --limit 1200 --json docs/bench/tokens.json | tee docs/bench/tokens.md
	# The grid (README, "Other run-time shapes"): 1 min offline, ~60 min on the simulator
	# (short cells at time scale 1, long ones scaled; both into one grid.json);
	# per-second enforcement on `strict`: ~10 min.
	$(BIN)/python benchmarks/grid.py --offline --runs 500 --out docs/bench/grid-offline
	$(BIN)/python benchmarks/grid.py --offline --comb --runs 500 --out docs/bench/grid-offline-comb
	$(BIN)/python benchmarks/grid.py --runs 500 --time-scale 1 --out docs/bench/grid-sim-500 \
		--cells m1-s0.3,m1-s0.6,m1-s1.2,m4-s0.3,m4-s0.6,m4-s1.2,drift
	$(BIN)/python benchmarks/grid.py --runs 500 --out docs/bench/grid-sim-500 --append \
		--cells m15-s0.3,m15-s0.6,bimodal,m60-s0.3,m60-s0.6
	$(BIN)/runfleet bench --scenario strict --runs 1000 --time-scale 1 \
		--strategies fleet:per_second=10,fleet --json docs/bench/strict.json | tee docs/bench/strict.md

bench-sim: $(STAMP)
	$(BIN)/python benchmarks/sim_throughput.py

# The long checks `make test` leaves out (README, "Reliability"; a few hours on 2 cores). The
# reliability suite's long versions: the faults soak (10,000 runs), 50 kill -9 trials of 1,000
# items, SIGTERM with 500 in flight; each prints its figures. Memory: 3,000 runs kept in flight
# for 200,000 polls (about 20 minutes), RSS and traced memory per 10,000 polls after warm-up.
# Event-loop lag (max and p99) with 10,000 runs in flight. The other soak-marked tests too
# (shards over three processes on 90 items, without Redis).
soak: $(STAMP)
	$(BIN)/pytest -m soak -s -p no:cacheprovider
	$(BIN)/python benchmarks/memory_soak.py --in-flight 3000 --polls 200000 --warmup 50000
	$(BIN)/python benchmarks/fleet_scale.py --runs 10000 --http httpx --no-profile

# Invariant 9 with real OS processes, one simulator and one Redis (README, "Many processes"):
# shared limits, a 429 pausing the others, priorities, Redis restarts, the webhook relay, and
# three --shard --redis processes on 3,000 items (about 9 minutes at load 9-12 on 2 cores).
test-processes: $(STAMP)
	$(BIN)/pytest -q -m processes

# 4 processes x 1,000 runs on tight: one Redis, none, and Redis killed for 5 s (~30 min).
bench-shared: $(STAMP)
	$(BIN)/python benchmarks/shared_limits.py --processes 4 --runs 1000 --time-scale 0.5

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo
