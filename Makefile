# The two commands of the README. Each sets everything up (scripts/setup.sh) first.
.PHONY: demo test setup

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/revrnn demo

test: setup
	.venv/bin/python -m pytest -q tests
