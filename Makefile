# Two commands for a fresh clone: `make run` (the main job) and `make test` (every test).
# Both create .venv and install what they need first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# A CPU build of torch is installed before the project so pip does not pull a multi-GB CUDA build.
# Elsewhere: `make run TORCH=torch` takes your platform's default build.
TORCH  ?= torch==2.13.0

.PHONY: setup run test clean-env

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
	bash tools/test.sh

clean-env:
	rm -rf $(VENV)
