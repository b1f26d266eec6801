# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench chaos clean chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/outbox demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The dashboard's browser tests drive Debian's Chromium (Playwright, executable_path).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the dashboard's browser tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; }

# The test command CI runs: lint, strict types on the library code, then every test.
# Two pytest-xdist workers, each with databases and a broker of its own (tests/conftest.py);
# TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: $(STAMP) chromium lint typecheck
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/write_path.py
	$(BIN)/python bench/relay.py
	$(BIN)/python bench/prune.py
	$(BIN)/python bench/consume.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/webhooks_out.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/campaign.py
	$(BIN)/python bench/exports.py
	$(BIN)/python bench/xmin.py

# Writers, relays, consumers and schedulers under kill -9, broker pauses and database drops
# (about 5 minutes on PostgreSQL); exits 1 when a guarantee fails. CHAOS_ARGS=--help.
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
