# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Each creates the project's virtual environment at .venv if it is missing. The Docker images
# install with the same two steps (`make deps`, then `make venv`), so the dependencies are a
# layer of their own there and a code change reinstalls only the project.
PYTHON ?= python3
VENV := .venv
# Extras the tests and the demo need.
EXTRAS ?= dev,ray,dali,mlflow

# Prints pyproject.toml's dependencies plus those of the extras named in $(EXTRAS), one a line.
define LIST_REQUIREMENTS
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = [name for name in sys.argv[1].split(",") if name]
print(*project["dependencies"], *(r for e in extras for r in project["optional-dependencies"][e]), sep="\n")
endef
export LIST_REQUIREMENTS

.PHONY: demo test lint deps venv clean

$(VENV)/.deps: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -c "$$LIST_REQUIREMENTS" '$(EXTRAS)' > $(VENV)/requirements.txt
	$(VENV)/bin/python -m pip install --quiet --constraint constraints.txt --requirement $(VENV)/requirements.txt
	touch $@

$(VENV)/.installed: $(VENV)/.deps pyproject.toml Makefile
	$(VENV)/bin/python -m pip install --quiet --no-deps --editable .
	touch $@

deps: $(VENV)/.deps

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/ctrlaug demo

test: venv
	$(VENV)/bin/python -m pytest

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
