# Two commands for a fresh clone: `make run` (the main job) and `make test` (every test).
# Both create .venv and install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# A CPU build of torch is installed before the project so pip does not pull a multi-GB CUDA build.
# Elsewhere: `make run TORCH=torch` takes your platform's default build.
TORCH  ?= torch==2.13.0

.PHONY: setup run test editions handouts walkthrough clean-env

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

run: setup
	$(BIN)/trainkit run

test: setup
	bash tools/install-browser.sh
	bash tools/install-services.sh
	bash tools/install-oracles.sh
	bash tools/test.sh

# The student edition (solutions stubbed, answers removed, outputs cleared) and the instructor edition (everything),
# built from nbs/ into _editions/ (gitignored).
editions: setup
	$(BIN)/python tools/editions.py --out _editions

# Every chapter executed in learner mode and rendered to self-contained HTML pages (plus an index and the API
# reference) in _handouts/ (gitignored), readable offline. `make handouts FAST=1` runs the chapters in fast mode.
handouts: setup
	$(BIN)/python tools/handouts.py --out _handouts $(if $(FAST),--fast)

# A new user's whole path (fresh clone, fresh venv, the README's two commands, every notebook in learner mode).
walkthrough: setup
	$(BIN)/python -m pytest tests/test_walkthrough.py -m walkthrough -q -p no:cacheprovider

clean-env:
	rm -rf $(VENV)
