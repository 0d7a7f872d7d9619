# umqtt_full developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.stamp
PYTHON  ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)

PORT    ?= 1883
HOST    ?= 127.0.0.1
CONFIG  ?=
# Word-adjusted: 128K of 32-bit-board-sized objects on this 64-bit host.
HEAP    ?= 128wK
BOARD   ?=
DEVICE  ?=
FIRMWARE ?=
DRY_RUN ?=
MOUNT   ?=
PYTEST_ARGS ?=

.PHONY: help setup mosquitto js run test soak bench mpy deploy flash device-test clean distclean

help:
	@echo "make setup                      venv + pinned tools + mosquitto + node/chromium (idempotent)"
	@echo "make run [PORT= HOST= CONFIG=]  broker on the MicroPython Unix port"
	@echo "make test [PYTEST_ARGS=]        unit + host + device (virtual board) tests"
	@echo "make soak [SOAK_MESSAGES= SOAK_ARGS=]  broker soak: 1,000,000 messages, clients coming and going, 128wK heap"
	@echo "make bench                      bench/run.py"
	@echo "make mpy BOARD=esp32|rp2040     cross-compile to build/BOARD/lib"
	@echo "make deploy BOARD= DEVICE=      copy changed files to a board, then reset it (main.py runs)"
	@echo "make flash BOARD= DEVICE= FIRMWARE= [DRY_RUN=1] [MOUNT=]"
	@echo "make device-test [DEVICE= BOARD=] tests/device on a real board (virtual if unset)"
	@echo "make clean | distclean"

setup: $(STAMP) mosquitto js

# Re-run pip only when the pins change; a present venv (even one made by
# hand) is reused.
$(STAMP): requirements-dev.txt
	@if [ ! -x $(BIN)/python ]; then \
	  test -n "$(PYTHON)" || { echo "setup: need python3.11 or python3 on PATH" >&2; exit 1; }; \
	  echo "setup: creating $(VENV) with $(PYTHON)"; \
	  $(PYTHON) -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	@touch $@

# Tests start their own mosquitto processes; only the binary is needed.
mosquitto:
	@if [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "setup: mosquitto is missing and apt-get is not available; install mosquitto (2.x) by hand" >&2; exit 1; fi; \
	SUDO=; if [ "$$(id -u)" != 0 ]; then \
	  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else \
	    echo "setup: mosquitto is missing; need root or sudo to apt-get install mosquitto mosquitto-clients" >&2; exit 1; fi; fi; \
	echo "setup: installing mosquitto mosquitto-clients (apt-get)"; \
	apt_install() { $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mosquitto mosquitto-clients; }; \
	apt_install || { $$SUDO apt-get update -q && apt_install; } || { \
	  echo "setup: could not apt-get install mosquitto; install it by hand (Debian: mosquitto mosquitto-clients)" >&2; exit 1; }

# tests/js (MQTT.js, playwright-core; pinned by package-lock.json) and what it
# drives: node, npm and Debian's chromium for tests/host/test_ws.py. Missing
# and not installable only warns: those tests then skip and say why.
js:
	@SUDO=; if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi; \
	need=; command -v node >/dev/null 2>&1 || need="nodejs"; command -v npm >/dev/null 2>&1 || need="$$need npm"; \
	[ -x /usr/bin/chromium ] || need="$$need chromium"; \
	if [ -n "$$need" ]; then \
	  apt_install() { $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$need; }; \
	  echo "setup: installing$$need (apt-get)"; \
	  command -v apt-get >/dev/null 2>&1 && { apt_install || { $$SUDO apt-get update -q && apt_install; }; } || \
	    echo "setup: WARNING could not install$$need (Debian: nodejs npm chromium); test_ws.py will skip" >&2; \
	fi; \
	if command -v npm >/dev/null 2>&1 && { [ ! -f tests/js/node_modules/.package-lock.json ] || \
	    [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; }; then \
	  echo "setup: npm ci in tests/js"; \
	  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error) || \
	    echo "setup: WARNING npm ci in tests/js failed; test_ws.py will try again or skip" >&2; \
	fi

# .frozen is where the Unix port keeps asyncio; MICROPYPATH replaces the
# default sys.path, so it must be listed.
run: setup
	MICROPYPATH=.frozen:firmware/lib $(BIN)/micropython -X heapsize=$(HEAP) -m umqtt_full.broker \
	  --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

# pytest's own exit status is the target's: no tests collected (5) fails too.
test: setup
	$(BIN)/pytest $(PYTEST_ARGS)

# Long broker soak (tests/soak/soak.py); a short one runs in `make test`.
# SOAK_ARGS: e.g. "--lib build/unix/lib --heap 128K" (the .mpy build, after make mpy BOARD=unix).
SOAK_MESSAGES ?= 1000000
SOAK_ARGS ?=
soak: setup
	$(BIN)/python tests/soak/soak.py --messages $(SOAK_MESSAGES) $(SOAK_ARGS)

bench: setup
	@if [ ! -f bench/run.py ]; then echo "bench: bench/run.py does not exist yet" >&2; exit 1; fi
	$(BIN)/python bench/run.py

define need
	@test -n "$($(1))" || { echo "$@: set $(1)=$(2)" >&2; exit 2; }
endef

mpy: setup
	$(call need,BOARD,esp32|rp2040|unix)
	$(BIN)/python tools/build_mpy.py $(BOARD)

deploy: setup
	$(call need,BOARD,esp32|rp2040)
	$(call need,DEVICE,/dev/ttyUSB0)
	$(BIN)/python tools/deploy.py $(BOARD) $(DEVICE)

flash: setup
	$(call need,BOARD,esp32|rp2040)
	$(call need,FIRMWARE,path/to/firmware.bin|.uf2)
	$(BIN)/python tools/flash.py $(BOARD) --firmware $(FIRMWARE) \
	  $(if $(DEVICE),--port $(DEVICE)) $(if $(MOUNT),--mount $(MOUNT)) $(if $(DRY_RUN),--dry-run)

# A real board (DEVICE=) gets the .mpy build of its own BOARD; without DEVICE
# the virtual board runs the unix (x64) build.
device-test: setup
	@if [ -n "$(DEVICE)" ] && [ -z "$(BOARD)" ]; then \
	  echo "device-test: set BOARD=esp32|rp2040 for DEVICE=$(DEVICE) (the .mpy build must match the chip)" >&2; exit 2; fi
	DEVICE=$(DEVICE) BOARD=$(or $(BOARD),unix) $(BIN)/pytest tests/device $(PYTEST_ARGS)

clean:
	rm -rf build .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
