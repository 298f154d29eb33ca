# Two entry points do the whole set-up on a fresh machine:
#   make demo   -> creates .venv if missing, installs, serves the Gradio app
#   make test   -> creates .venv if missing, installs (plus Chromium for the browser test), runs pytest
#                  (every test; this is what CI runs)
# While working:
#   make test-fast -> pytest without the tests marked slow (soak, load, kill/resume, benchmark
#                     smoke, fresh interpreters) or browser (Chromium), on one torch thread
#                     (TEST_THREADS): under a minute on 2 cores
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch first and explicitly: a bare "torch" requirement would pull a multi-GB CUDA build on Linux.
# Override e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" for GPU.
TORCH_SPEC ?= torch==2.13.0
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1 && [ "$$(id -u)" != 0 ] && echo sudo)
PYTEST_ARGS ?=

.PHONY: demo test test-fast venv browser lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	# test-only SAM-HQ reference; --no-deps: it declares torchvision, which nothing here needs
	$(PY) -m pip install -q --no-deps 'segment-anything-hq==0.3'
	touch $(STAMP)

venv: $(STAMP)

# Debian's Chromium for the browser test (Playwright drives it through executable_path).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser test"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }

demo: venv
	$(PY) app.py $(ARGS)

test: venv browser
	$(PY) -m pytest $(PYTEST_ARGS)

# One OpenMP thread: on shared cores, torch's spin-waiting threads made the tiny-model passes several
# times slower (measured: 216 s wall / 109 s CPU with 2 threads, 38 s / 34 s with 1).
TEST_THREADS ?= 1
test-fast: venv
	OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

bench: venv
	$(PY) -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache artifacts
