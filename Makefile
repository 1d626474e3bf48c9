# Two entry points: `make demo` and `make test`. Each installs what it needs itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] && echo "" || (command -v sudo >/dev/null && echo sudo))

.PHONY: demo test lint typecheck pytest system-deps web-assets clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Mosquitto (broker), npm (fetches the map library) and Chromium (browser tests) come
# from apt when missing.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ "$(NEED_BROWSER)" = 1 ]; then command -v chromium >/dev/null || missing="$$missing chromium"; fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; then \
	    echo "installing$$missing through apt"; \
	    $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "error: missing$$missing and no root or sudo to install it: apt-get install$$missing" >&2; exit 1; \
	  fi; \
	fi
	@# Debian starts a system mosquitto on 1883 after install; the project runs its own.
	@if command -v systemctl >/dev/null && systemctl is-active --quiet mosquitto 2>/dev/null; then $(SUDO) systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi

web-assets: $(STAMP)
	$(BIN)/python -m api.web_assets

demo: $(STAMP)
	$(MAKE) --no-print-directory system-deps
	$(MAKE) --no-print-directory web-assets
	$(BIN)/fleet demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Two workers: most tests wait on processes, sockets and timeouts more than on CPU. The
# slow fault tests share one worker (tests/conftest.py), so they never overlap.
PYTEST_WORKERS ?= 2
pytest: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup

test: $(STAMP)
	$(MAKE) --no-print-directory system-deps NEED_BROWSER=1
	$(MAKE) --no-print-directory web-assets
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory typecheck
	$(MAKE) --no-print-directory pytest

clean:
	rm -rf $(VENV) .fleet-data .mypy_cache .ruff_cache .pytest_cache
