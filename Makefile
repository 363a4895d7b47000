# Two commands: `make run` sets up and runs everything, `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test fuzz setup bench screenshots messages clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed (found %s); set PYTHON=python3.x" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py up

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Schemathesis against the live API schema on a throwaway database (docs/testing.md).
fuzz: setup
	.ci/fuzz-api

# Benchmarks need PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/recovery_bench);
# figures go to docs/performance.md. One of them: make bench BENCH_ARGS="--only sweep|recheck|admin|api".
bench: setup
	DEBUG=1 $(BIN)/python bench/run.py $(BENCH_ARGS)

# Staff pages of a fresh demo in English and Chinese, into docs/screenshots/ (needs Debian's chromium).
screenshots: setup
	$(BIN)/python -m tests.e2e.screenshots

# Rebuild the Simplified Chinese catalogue after changing user-facing strings (needs GNU gettext).
messages: setup
	DEBUG=1 $(BIN)/python manage.py makemessages --locale zh_Hans --ignore '.venv/*' --ignore 'bench/*' --ignore 'tests/*' --no-obsolete
	DEBUG=1 $(BIN)/python manage.py compilemessages --locale zh_Hans --ignore '.venv/*'

clean:
	rm -rf $(VENV) var staticfiles
