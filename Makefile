# Two commands set up everything: `make demo` runs the whole loop, `make test` the tests.
# Both create the project-local environment (.venv) from the lock file first.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .uv/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never

.PHONY: install demo test test-fast bench ui clean

install: $(VENV)/.installed

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

demo: install
	$(VENV)/bin/mlops demo

test: install
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

bench: install
	for script in benchmarks/[a-z]*.py; do $(VENV)/bin/python $$script || exit 1; done

ui: install
	$(VENV)/bin/mlops ui

clean:
	rm -rf .mlops
