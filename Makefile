# The README's two commands. Each sets up .venv itself on a fresh machine, from the lock (requirements.lock).
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
LOCK    := requirements.lock
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup debian-tools demo test bench lock clean

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

test: setup debian-tools
	$(PY) -m pytest

# Debian packages the tests use: chromium (the page tests drive it through Playwright, never a browser Playwright
# downloads) and rclone (`lorakit batch` against a real WebDAV remote on 127.0.0.1). Installed as root, else with
# passwordless sudo; without either, the tests that need them skip, and this says so.
DEBIAN_TOOLS := chromium rclone
APT_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null 2>&1 \
	|| { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 \
	     && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null 2>&1; }
debian-tools:
	@for tool in $(DEBIAN_TOOLS); do \
	  test -x /usr/bin/$$tool || { \
	    if ! command -v apt-get >/dev/null; then false; \
	    elif [ "$$(id -u)" = 0 ]; then $(call APT_INSTALL,$$tool); \
	    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo sh -c '$(call APT_INSTALL,'"$$tool"')'; \
	    else false; fi; } \
	  || echo "warning: /usr/bin/$$tool is missing and could not be installed (needs apt-get as root or sudo:" \
	          "apt-get install $$tool); the tests that need it will skip"; \
	done

bench: setup
	$(PY) benchmarks/train_step.py

# Refresh the lock: resolve pyproject's ranges afresh in a scratch venv, run the whole suite there, and replace
# requirements.lock only if it passes. Then `make test` installs the new lock into .venv.
lock:
	bash tools/lock.sh $(LOCK)

clean:
	rm -rf .venv .venv-lock runs .pytest_cache
