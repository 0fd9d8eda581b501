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
$(RUNTIME): requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(DEV): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@ $(RUNTIME)

venv: $(DEV)

demo: $(RUNTIME)
	$(PY) -m pipeline up $(ARGS)

test: $(DEV)
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

# The fault and fuzz suites alone, in their long forms: many more generated inputs than `make
# test` tries, three kills and outages, a 3-minute soak (`make test` runs the short forms).
faults: $(DEV)
	HYPOTHESIS_PROFILE=long FAULTS_LONG=1 $(PY) -m pytest -m faults $(PYTEST_ARGS)

lint: $(DEV)
	$(PY) -m ruff check .

bench: $(DEV)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
