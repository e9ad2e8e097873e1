# The README's commands. `make test` is what CI runs.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

# The suite runs on PostgreSQL and Redis (DESIGN.md §9); pytest-django creates test_<name>.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/avatar_service
TEST_REDIS_URL ?= redis://127.0.0.1:6379/11
TEST_SECRET_KEY ?= test-only-secret-key-not-for-production

.PHONY: venv test lint format migrate

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

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
