# The verbs a newcomer types. Each target sets up what it needs (.venv, dependencies, codegen).
PY      := .venv/bin/python
STAMP   := .venv/.installed
PROTOS  := $(wildcard protos/flowviz/*/v1/*.proto)
GEN     := $(PROTOS:protos/%.proto=%_pb2.py)

.PHONY: run test lint proto migrate seed bench bench-quick clean deploy-check vendor bench-web buf buf-install bench-fairness faults

$(PY):
	python3 -m venv .venv

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,local]'
	touch $@

# Generated code lands next to the shared package: `from flowviz.lots.v1 import lots_pb2`.
# The one protoc invocation (the Dockerfile runs it too).
$(GEN): %_pb2.py: protos/%.proto scripts/protoc.py $(STAMP)
	$(PY) scripts/protoc.py $<

proto: $(GEN)

run: proto
	$(PY) -m flowviz.tools.cli run

test: proto
	$(PY) -m pytest -q

lint: proto
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

migrate: proto
	$(PY) -m flowviz.tools.migrate

seed: proto
	$(PY) -m flowviz.tools.seed

# Load the whole system on this machine (k6 + wrk) and print a table; see bench/README.md.
bench-quick: proto
	$(PY) bench/run.py --mode quick

bench: proto
	$(PY) bench/run.py --mode full
	$(PY) bench/fairness_bench.py
	$(PY) bench/side_by_side.py

# flowviz and the monolith it replaced (re-created in bench/monolith/, its own venv there from
# bench/monolith/requirements.txt, built by the script), the same wrk command on the hot seed
# trace, one after the other, twice; the ratio printed. wrk: apt-get install wrk (the script
# does it when missing and root).
.PHONY: bench-monolith
bench-monolith: proto
	$(PY) bench/side_by_side.py

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

# buf (npm @bufbuild/buf at the version of scripts/buf/package-lock.json; npm ci, install scripts
# off: the binary comes in its platform package) lints the protos (buf.yaml) and refuses a change
# that breaks the protos of BUF_AGAINST, the commit before this one unless told.
BUF         := scripts/buf/node_modules/.bin/buf
BUF_AGAINST ?= HEAD~1
$(BUF): scripts/buf/package-lock.json
	cd scripts/buf && npm ci --ignore-scripts --no-audit --no-fund --silent
	touch $@

buf-install: $(BUF)

buf: $(BUF)
	$(BUF) lint
	@if git rev-parse -q --verify '$(BUF_AGAINST)^{commit}' >/dev/null; then \
	  echo "$(BUF) breaking --against .git#ref=$(BUF_AGAINST),subdir=protos"; \
	  $(BUF) breaking --against '.git#ref=$(BUF_AGAINST),subdir=protos'; \
	else echo "buf breaking: no commit $(BUF_AGAINST) to compare with (first commit or shallow clone)"; fi

deploy-check: $(STAMP)
	bash deploy/install-tools.sh
	bash deploy/check.sh

clean:
	rm -rf .venv .data .pytest_cache .mypy_cache .ruff_cache scripts/buf/node_modules
	find flowviz -name '*_pb2*.py*' -delete
