# Two commands set up everything: `make demo` runs the whole loop, `make test` the tests.
# Both create the project-local environment (.venv) from the lock file first.
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .uv/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
# Bytecode compiled once at install: every process the loop starts (CLI, Prefect, MLflow and
# BentoML servers) then skips compiling its imports, even where PYTHONDONTWRITEBYTECODE is set.
export UV_COMPILE_BYTECODE := 1

.PHONY: install browser postgres checkov demo check test test-fast bench docs ui clean

install: $(VENV)/.installed

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	# Projects made by `mlops init` install these same pins; resolving them once here fills
	# uv's cache, so their installs (and the tests that make one) need no network.
	$(UV) export --frozen --all-groups --no-hashes --no-emit-project --quiet | \
		$(UV) pip compile - --quiet --python $(VENV)/bin/python -o /dev/null
	touch $@

demo: install
	$(VENV)/bin/mlops demo

# Lint, type check, security lint and the dependency audit; `make test` runs it first.
check: install
	$(VENV)/bin/ruff check mlops flows models tests benchmarks docs .ci
	$(VENV)/bin/mypy mlops
	$(VENV)/bin/bandit --quiet --configfile pyproject.toml --recursive mlops
	$(UV) export --frozen --all-groups --no-hashes --no-emit-project --quiet -o $(VENV)/audit-requirements.txt
	$(VENV)/bin/python .ci/audit.py $(VENV)/audit-requirements.txt

# Three test processes (pytest-xdist): most tests wait on servers they start, so three
# keep 2 cores busy. The slowest tests are listed at the end: the budget is 25 minutes.
TEST_WORKERS ?= 3
test: check browser postgres checkov
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --durations=40

# Debian's Chromium for the browser tests (Playwright drives it; no browser download).
# Without it (no root, no apt) those tests skip and say why.
browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } || \
		echo "Chromium could not be installed (needs root and apt-get): the browser tests will skip."; }

# Debian's PostgreSQL server for `mlops stack` and its tests (initdb and postgres; no cluster is used).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || { \
		command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } || \
		echo "PostgreSQL could not be installed (needs root and apt-get): the stack tests will skip."; }

# checkov scans the manifests `mlops k8s render` writes (tests/test_kubernetes.py). It gets its own
# environment, from its own lock: its pins (packaging, cachetools, ...) would move the project's.
CHECKOV := .tools/checkov/bin/checkov
checkov: $(CHECKOV)

$(CHECKOV): deploy/k8s/checkov-requirements.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) .tools/checkov
	$(UV) pip sync --quiet --python .tools/checkov/bin/python deploy/k8s/checkov-requirements.txt
	touch $@

test-fast: install
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder -m "not slow"

# The configuration reference (from `mlops config --schema`) and the API reference (pdoc) under docs/.
docs: install
	$(VENV)/bin/python docs/build.py

bench: install
	for script in benchmarks/[a-z]*.py; do $(VENV)/bin/python $$script || exit 1; done

ui: install
	$(VENV)/bin/mlops ui

clean:
	rm -rf .mlops
