# The README's two commands.  Both build .venv from requirements.lock: every package at the exact version
# and sha256 the test suite passed with, torch's CPU wheel among them, so a fresh machine installs what was
# tested and nothing can pull a CUDA build.  The lock changes only through `make lock`; a changed lock
# rebuilds .venv from scratch, so no package of an older lock stays behind.
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
LOCK        := requirements.lock
PIP         := pip==26.3
UV          := uv==0.13.8
TORCH       := torch==2.13.0+cpu
# Where pip and uv find the CPU wheel of torch: this workplace keeps it in /opt/wheels; elsewhere use
# `make TORCH_LINKS=https://download.pytorch.org/whl/cpu/torch/`.
TORCH_LINKS ?= /opt/wheels
TOOLS       := .venv-tools
LATEST      := .venv-latest

.PHONY: demo test test-latest lock bench clean

$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(PIP)
	$(PY) -m pip install -q --find-links $(TORCH_LINKS) --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/harness run --report-dir .   # refreshes the committed leaderboards/ and plots/ examples

test: $(STAMP)
	$(VENV)/bin/lint-imports   # the layers (pyproject.toml [tool.importlinter]; README.md, Layout)
	$(VENV)/bin/ruff check .   # lint, and below the format ([tool.ruff]): `ruff check --fix . && ruff format .` repairs both
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

# Regenerate the lock from the pyproject's ranges (newest releases that satisfy them), with hashes.
# `make lock UPGRADE=` adds what the pyproject newly names and keeps every other pin.
UPGRADE ?= --upgrade
lock:
	test -x $(TOOLS)/bin/uv || (python3 -m venv $(TOOLS) && $(TOOLS)/bin/pip install -q $(UV))
	echo "$(TORCH)" > $(TOOLS)/torch-override.txt
	$(TOOLS)/bin/uv pip compile pyproject.toml --extra test --generate-hashes $(UPGRADE) \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
		--find-links $(TORCH_LINKS) --override $(TOOLS)/torch-override.txt \
		--custom-compile-command "make lock" -o $(LOCK)

# The suite against the newest releases the pyproject allows (torch stays the CPU wheel): shows the
# next breakage before users meet it.  Not part of CI, which must stay reproducible.
test-latest:
	rm -rf $(LATEST)
	python3 -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	echo "$(TORCH)" > $(LATEST)/constraints.txt
	$(LATEST)/bin/python -m pip install -q --find-links $(TORCH_LINKS) -c $(LATEST)/constraints.txt \
		--upgrade --upgrade-strategy eager -e ".[test]"
	$(LATEST)/bin/python -m pip list --format=freeze | grep -iE '^(torch|transformers|lm.eval|datasets|tokenizers|huggingface.hub)=='
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/bench_speedup.py

clean:
	rm -rf $(VENV) $(TOOLS) $(LATEST) runs
