# The verbs a newcomer types. Each target sets up what it needs (.venv, dependencies, codegen).
PY      := .venv/bin/python
STAMP   := .venv/.installed
PROTOS  := $(wildcard protos/flowviz/*/v1/*.proto)
GEN     := $(PROTOS:protos/%.proto=%_pb2.py)

.PHONY: run test lint proto migrate seed bench bench-quick clean deploy-check vendor bench-web bench-fairness faults

$(PY):
	python3 -m venv .venv

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,local]'
	touch $@

# Generated code lands next to the shared package: `from flowviz.lots.v1 import lots_pb2`.
$(GEN): %_pb2.py: protos/%.proto $(STAMP)
	$(PY) -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. \
	  --plugin=protoc-gen-mypy=.venv/bin/protoc-gen-mypy --plugin=protoc-gen-mypy_grpc=.venv/bin/protoc-gen-mypy_grpc \
	  --mypy_out=. --mypy_grpc_out=. $<

proto: $(GEN)

run: proto
	$(PY) -m flowviz.cli run

test: proto
	$(PY) -m pytest -q

lint: proto
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

migrate: proto
	$(PY) -m flowviz.migrate

seed: proto
	$(PY) -m flowviz.seed

# Load the whole system on this machine (k6 + wrk) and print a table; see bench/README.md.
bench-quick: proto
	$(PY) bench/run.py --mode quick

bench: proto
	$(PY) bench/run.py --mode full
	$(PY) bench/fairness_bench.py

# The issue-15 fault suite on its own make run (Valkey killed and frozen, a rolling restart of
# every service, PostgreSQL kill -9) under load; a table per phase (~1-2 minutes). See bench/faults.py.
faults: proto
	$(PY) bench/faults.py

# One viewer's 20 concurrent graph traces vs another user's hot trace (~1 minute; issue 15).
bench-fairness: proto
	$(PY) bench/fairness_bench.py

# The web app's third-party JavaScript, at the exact versions of web/vendor/package-lock.json
# (npm ci, install scripts off), copied with each package's licence into web/vendor/.
VENDOR_FILES := cytoscape/dist/cytoscape.esm.min.mjs cytoscape/LICENSE \
	swagger-ui-dist/swagger-ui-bundle.js swagger-ui-dist/swagger-ui.css swagger-ui-dist/LICENSE swagger-ui-dist/NOTICE
vendor:
	@tmp=$$(mktemp -d) && cp web/vendor/package.json web/vendor/package-lock.json $$tmp/ && \
	  (cd $$tmp && npm ci --ignore-scripts --no-audit --no-fund --silent) && \
	  for f in $(VENDOR_FILES); do mkdir -p web/vendor/$$(dirname $$f) && cp $$tmp/node_modules/$$f web/vendor/$$f; done && \
	  rm -rf $$tmp && echo "web/vendor refreshed from package-lock.json"

# Browser timings of the explorer on the 1M generated genealogy (see bench/README.md).
bench-web: proto
	$(PY) bench/web_bench.py

deploy-check: $(STAMP)
	bash deploy/install-tools.sh
	bash deploy/check.sh

clean:
	rm -rf .venv .data .pytest_cache .mypy_cache .ruff_cache
	find flowviz -name '*_pb2*.py*' -delete
