# syntax=docker/dockerfile:1
# flowviz: one image for every process. Pick the process with the command:
#   docker run IMAGE gateway            -> python -m gateway
#   docker run IMAGE services.lots      -> python -m services.lots
#   docker run IMAGE flowviz.tools.migrate    -> python -m flowviz.tools.migrate
# Build from the repo root: docker build -t flowviz:dev .
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder ---
FROM ${PYTHON_IMAGE} AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
RUN python -m venv /opt/venv

# Whole build context (trimmed by .dockerignore: no .venv, tests, caches,
# and no locally generated *_pb2 files - they are regenerated below).
COPY . .

# 1) install the project and its dependencies (grpcio-tools included),
# 2) run the protobuf codegen `make proto` runs (scripts/protoc.py),
# 3) byte-compile the source so a read-only root filesystem costs nothing at start.
RUN pip install --no-cache-dir . \
 && python scripts/protoc.py protos/flowviz/*/v1/*.proto \
 && rm -rf build ./*.egg-info \
 && python -m compileall -q .

# ------------------------------------------------------------------ final ---
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    FLOWVIZ_BIND_HOST=0.0.0.0 \
    FLOWVIZ_LOG_FORMAT=json

# Fixed numeric UID/GID so Kubernetes runAsNonRoot/runAsUser can verify it.
RUN groupadd --system --gid 10001 flowviz \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin flowviz

# Files stay root-owned and read-only for the app user. Code runs from /app
# (PYTHONPATH, with the generated *_pb2 modules); the project copy pip put in
# the venv is shadowed by it.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /src /app

WORKDIR /app
USER 10001:10001

# gateway HTTP, gRPC (health, lots, genealogy, qc), metrics (health, lots, genealogy, qc)
EXPOSE 8000 50050 50051 50052 50053 9150 9151 9152 9153

ENTRYPOINT ["python", "-m"]
CMD ["gateway"]
