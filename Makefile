# The two set-up commands of the README. Each installs what it needs first.
VENV ?= .venv
export VENV

.PHONY: install demo test test-slow lint

install:
	@scripts/install.sh

demo: install
	$(VENV)/bin/atri demo

test: install
	$(VENV)/bin/pytest

test-slow: install
	$(VENV)/bin/pytest -m slow

lint: install
	$(VENV)/bin/ruff check .
