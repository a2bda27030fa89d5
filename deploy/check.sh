#!/usr/bin/env bash
# Validate the container and deployment files (no Docker engine or cluster needed):
#   1. hadolint on the Dockerfile
#   2. docker-compose config on deploy/docker-compose.yml (and `docker compose` if present)
#   3. kustomize build of base and every overlay, validated with
#      kubernetes-validate --strict against each version in K8S_VERSIONS
# Tools are taken from .venv/bin first (pinned by deploy/install-tools.sh), then PATH.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.33.0}"
COMPOSE_FILE="deploy/docker-compose.yml"
KUSTOMIZE_DIRS=(deploy/k8s/base deploy/k8s/overlays/*/)

find_tool() {
    if [ -x "$ROOT/.venv/bin/$1" ]; then
        echo "$ROOT/.venv/bin/$1"
    else
        command -v "$1" 2>/dev/null || true
    fi
}

missing=()
HADOLINT="$(find_tool hadolint)";                 [ -n "$HADOLINT" ] || missing+=(hadolint)
COMPOSE="$(find_tool docker-compose)"
KUBECTL="$(find_tool kubectl)"
KUSTOMIZE="$(find_tool kustomize)"
KVALIDATE="$(find_tool kubernetes-validate)";     [ -n "$KVALIDATE" ] || missing+=(kubernetes-validate)

DOCKER_COMPOSE_PLUGIN=0
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    DOCKER_COMPOSE_PLUGIN=1
fi
if [ -z "$COMPOSE" ] && [ "$DOCKER_COMPOSE_PLUGIN" -eq 0 ]; then
    missing+=("docker-compose (or the docker compose plugin)")
fi
if [ -z "$KUBECTL" ] && [ -z "$KUSTOMIZE" ]; then
    missing+=("kubectl (or kustomize)")
fi

if [ "${#missing[@]}" -gt 0 ]; then
    for tool in "${missing[@]}"; do
        echo "check.sh: missing tool: $tool" >&2
    done
    echo "check.sh: run 'bash deploy/install-tools.sh' to install the pinned tools" >&2
    exit 2
fi

build_kustomize() {
    if [ -n "$KUBECTL" ]; then
        "$KUBECTL" kustomize "$1"
    else
        "$KUSTOMIZE" build "$1"
    fi
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== hadolint Dockerfile"
"$HADOLINT" Dockerfile
echo "ok"

echo "== compose config ($COMPOSE_FILE)"
# The file has no default secrets: give it throw-away ones to validate.
export POSTGRES_PASSWORD=check-only VALKEY_PASSWORD=check-only FLOWVIZ_CACHE_SECRET=check-only \
    FLOWVIZ_TOKEN_PUBLIC_KEY=check-only FLOWVIZ_SERVICE_PUBLIC_KEYS=check-only FLOWVIZ_TOKEN_PRIVATE_KEY=check-only \
    FLOWVIZ_SERVICE_KEY_GATEWAY=check-only FLOWVIZ_SERVICE_KEY_LOTS=check-only FLOWVIZ_SERVICE_KEY_GENEALOGY=check-only \
    FLOWVIZ_SERVICE_KEY_QC=check-only FLOWVIZ_SERVICE_KEY_HEALTH=check-only FLOWVIZ_SERVICE_KEY_EVENTS=check-only \
    FLOWVIZ_OWNER_DB_PASSWORD=check-only FLOWVIZ_LOTS_DB_PASSWORD=check-only FLOWVIZ_GENEALOGY_DB_PASSWORD=check-only \
    FLOWVIZ_QC_DB_PASSWORD=check-only FLOWVIZ_HEALTH_DB_PASSWORD=check-only FLOWVIZ_EVENTS_DB_PASSWORD=check-only
if [ -n "$COMPOSE" ]; then
    "$COMPOSE" -f "$COMPOSE_FILE" config -q
    echo "ok (docker-compose)"
fi
if [ "$DOCKER_COMPOSE_PLUGIN" -eq 1 ]; then
    docker compose -f "$COMPOSE_FILE" config -q
    echo "ok (docker compose)"
fi

version_args=()
for v in $K8S_VERSIONS; do
    version_args+=(-k "$v")
done

for dir in "${KUSTOMIZE_DIRS[@]}"; do
    dir="${dir%/}"
    out="$tmp/$(echo "$dir" | tr '/' '_').yaml"
    echo "== kustomize $dir -> kubernetes-validate --strict (k8s $K8S_VERSIONS)"
    build_kustomize "$dir" > "$out"
    "$KVALIDATE" --strict --quiet "${version_args[@]}" "$out"
    echo "ok ($(grep -c '^kind:' "$out") resources)"
done

echo "check.sh: all deployment checks passed"
