# The two set-up commands of the README. Each installs what it needs first.
SHELL := /bin/bash
VENV ?= .venv
export VENV

SONAR_VENV ?= $(HOME)/.cache/atri/sonar-venv

.PHONY: install demo test test-slow test-fuzz test-sonar lint

install:
	@scripts/install.sh

demo: install
	$(VENV)/bin/atri demo

test: install
	$(VENV)/bin/pytest

test-slow: install
	$(VENV)/bin/pytest -m slow

test-fuzz: install
	$(VENV)/bin/pytest -m fuzz

# The SONAR text encoder in its own environment (scripts/sonar_env.sh builds it once);
# this checkout is (re)installed into it without dependencies, so it tests this code.
test-sonar:
	@[ -x "$(SONAR_VENV)/bin/pytest" ] || ATRI_SONAR_VENV="$(SONAR_VENV)" bash scripts/sonar_env.sh
	$(SONAR_VENV)/bin/pip install -q --no-deps -e . 2> >(grep -v "is ignored" >&2)
	$(SONAR_VENV)/bin/pytest -m sonar tests/training/test_text_encoder_sonar.py

lint: install
	$(VENV)/bin/ruff check .
