# Two commands from a fresh clone:
#   make audit   set up .venv and run `fedpriv audit` on the embedded default
#   make test    set up .venv (with dev tools) and run the test suite
.PHONY: audit test lint setup setup-dev bench

setup:
	@bash scripts/setup.sh

setup-dev:
	@bash scripts/setup.sh --dev

audit: setup
	.venv/bin/fedpriv audit

test: setup-dev
	.venv/bin/python -m pytest -q

lint: setup-dev
	.venv/bin/ruff check .
	.venv/bin/mypy

bench: setup-dev
	.venv/bin/python benchmarks/train_round.py
