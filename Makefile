# Two entry points for a fresh machine:
#   make demo   set up .venv and run the self-modifying training demo (outputs/self_modifying/)
#   make test   set up .venv, lint, and run the test suite
VENV_PY := .venv/bin/python

.PHONY: setup setup-test demo test lint bench

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

demo: setup
	$(VENV_PY) demos/self_modifying.py

lint: setup-test
	$(VENV_PY) -m ruff check .
	$(VENV_PY) -m ruff format --check .

test: lint
	$(VENV_PY) -m pytest

bench: setup
	$(VENV_PY) benchmarks/speed_report.py --threads 1 --compile aot_eager
