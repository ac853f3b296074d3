# Two commands set everything up: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
BYTECODE := $(VENV)/.bytecode
SHARED_DATA := $(abspath $(CURDIR)/../shared/data)
export FEDCLF_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),$(HOME)/.cache/fedclf)
export TF_CPP_MIN_LOG_LEVEL ?= 2
TEST_WORKERS ?= 2

.PHONY: install demo test bench bench-peers bench-scaling faults guide notebooks clean-venv

install: $(STAMP) $(BYTECODE)

$(STAMP): requirements.lock overrides.txt setup.cfg
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(UV) pip install --python $(PY) -q -r requirements.lock --override overrides.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Bytecode for every installed module, compiled once. uv installs without
# it, and where PYTHONDONTWRITEBYTECODE is set (as on this project's
# machines) Python never caches it either: every process then recompiles
# TensorFlow's ~3,500 modules, 6-20 s of CPU before it does anything, which
# the test suite's binary subprocesses and the notebooks' kernels pay
# hundreds of times. The repository's own modules are compiled by `test`.
$(BYTECODE): $(STAMP)
	$(PY) -m compileall -q -j 0 $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") > /dev/null || true
	@touch $(BYTECODE)

SOURCES := fedclf simulations baselines benchmarks docs tests

demo: $(STAMP) $(BYTECODE)
	$(PY) -m simulations.demo --out_dir=demo_out --overwrite

test: $(STAMP) $(BYTECODE)
	$(PY) -m compileall -q -j 0 $(SOURCES) > /dev/null
	$(PY) -m pytest -q -n $(TEST_WORKERS) --durations=15 tests

bench: $(STAMP)
	$(PY) -m benchmarks.federation_bench --out=results/benchmarks.md

# fedclf against Flower's quickstart-style simulation on the same workload
# (item 8 of results/benchmarks.md, whose other sections are kept). Flower
# needs protobuf 5, fedclf pins 4: Flower gets its own environment.
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed
PEERS_PACKAGES := "flwr[simulation]==1.42.0" tensorflow-cpu
PEERS_FLAGS ?= --repeats=2

$(PEERS_STAMP): | $(STAMP)
	$(UV) venv -q --python $(PYTHON) $(PEERS_VENV)
	$(UV) pip install -q --python $(PEERS_VENV)/bin/python $(PEERS_PACKAGES)
	@touch $(PEERS_STAMP)

bench-peers: $(STAMP) $(PEERS_STAMP)
	$(PY) -m benchmarks.federation_bench --items=8 --update $(PEERS_FLAGS) --out=results/benchmarks.md

# Item 9: one TFF worker pinned to core 0 against two on cores 0 and 1
# (needs 2 cores), and results/scaling.md, the projection past one machine.
bench-scaling: $(STAMP)
	$(PY) -m benchmarks.federation_bench --items=9 --update --repeats=2 --out=results/benchmarks.md --scaling_out=results/scaling.md

# Every binary x every fault (kill -9, SIGINT/SIGTERM, full disk, read-only,
# corrupt checkpoint, concurrent run, rerun, NaN client): writes
# results/reliability.md and .json. Needs root for the mounts.
FAULT_FLAGS ?= --trials=2
faults: $(STAMP)
	$(PY) -m benchmarks.fault_injection $(FAULT_FLAGS) --out=results/reliability.md

# Regenerates every figure, table and output the guide's chapters show
# (steps whose outputs exist are skipped; GUIDE_FLAGS=--force redoes them).
guide: $(STAMP)
	$(PY) -m docs.guide.build $(GUIDE_FLAGS)

# Executes every chapter's notebook (docs/guide/notebooks/) top to bottom
# with nbclient, at small settings, in a new temporary folder (neither
# docs/guide/ nor runs/guide/ changes); prints each chapter's wall time.
# The kernel is the venv's own Python (ipykernel, installed by `install`).
# NOTEBOOK_FLAGS=--nosmall runs the chapters' own settings.
notebooks: $(STAMP) $(BYTECODE)
	$(PY) -m docs.guide.run_notebooks $(NOTEBOOK_FLAGS)

clean-venv:
	rm -rf $(VENV) $(PEERS_VENV)
