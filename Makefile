# The README's commands. `make quickstart` and `make test` work on a fresh machine (PyPI only).
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch; a GPU user overrides it: make setup TORCH="torch==2.13.0 --index-url ..."
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup quickstart test test-slow bench lint format tokenizer clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

quickstart: setup
	$(VENV)/bin/rewardloop quickstart

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/pytest -m "not slow" -q $(PYTEST_ARGS)

test-slow: setup
	$(VENV)/bin/pytest -m "slow" -q $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0 || exit $$rc

BENCH_ARGS ?=
# TRL runs in its own virtual environments (benchmarks/.venv-trl, .venv-trl112), never in the project's.
bench: setup
	bash benchmarks/setup_trl_envs.sh
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: setup
	$(VENV)/bin/ruff check --fix src tests benchmarks
	$(VENV)/bin/ruff format src tests benchmarks

# Retrain the built-in tokenizer shipped in src/rewardloop/models/tokenizer.json after a built-in task's text changes
# (tests/unit/test_tokenizer.py fails until then).
tokenizer: setup
	$(PY) -c "from rewardloop.envs.corpus import default_corpus; from rewardloop.models.tokenizer import write_builtin; \
	print(write_builtin(default_corpus()))"

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
