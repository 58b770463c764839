# Set-up and the two everyday commands. `make demo` runs the pipeline on the bundled sample
# video; `make test` runs the whole test suite. Both create the virtualenv on first use; `make test`
# adds Ray (requirements-cluster.txt) for the --cluster tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: venv
	$(BIN)/python run_pipeline.py --output demo_results.jsonl

$(VENV)/.cluster: requirements-cluster.txt $(VENV)/.installed
	$(BIN)/python -m pip install -q -r requirements-cluster.txt
	touch $@

test: venv $(VENV)/.cluster
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache demo_results.jsonl
