# The README's two commands. Each sets up .venv itself on a fresh machine, from the lock (requirements.lock).
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
LOCK    := requirements.lock
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench lock clean

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

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/train_step.py

# Refresh the lock: resolve pyproject's ranges afresh in a scratch venv, run the whole suite there, and replace
# requirements.lock only if it passes. Then `make test` installs the new lock into .venv.
lock:
	bash tools/lock.sh $(LOCK)

clean:
	rm -rf .venv .venv-lock runs .pytest_cache
