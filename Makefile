# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed

.PHONY: demo test faults lint venv bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The demo needs only the runtime packages; tests add pytest, playwright, scikit-image's photos...
# The project itself goes in editable, with its console scripts (kafka-live-video up, ...).
$(RUNTIME): requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(DEV): requirements.txt requirements-dev.txt pyproject.toml | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@ $(RUNTIME)

venv: $(DEV)

demo: $(RUNTIME)
	$(PY) -m pipeline up $(ARGS)

# Tests run in TEST_WORKERS processes (a module stays on one worker, with its broker); the few
# that measure timing or memory against the machine run alone afterwards (marker serial).
# Two workers: ~6 + ~3 min on a quiet 2-core machine (7.8 + 4.1 min at load ~10 from other
# jobs); TEST_WORKERS=1 runs the first part one test at a time (~12 min quiet).
TEST_WORKERS ?= 2

test: $(DEV)
	$(PY) -m ruff check .
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial" $(PYTEST_ARGS)
	$(PY) -m pytest -m serial $(PYTEST_ARGS)

# The fault and fuzz suites alone, in their long forms: many more generated inputs than `make
# test` tries, three kills and outages, a 3-minute soak (`make test` runs the short forms).
faults: $(DEV)
	HYPOTHESIS_PROFILE=long FAULTS_LONG=1 $(PY) -m pytest -m faults $(PYTEST_ARGS)

lint: $(DEV)
	$(PY) -m ruff check .

bench: $(DEV)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
