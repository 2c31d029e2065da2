# Two entry points for a fresh machine (see README):
#   make demo   -- installs edgepass (CPU torch) into .venv-demo and runs the main job on the bundled model
#   make test   -- installs edgepass with the dev extra into .venv and runs the test suite
PY ?= python3
DEMO_VENV := .venv-demo
TEST_VENV := .venv

.PHONY: demo test bench clean

$(DEMO_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/pip install -q torch==2.13.0
	$(DEMO_VENV)/bin/pip install -q -e .
	touch $@

$(TEST_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install -q -e '.[dev]'
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/edgepass demo

test: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m pytest -q

bench: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python benchmarks/analyze.py

clean:
	rm -rf $(DEMO_VENV) $(TEST_VENV) build *.egg-info
