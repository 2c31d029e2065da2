# Two entry points for a fresh machine (see README):
#   make demo   -- installs edgepass (CPU torch) into .venv-demo and runs the main job on the bundled model
#   make test   -- installs edgepass with the dev extra into .venv and runs the test suite
#   make smoke  -- fresh installs on Python 3.12 and 3.13 (.venv-smoke-X.Y) + the smoke set (scripts/smoke.sh);
#                  one version: make smoke-3.13 (the interpreter: pyenv's newest X.Y.*, else pythonX.Y on PATH)
PY ?= python3
DEMO_VENV := .venv-demo
TEST_VENV := .venv
SMOKE_PYTHONS ?= 3.12 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
python_for = $(or $(lastword $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python3)),$(shell command -v python$(1)),$(error no Python $(1): install it with pyenv or put python$(1) on PATH))

SMOKE_TARGETS := smoke-3.11 smoke-3.12 smoke-3.13

.PHONY: demo test bench clean smoke $(SMOKE_TARGETS)

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

smoke: $(addprefix smoke-,$(SMOKE_PYTHONS))

$(SMOKE_TARGETS): smoke-%:
	scripts/smoke.sh $(call python_for,$*) .venv-smoke-$*

bench: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python benchmarks/analyze.py

clean:
	rm -rf $(DEMO_VENV) $(TEST_VENV) .venv-smoke-* build *.egg-info
