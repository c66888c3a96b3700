# The README's two commands. Each sets up .venv itself on a fresh machine, from the lock (requirements.lock).
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
LOCK    := requirements.lock
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup chromium demo test bench lock clean

setup: $(STAMP)

# Every package at the exact version in the lock: a new release on PyPI cannot break a fresh install.
# torch comes first and pinned (the lock says 2.13.0): an unpinned torch pulls gigabytes of CUDA wheels.
# No build isolation, so lorakit itself is built with the locked setuptools too.
$(STAMP): pyproject.toml $(LOCK) Makefile
	test -x $(PY) || python3 -m venv .venv
	$(PIP) install -q -c $(LOCK) pip setuptools
	$(PIP) install -q -c $(LOCK) torch
	$(PIP) install -q -c $(LOCK) --no-build-isolation -e '.[test]'
	$(PIP) check
	touch $(STAMP)

demo: setup
	.venv/bin/lorakit demo

test: setup chromium
	$(PY) -m pytest

# The page tests (tests/browser.py) drive Debian's chromium through Playwright, never a browser Playwright
# downloads. Installed as root, else with passwordless sudo; without either they skip, and this says so.
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 \
	|| { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 \
	     && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }
chromium:
	@test -x /usr/bin/chromium || { \
	  if ! command -v apt-get >/dev/null; then false; \
	  elif [ "$$(id -u)" = 0 ]; then $(APT_CHROMIUM); \
	  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo sh -c '$(APT_CHROMIUM)'; \
	  else false; fi; } \
	|| echo "warning: /usr/bin/chromium is missing and could not be installed (needs apt-get as root or" \
	        "sudo: apt-get install chromium); the browser tests will skip"

bench: setup
	$(PY) benchmarks/train_step.py

# Refresh the lock: resolve pyproject's ranges afresh in a scratch venv, run the whole suite there, and replace
# requirements.lock only if it passes. Then `make test` installs the new lock into .venv.
lock:
	bash tools/lock.sh $(LOCK)

clean:
	rm -rf .venv .venv-lock runs .pytest_cache
