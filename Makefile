# Everything a fresh machine needs; `make test` is what CI runs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo sim bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# 1,000 prompts through `runfleet batch` on the simulated `tight` account (600 RPM enforced per
# second) at 10x speed. Exit status 1 only says that some runs failed, as the scenario makes 1 % do.
demo: $(STAMP)
	mkdir -p .demo
	$(BIN)/runfleet batch examples/prompts.jsonl --out .demo/results.jsonl --model gpt-5-mini \
		--sim tight --sim-time-scale 0.1 --fresh --summary-json .demo/summary.json \
		|| [ $$? -eq 1 ]

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo
