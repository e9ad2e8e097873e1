# The README's commands. `make test` is what CI runs.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

# The suite runs on PostgreSQL and Redis (DESIGN.md §9); pytest-django creates test_<name>.
# The name carries this run's process id, so two runs on one machine never share a database.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/avatar_service_$(shell echo $$PPID)
TEST_REDIS_URL ?= redis://127.0.0.1:6379/11
TEST_SECRET_KEY ?= test-only-secret-key-not-for-production

.PHONY: venv run test lint format migrate

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@# One install was seen to leave playwright empty (metadata only); a reinstall mends it.
	$(BIN)/python -c "import playwright.sync_api" 2>/dev/null || \
		$(BIN)/pip install --quiet --force-reinstall --no-deps \
		"$$(grep -i '^playwright==' requirements-dev.txt)"
	touch $@

venv: $(VENV)/.installed

# Everything in one terminal (scripts/run.py, Procfile.dev): web on http://127.0.0.1:8000/,
# worker, beat, an embedded Redis and the Replicate simulator unless REDIS_URL /
# REPLICATE_API_TOKEN are set. Ctrl-C stops it all. Options: make run RUN_ARGS="--port 8001".
run: venv
	$(BIN)/python scripts/run.py $(RUN_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
		DJANGO_SECRET_KEY=$(TEST_SECRET_KEY) $(BIN)/pytest

migrate: venv
	$(BIN)/python manage.py migrate

# Benchmarks (bench/, README "Benchmarks"): figures, not tests; about 15 minutes. Needs
# PostgreSQL and Redis as `make test` does; makes and drops its own bench_avatars_* databases
# and uses Redis DB 15. Options: make bench BENCH_ARGS="-n 20 -L 2 --only pipeline".
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/15
.PHONY: bench
bench: venv
	BENCH_DATABASE_URL=$(BENCH_DATABASE_URL) BENCH_REDIS_URL=$(BENCH_REDIS_URL) \
		$(BIN)/python -m bench $(BENCH_ARGS)
