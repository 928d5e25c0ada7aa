# The README's two commands.  Both build .venv from a lock file: every package at the exact version and
# sha256 the test suite passed with, so a fresh machine installs what was tested.  TORCH=cpu (default) installs
# requirements.lock, whose torch is the CPU wheel (nothing can pull a CUDA build); TORCH=cuda installs
# requirements-cuda.lock, the same torch release in its CUDA build from PyPI with the NVIDIA libraries it names
# (`make test TORCH=cuda`).  The locks change only through `make lock` (both); a changed lock or a switch of
# TORCH rebuilds .venv from scratch, so no package of an older install stays behind.
VENV        := .venv
PY          := $(VENV)/bin/python
TORCH       ?= cpu
TORCH_VERSION := 2.13.0
PIP         := pip==26.3
UV          := uv==0.13.8
ifeq ($(TORCH),cuda)
LOCK        := requirements-cuda.lock
TORCH_PIN   := torch==$(TORCH_VERSION)
TORCH_FROM  := PyPI (CUDA build)
WHEELS      :=
else ifeq ($(TORCH),cpu)
LOCK        := requirements.lock
TORCH_PIN   := torch==$(TORCH_VERSION)+cpu
# Where pip finds the CPU wheel of torch: a local folder when it holds the pinned wheel (this workplace keeps it
# in /opt/wheels), else PyTorch's own CPU wheel index.  The lock's sha256 is the same either way.
TORCH_LINKS ?= /opt/wheels
TORCH_INDEX := https://download.pytorch.org/whl/cpu/torch/
LOCAL_WHEEL := $(wildcard $(TORCH_LINKS)/torch-$(TORCH_VERSION)+cpu-*.whl)
WHEELS      := $(if $(LOCAL_WHEEL),$(TORCH_LINKS),$(TORCH_INDEX))
TORCH_FROM  := $(if $(LOCAL_WHEEL),the local folder $(TORCH_LINKS),PyTorch's CPU wheel index)
else
$(error TORCH=$(TORCH) is not a build we lock; use TORCH=cpu (default) or TORCH=cuda)
endif
STAMP       := $(VENV)/.installed-$(TORCH)
TOOLS       := .venv-tools
LATEST      := .venv-latest
EXTRAS      := --extra test --extra docs --extra ray

.PHONY: demo test test-latest lock bench clean chromium

$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q $(PIP)
	@echo "installing $(LOCK): $(TORCH_PIN) from $(TORCH_FROM)"
	$(PY) -m pip install -q $(if $(WHEELS),--find-links $(WHEELS)) --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/harness run --report-dir .   # refreshes the committed leaderboards/ and plots/ examples
	$(VENV)/bin/harness report runs/minilm_rt-polarity_pretrained --out leaderboards/report   # the HTML report, beside them

test: $(STAMP)
	$(VENV)/bin/lint-imports   # the layers (pyproject.toml [tool.importlinter]; docs/guides/extending.md, Layout)
	$(VENV)/bin/ruff check .   # lint, and below the format ([tool.ruff]): `ruff check --fix . && ruff format .` repairs both
	$(VENV)/bin/ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir .site   # the docs site (mkdocs.yml): a broken link or a missing page fails
	$(MAKE) --no-print-directory chromium
	$(PY) -m pytest -q

# The browser the HTML report's test drives (Playwright's Python API, executable_path): Debian's package, as
# root through apt-get; where it cannot be installed the test skips and says why.
chromium:
	@command -v chromium >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "no chromium installed (needs root and apt-get): the browser test of harness report will skip")

# Regenerate both locks from the pyproject's ranges (newest releases that satisfy them), with hashes: the CPU
# lock with torch's CPU wheel, the CUDA lock with the same release's CUDA build, every other pin shared
# (the CUDA lock starts from the CPU one).  `make lock UPGRADE=` adds what the pyproject newly names and keeps
# every other pin.
UPGRADE ?= --upgrade
COMPILE = $(TOOLS)/bin/uv pip compile pyproject.toml $(EXTRAS) --generate-hashes \
		--python-version 3.11 --python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock"
lock:
	test -x $(TOOLS)/bin/uv || (python3 -m venv $(TOOLS) && $(TOOLS)/bin/pip install -q $(UV))
	echo "torch==$(TORCH_VERSION)+cpu" > $(TOOLS)/torch-cpu.txt
	echo "torch==$(TORCH_VERSION)" > $(TOOLS)/torch-cuda.txt
	$(COMPILE) $(UPGRADE) --find-links $(WHEELS) --override $(TOOLS)/torch-cpu.txt -o requirements.lock
	cp requirements.lock requirements-cuda.lock
	$(COMPILE) --override $(TOOLS)/torch-cuda.txt -o requirements-cuda.lock

# The suite against the newest releases the pyproject allows (torch stays the CPU wheel): shows the
# next breakage before users meet it.  Not part of CI, which must stay reproducible.
test-latest:
	rm -rf $(LATEST)
	python3 -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	echo "$(TORCH_PIN)" > $(LATEST)/constraints.txt
	$(LATEST)/bin/python -m pip install -q $(if $(WHEELS),--find-links $(WHEELS)) -c $(LATEST)/constraints.txt \
		--upgrade --upgrade-strategy eager -e ".[test]"
	$(LATEST)/bin/python -m pip list --format=freeze | grep -iE '^(torch|transformers|lm.eval|datasets|tokenizers|huggingface.hub)=='
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/bench_speedup.py

clean:
	rm -rf $(VENV) $(TOOLS) $(LATEST) runs .site
