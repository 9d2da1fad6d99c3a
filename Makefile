# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Each creates the project's virtual environment at .venv if it is missing.
PYTHON ?= python3
VENV := .venv
# Extras the tests and the demo need.
EXTRAS ?= dev,ray,dali,mlflow

.PHONY: demo test lint venv clean

$(VENV)/.installed: pyproject.toml constraints.txt Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --constraint constraints.txt --editable '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/ctrlaug demo

test: venv
	$(VENV)/bin/python -m pytest

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
