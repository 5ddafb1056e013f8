VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: venv test lint demo bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy --strict src tests benchmarks
	$(BIN)/lint-imports --config contracts.ini

# Two workers: the suite is mostly subprocesses and engine I/O, and CI machines have two cores.
test: lint
	$(BIN)/pytest -n 2

demo: venv
	$(BIN)/govkernel demo

bench: venv
	$(PY) -m benchmarks.run

clean:
	rm -rf $(VENV) .govkernel .mypy_cache .ruff_cache
