# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck system-deps node-deps otel-proto-fix bench soak render clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(MAKE) --no-print-directory otel-proto-fix
	touch $(STAMP)

# xds-protos ships an old copy of opentelemetry/proto (the Envoy API imports it) that can
# overwrite opentelemetry-proto's files, depending on install order; the OTLP exporter needs
# the real ones. Reinstalling the same version of opentelemetry-proto puts them back.
otel-proto-fix:
	$(BIN)/pip install --quiet --force-reinstall --no-deps \
	  "opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"

run: $(STAMP)
	$(BIN)/ai-gateway run $(if $(CONFIG),-c $(CONFIG),)

lint: $(STAMP)
	$(BIN)/ruff check extproc tests bench docs fuzz
	$(BIN)/ruff format --check extproc tests bench docs fuzz

typecheck: $(STAMP)
	$(BIN)/mypy

# Debian packages the tests and the benchmark run for real: redis-server (shared rate-limit
# state), wrk (load generator). Installed when missing; needs root (CI runs as root).
system-deps:
	@command -v redis-server >/dev/null && command -v wrk >/dev/null || { \
	  echo "installing redis-server and wrk (Debian packages)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server wrk >/dev/null; }

# The official OpenAI Node SDK, a second client of the integration tests (tests/node), from the
# npm registry with the machine's Node.js; its test is skipped where npm is missing.
node-deps:
	@if command -v npm >/dev/null; then \
	  npm ci --prefix tests/node --silent --no-audit --no-fund; \
	else echo "npm not found: the Node SDK test will be skipped"; fi

test: lint typecheck system-deps node-deps
	$(BIN)/pytest -q

render: $(STAMP)
	$(BIN)/ai-gateway render -c envoy/gateway.example.yaml --sidecar-host sidecar -o envoy/envoy.yaml
	$(BIN)/ai-gateway render --kubernetes -c envoy/gateway.example.yaml -o deploy/kubernetes

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

# 10 minutes of 200 clients mixing streams, errors and disconnects (bench/soak.py --help);
# DISCONNECTS=30 makes 30 % of the requests streams their client leaves.
soak: $(STAMP)
	$(BIN)/python -m bench.soak $(if $(DISCONNECTS),--disconnects $(DISCONNECTS),)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
