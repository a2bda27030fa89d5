"""Deployment files (Dockerfile, compose, Kubernetes) agree with the service contract.

Standalone: ``.venv/bin/python -m pytest tests/deploy -q``. Needs the tools from
``bash deploy/install-tools.sh`` (``.ci/run`` installs them): a test whose tool is missing is
skipped naming it and that command, or fails under CI (tests/tools.py).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests import tools

# Mirrors the code's defaults (ports, health service names, drain, UID).
# TODO(lead): derive from the code's config module once it exists.
CONTRACT: dict[str, Any] = {
    "grpc_services": {
        "health": {
            "module": "services.health",
            "port": 50050,
            "port_env": "FLOWVIZ_HEALTH_PORT",
            "addr_env": "FLOWVIZ_HEALTH_ADDR",
            "metrics_port": 9150,
            "health_service": "",
        },
        "lots": {
            "module": "services.lots",
            "port": 50051,
            "port_env": "FLOWVIZ_LOTS_PORT",
            "addr_env": "FLOWVIZ_LOTS_ADDR",
            "metrics_port": 9151,
            "health_service": "flowviz.lots.v1.LotsService",
        },
        "genealogy": {
            "module": "services.genealogy",
            "port": 50052,
            "port_env": "FLOWVIZ_GENEALOGY_PORT",
            "addr_env": "FLOWVIZ_GENEALOGY_ADDR",
            "metrics_port": 9152,
            "health_service": "flowviz.genealogy.v1.GenealogyService",
        },
        "qc": {
            "module": "services.qc",
            "port": 50053,
            "port_env": "FLOWVIZ_QC_PORT",
            "addr_env": "FLOWVIZ_QC_ADDR",
            "metrics_port": 9153,
            "health_service": "flowviz.qc.v1.QcService",
        },
        "events": {
            "module": "services.events",
            "port": 50054,
            "port_env": "FLOWVIZ_EVENTS_PORT",
            "addr_env": "FLOWVIZ_EVENTS_ADDR",
            "metrics_port": 9155,
            "health_service": "flowviz.events.v1.EventsService",
        },
    },
    "gateway": {
        "name": "gateway",
        "module": "gateway",
        "port": 8000,
        "port_env": "FLOWVIZ_GATEWAY_PORT",
        "metrics_port": 9154,
        "health_path": "/api/health",
    },
    "migrate_module": "flowviz.tools.migrate",
    "seed_module": "flowviz.tools.seed",
    "drain_seconds": 10,  # FLOWVIZ_DRAIN_SECONDS default
    "uid": 10001,
    "secret_keys": ["DATABASE_URL", "VALKEY_URL"],
    # Issue 19: the cache's HMAC key for the services (not the gateway), each process's own
    # service key from a Secret of its own, the user-token private key for lots alone.
    "service_secret_keys": ["FLOWVIZ_CACHE_SECRET"],
    "key_secrets": {
        "FLOWVIZ_SERVICE_KEY": "flowviz-service-key-{name}",
        "FLOWVIZ_TOKEN_PRIVATE_KEY": "flowviz-token-key",
    },
    "hpa": ["gateway", "genealogy"],
}

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"
OVERLAYS = ["dev", "production"]
GRPC = CONTRACT["grpc_services"]
GW = CONTRACT["gateway"]
ALL_APPS = [*GRPC, GW["name"]]
INSTALL_HINT = "run `bash deploy/install-tools.sh` to install the pinned deploy tools (.ci/run does)"
# What deploy/check.sh runs (it takes the same alternatives).
CHECK_TOOLS = (
    "hadolint",
    ("docker-compose", "docker compose"),
    ("kubectl", "kustomize"),
    "kubernetes-validate",
)


# --------------------------------------------------------------- helpers ----
def _yaml():
    return tools.require_module("yaml", INSTALL_HINT)


@functools.cache
def _render(overlay: str) -> tuple[dict, ...]:
    path = ROOT / "deploy" / "k8s" / "overlays" / overlay
    tools.require(("kubectl", "kustomize"), how=INSTALL_HINT)
    kubectl, kustomize = tools.find("kubectl"), tools.find("kustomize")
    cmd = [kubectl, "kustomize", str(path)] if kubectl else [str(kustomize), "build", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr}"
    return tuple(d for d in _yaml().safe_load_all(proc.stdout) if d)


def _find(docs, kind: str, name: str) -> dict:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"{kind}/{name} not found in rendered manifests")


def _config(docs) -> dict:
    maps = [
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("flowviz-config")
    ]
    assert len(maps) == 1, "expected exactly one flowviz-config ConfigMap"
    return maps[0]["data"]


def _container(deploy: dict) -> dict:
    containers = deploy["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deploy['metadata']['name']}: expected one container"
    return containers[0]


def _port_number(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    raise AssertionError(f"named port {port!r} not declared on container {container['name']}")


def _pod_templates(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d, d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            yield d, d["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def _compose() -> dict:
    return _yaml().safe_load(COMPOSE_FILE.read_text())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------- (a) check.sh green ---
def test_check_script_passes():
    tools.require(*CHECK_TOOLS, how=INSTALL_HINT)
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy" / "check.sh")], capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    if "missing tool" in out:
        pytest.fail(f"deploy/check.sh is missing tools ({INSTALL_HINT}):\n{out}")
    assert proc.returncode == 0, f"deploy/check.sh failed:\n{out}"
    assert "all deployment checks passed" in proc.stdout


# --------------------------------------------------- (b) Kubernetes output ---
@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", list(GRPC))
def test_grpc_deployment_probes_match_contract(overlay, name):
    want = GRPC[name]
    docs = _render(overlay)
    deploy = _find(docs, "Deployment", name)
    c = _container(deploy)
    assert c["args"] == [want["module"]]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["grpc"] == want["port"]
    assert ports["metrics"] == want["metrics_port"]
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert env.get("FLOWVIZ_METRICS_PORT") == str(want["metrics_port"])
    assert _config(docs)[want["port_env"]] == str(want["port"])

    grpc_probes = 0
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = c.get(kind)
        assert probe, f"{name}: {kind} missing"
        if "grpc" in probe:
            grpc_probes += 1
            assert probe["grpc"]["port"] == want["port"], f"{name} {kind} port"
            assert probe["grpc"].get("service", "") == want["health_service"], f"{name} {kind} service"
        else:  # a non-gRPC liveness must still target the gRPC port
            assert "tcpSocket" in probe, f"{name}: {kind} must be grpc or tcpSocket"
            assert _port_number(c, probe["tcpSocket"]["port"]) == want["port"]
    assert "grpc" in c["readinessProbe"], f"{name}: readiness must be a native gRPC probe"
    assert grpc_probes >= 2

    annotations = deploy["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(want["metrics_port"])
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", list(GRPC))
def test_services_and_headless_services(overlay, name):
    want = GRPC[name]
    docs = _render(overlay)
    pod_labels = _find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]

    headless = _find(docs, "Service", f"{name}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert [p["port"] for p in headless["spec"]["ports"]] == [want["port"]]
    assert not headless["spec"].get("publishNotReadyAddresses", False)

    svc = _find(docs, "Service", name)
    assert svc["spec"].get("clusterIP") != "None"
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    assert ports == {"grpc": want["port"], "metrics": want["metrics_port"]}

    for s in (svc, headless):
        assert s["spec"]["selector"].items() <= pod_labels.items(), f"{s['metadata']['name']} selects no pod"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_clients_use_headless_dns_targets(overlay):
    data = _config(_render(overlay))
    assert data["FLOWVIZ_BIND_HOST"] == "0.0.0.0"
    for name, want in GRPC.items():
        addr = data[want["addr_env"]]
        assert re.fullmatch(
            rf"dns:///{name}-headless(\.[a-z0-9-]+\.svc\.cluster\.local)?:{want['port']}", addr
        ), f"{want['addr_env']}={addr}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_probes_and_service(overlay):
    docs = _render(overlay)
    deploy = _find(docs, "Deployment", GW["name"])
    c = _container(deploy)
    assert c["args"] == [GW["module"]]
    ready = c["readinessProbe"]["httpGet"]
    assert ready["path"] == GW["health_path"]
    assert _port_number(c, ready["port"]) == GW["port"]
    assert "tcpSocket" in c["livenessProbe"], "gateway liveness should be cheap (tcpSocket)"
    assert _port_number(c, c["livenessProbe"]["tcpSocket"]["port"]) == GW["port"]
    assert _config(docs)[GW["port_env"]] == str(GW["port"])
    svc = _find(docs, "Service", GW["name"])
    # Only the API port is in the Service an ingress routes to; metrics are scraped from the pod.
    assert [p["port"] for p in svc["spec"]["ports"]] == [GW["port"]]
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["metrics"] == GW["metrics_port"]
    assert {e["name"]: e.get("value") for e in c["env"]}["FLOWVIZ_METRICS_PORT"] == str(GW["metrics_port"])
    assert deploy["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(
        GW["metrics_port"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_is_hardened(overlay):
    checked = 0
    for obj, pod in _pod_templates(_render(overlay)):
        pod_sc = pod.get("securityContext", {})
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
            if c["image"].split("/")[-1].startswith("flowviz"):
                assert sc.get("runAsUser", pod_sc.get("runAsUser")) == CONTRACT["uid"], where
                assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])), f"{where}: /tmp"
            checked += 1
    assert checked >= len(ALL_APPS) + 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_drain(overlay):
    docs = _render(overlay)
    drain = int(_config(docs).get("FLOWVIZ_DRAIN_SECONDS", CONTRACT["drain_seconds"]))
    assert drain == CONTRACT["drain_seconds"]
    for name in ALL_APPS:
        deploy = _find(docs, "Deployment", name)
        pod = deploy["spec"]["template"]["spec"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        pre_stop = _container(deploy).get("lifecycle", {}).get("preStop", {})
        cmd = pre_stop.get("exec", {}).get("command", [])
        sleep = int(cmd[1]) if cmd[:1] == ["sleep"] else int(pre_stop.get("sleep", {}).get("seconds", 0))
        assert sleep > 0, f"{name}: expected a short preStop sleep"
        assert grace > drain + sleep, f"{name}: grace {grace}s <= preStop {sleep}s + drain {drain}s"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_from_secret_refs(overlay):
    docs = _render(overlay)
    secret_names = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    for name in ALL_APPS:
        c = _container(_find(docs, "Deployment", name))
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in c.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        # The gateway has no pool and no cache: none of their secrets (issue 19); keys below.
        shared = [] if name == GW["name"] else [*CONTRACT["secret_keys"], *CONTRACT["service_secret_keys"]]
        key_refs = {"FLOWVIZ_SERVICE_KEY"} | ({"FLOWVIZ_TOKEN_PRIVATE_KEY"} if name == "lots" else set())
        assert set(refs) == set(shared) | key_refs, f"{name}: secrets {sorted(refs)}"
        for key in shared:
            assert refs[key]["key"] == key
            # Each service's DATABASE_URL is its own role's, in a Secret of its own.
            want = f"flowviz-db-{name}" if key == "DATABASE_URL" else "flowviz-secrets"
            assert refs[key]["name"].startswith(want), (name, key, refs[key]["name"])
            if overlay == "dev":  # generated in-overlay, hash-suffixed
                assert refs[key]["name"] in secret_names
        # Keys: its own service key; the user-token private key in lots only.
        own = {"FLOWVIZ_SERVICE_KEY"} | ({"FLOWVIZ_TOKEN_PRIVATE_KEY"} if name == "lots" else set())
        assert {k for k in refs if k in CONTRACT["key_secrets"]} == own, name
        for key in own:
            assert refs[key]["name"].startswith(CONTRACT["key_secrets"][key].format(name=name)), (name, key)
            if overlay == "dev":
                assert refs[key]["name"] in secret_names
        public = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
        assert any(n.startswith("flowviz-public-keys") for n in public), f"{name}: no public keys"
        plain = {e["name"] for e in c.get("env", []) if "value" in e}
        assert not plain & {*shared, *CONTRACT["key_secrets"]}, f"{name}: secret in plain env"


def test_production_contains_no_secret_values():
    docs = _render("production")
    for d in docs:
        if d["kind"] == "Secret":
            assert not d.get("data") and not d.get("stringData"), f"Secret {d['metadata']['name']} has values"
    for d in docs:
        if d["kind"] == "ConfigMap":
            assert not set(d.get("data", {})) & set(CONTRACT["secret_keys"])
    base = (ROOT / "deploy" / "k8s" / "base").rglob("*.yaml")
    for f in base:
        for d in _yaml().safe_load_all(f.read_text()):
            assert not (d and d.get("kind") == "Secret"), f"{f}: base must not define a Secret"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdbs_hpas_and_migrate_job(overlay):
    docs = _render(overlay)
    for name in ALL_APPS:
        pdb = _find(docs, "PodDisruptionBudget", name)
        labels = _find(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        c = _container(_find(docs, "Deployment", name))
        assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
    hpas = {d["metadata"]["name"]: d for d in docs if d["kind"] == "HorizontalPodAutoscaler"}
    if overlay == "production":
        assert set(hpas) == set(CONTRACT["hpa"])
        for h in hpas.values():
            assert h["apiVersion"] == "autoscaling/v2"
            assert h["spec"]["maxReplicas"] > h["spec"]["minReplicas"] >= 2
    job = _find(docs, "Job", "migrate")["spec"]["template"]["spec"]
    steps = [c["args"] for c in job.get("initContainers", []) + job["containers"]]
    assert steps[0] == [CONTRACT["migrate_module"]]


def test_production_objects_carry_apply_phase():
    """deploy/README.md applies production in order with -l flowviz/apply-phase=..."""
    phases: dict[str, set[str]] = {}
    for d in _render("production"):
        phase = d["metadata"].get("labels", {}).get("flowviz/apply-phase")
        assert phase in ("migrate", "services", "gateway"), f"{d['kind']}/{d['metadata']['name']}: {phase}"
        phases.setdefault(phase, set()).add(f"{d['kind']}/{d['metadata']['name']}")
    assert {"Job/migrate", "ServiceAccount/flowviz"} <= phases["migrate"]
    assert any(n.startswith("ConfigMap/flowviz-config") for n in phases["migrate"])
    assert {f"Deployment/{n}" for n in GRPC} <= phases["services"]
    assert f"Deployment/{GW['name']}" in phases["gateway"]


# ------------------------------------------------------------ (c) compose ---
def test_compose_ports_and_health_checks():
    svcs = _compose()["services"]
    assert "127.0.0.1:5433:5432" in [str(p) for p in svcs["postgres"]["ports"]]
    assert svcs["postgres"]["image"].startswith("postgres:17")
    assert svcs["valkey"]["image"].startswith("valkey/valkey:8")
    for data in ("postgres", "valkey"):
        assert "healthcheck" in svcs[data]

    migrate_cmd = " ".join(svcs["migrate"].get("entrypoint", []) + svcs["migrate"].get("command", []))
    assert f"python -m {CONTRACT['migrate_module']}" in migrate_cmd
    assert f"python -m {CONTRACT['seed_module']}" in migrate_cmd

    for name, want in GRPC.items():
        s = svcs[name]
        env = s["environment"]
        assert s["command"] == [want["module"]]
        assert env[want["port_env"]] == str(want["port"])
        assert env["FLOWVIZ_METRICS_PORT"] == str(want["metrics_port"])
        assert env["FLOWVIZ_BIND_HOST"] == "0.0.0.0"
        for other, o in GRPC.items():
            assert env[o["addr_env"]] == f"{other}:{o['port']}"
        probe = " ".join(s["healthcheck"]["test"])
        assert f"127.0.0.1:{want['port']}" in probe
        assert f"service='{want['health_service']}'" in probe
        assert s["user"] == f"{CONTRACT['uid']}:{CONTRACT['uid']}"
        assert s["read_only"] is True
    for name in ("lots", "genealogy", "qc", "events"):
        assert svcs[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"

    gw = svcs[GW["name"]]
    assert gw["command"] == [GW["module"]]
    assert f"127.0.0.1:{GW['port']}:{GW['port']}" in [str(p) for p in gw["ports"]]
    assert gw["environment"][GW["port_env"]] == str(GW["port"])
    assert f"127.0.0.1:{GW['port']}{GW['health_path']}" in " ".join(gw["healthcheck"]["test"])

    for name in ALL_APPS:
        grace = svcs[name]["stop_grace_period"]
        assert int(grace.rstrip("s")) > CONTRACT["drain_seconds"]


def _python_c(test: list[str]) -> str:
    assert test[:3] == ["CMD", "python", "-c"], test
    return test[3]


@pytest.mark.parametrize("name", list(GRPC))
def test_compose_grpc_healthcheck_one_liner_works(name):
    """Run the compose healthcheck code against a real gRPC health server on loopback."""
    try:
        from concurrent import futures

        import grpc
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    except ImportError as exc:
        pytest.fail(
            f"grpcio / grpcio-health-checking not installed ({exc}): install the project (pip install .[dev])"
        )
    want = GRPC[name]
    code = _python_c(_compose()["services"][name]["healthcheck"]["test"])
    port = _free_port()
    code = code.replace(f"127.0.0.1:{want['port']}", f"127.0.0.1:{port}")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:

        def run() -> int:
            return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode

        servicer.set(want["health_service"], health_pb2.HealthCheckResponse.SERVING)
        assert run() == 0
        servicer.set(want["health_service"], health_pb2.HealthCheckResponse.NOT_SERVING)
        assert run() != 0
    finally:
        server.stop(None)


def test_compose_gateway_healthcheck_one_liner_works():
    code = _python_c(_compose()["services"][GW["name"]]["healthcheck"]["test"])
    status = {"code": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status["code"] if self.path == GW["health_path"] else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    code = code.replace(f"127.0.0.1:{GW['port']}", f"127.0.0.1:{port}")
    try:
        run = lambda: subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30).returncode  # noqa: E731
        assert run() == 0
        status["code"] = 503
        assert run() != 0
    finally:
        srv.shutdown()
        srv.server_close()


def test_dockerfile_contract():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim|^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert f"USER {CONTRACT['uid']}" in text
    assert 'ENTRYPOINT ["python", "-m"]' in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    # One protoc invocation, shared with `make proto`.
    assert "python scripts/protoc.py protos/flowviz/*/v1/*.proto" in text
    assert "$(PY) scripts/protoc.py $<" in (ROOT / "Makefile").read_text()
    ignore = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".data", ".git", "**/__pycache__", ".pytest_cache", "flowviz/**/*_pb2*.py"):
        assert entry in ignore, f".dockerignore lacks {entry}"
    assert os.access(ROOT / "deploy" / "check.sh", os.R_OK)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_reflection_is_off_in_production_only(overlay):
    assert _config(_render(overlay)).get("FLOWVIZ_REFLECTION") == ("0" if overlay == "production" else None)


# ------------------------------------------- (d) least privilege (issue 19) ---
def _secrets_of(pod: dict) -> set[str]:
    """Every Secret a pod template can read: env, envFrom and volumes, any container."""
    found = set()
    for c in pod.get("initContainers", []) + pod["containers"]:
        for e in c.get("env", []):
            if ref := e.get("valueFrom", {}).get("secretKeyRef"):
                found.add(ref["name"])
        for e in c.get("envFrom", []):
            if "secretRef" in e:
                found.add(e["secretRef"]["name"])
    for v in pod.get("volumes", []):
        if "secret" in v:
            found.add(v["secret"]["secretName"])
        for source in v.get("projected", {}).get("sources", []):
            if "secret" in source:
                found.add(source["secret"]["name"])
    return found


def _unsuffixed(name: str) -> str:
    """A kustomize-generated name without its hash suffix (flowviz-db-lots-6gtt5fkdfm)."""
    return re.sub(r"-[a-z0-9]{10}$", "", name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_pod_gets_only_its_own_database_secret(overlay):
    docs = _render(overlay)
    for d, pod in _pod_templates(docs):
        app = d["metadata"]["name"]
        db = {_unsuffixed(s) for s in _secrets_of(pod) if _unsuffixed(s).startswith("flowviz-db-")}
        if app in GRPC:
            assert db == {f"flowviz-db-{app}"}, (app, db)
        elif app == "migrate":  # the owner, and each service's URL to set its role's password
            assert db == {"flowviz-db-owner", *(f"flowviz-db-{s}" for s in GRPC)}, db
        elif app == "postgres":  # dev: the owner's password for its init script
            assert db == {"flowviz-db-owner"}, db
        else:
            assert db == set(), (app, db)
    gateway = _find(docs, "Deployment", GW["name"])["spec"]["template"]["spec"]
    assert {_unsuffixed(s) for s in _secrets_of(gateway)} == {
        "flowviz-service-key-gateway"
    }  # its own key; no data-store secret
    env = {e["name"] for c in gateway["containers"] for e in c.get("env", [])}
    assert not env & {"DATABASE_URL", "VALKEY_URL"}
    # The migrate job's role step reads each service's URL under the name flowviz.tools.dbroles reads.
    job = _find(docs, "Job", "migrate")["spec"]["template"]["spec"]
    roles = next(c for c in job["initContainers"] if c["args"] == ["flowviz.tools.dbroles"])
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in roles["env"]}
    for svc in GRPC:
        ref = refs[f"FLOWVIZ_{svc.upper()}_DATABASE_URL"]
        assert (_unsuffixed(ref["name"]), ref["key"]) == (f"flowviz-db-{svc}", "DATABASE_URL")
    assert _unsuffixed(refs["DATABASE_URL"]["name"]) == "flowviz-db-owner"
    steps = [c["args"] for c in job["initContainers"]]
    assert steps.index(["flowviz.tools.dbroles"]) == steps.index([CONTRACT["migrate_module"]]) + 1


def test_dev_database_urls_name_each_services_own_role():
    doc = _yaml().safe_load((ROOT / "deploy/k8s/overlays/dev/kustomization.yaml").read_text())
    urls = {
        g["name"]: dict(item.split("=", 1) for item in g["literals"])["DATABASE_URL"]
        for g in doc["secretGenerator"]
        if g["name"].startswith("flowviz-db-")
    }
    assert set(urls) == {"flowviz-db-owner", *(f"flowviz-db-{s}" for s in GRPC)}
    for name, url in urls.items():
        assert url.startswith(f"postgresql://flowviz_{name.removeprefix('flowviz-db-')}:"), url


def _selects(selector: dict, labels: dict) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _pods(docs) -> dict[str, dict]:
    """app name -> labels of its pods, for every pod template."""
    return {d["metadata"]["name"]: pod_labels(d) for d, _ in _pod_templates(docs)}


def pod_labels(d: dict) -> dict:
    return d["spec"]["template"]["metadata"]["labels"]


def _policies(docs) -> list[dict]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_selected_by_a_default_deny_policy(overlay):
    docs = _render(overlay)
    deny = [
        p
        for p in _policies(docs)
        if set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny, "no default-deny NetworkPolicy"
    for app, labels in _pods(docs).items():
        assert any(_selects(p["spec"]["podSelector"], labels) for p in deny), f"{app}: no default deny"


def _peer_matches(peer: dict, labels: dict | None, same_namespace: bool) -> bool:
    """Whether a from/to entry matches a pod (labels; None: an address outside the cluster)."""
    if labels is None:
        return "ipBlock" in peer
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if peer["namespaceSelector"] != {} and not same_namespace:
            return False  # other namespaces are modelled without labels
    elif not same_namespace:
        return False
    return _selects(peer.get("podSelector", {}), labels)


def _port_matches(rule: dict, port: int) -> bool:
    if not rule.get("ports"):
        return True
    for p in rule["ports"]:
        assert isinstance(p.get("port"), int), f"use port numbers in NetworkPolicies: {p}"
        if p["port"] == port or p["port"] <= port <= p.get("endPort", p["port"]):
            return True
    return False


def _allowed(policies, direction: str, me: dict, peer: dict | None, port: int, same_ns: bool = True) -> bool:
    """Whether `direction` (ingress/egress) traffic of pod `me` with `peer` on `port` is allowed:
    isolated by a policy selecting it, then allowed by some rule of one that does."""
    kind = direction.capitalize()
    mine = [
        p for p in policies if kind in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], me)
    ]
    assert mine, "every pod is isolated (test above)"
    side = "from" if direction == "ingress" else "to"
    for p in mine:
        for rule in p["spec"].get(direction, []):
            peers = rule.get(side)
            if _port_matches(rule, port) and (
                not peers or any(_peer_matches(x, peer, same_ns) for x in peers)
            ):
                return True
    return False


CALLS = {  # (from, to, port): what the code calls (grep .channel( in services/)
    ("gateway", "lots", 50051),
    ("gateway", "genealogy", 50052),
    ("gateway", "qc", 50053),
    ("gateway", "health", 50050),
    ("health", "lots", 50051),
    ("health", "genealogy", 50052),
    ("health", "qc", 50053),
    ("lots", "qc", 50053),
    ("genealogy", "qc", 50053),
    ("qc", "genealogy", 50052),
    ("gateway", "events", 50054),
    ("health", "events", 50054),
}
DATA_CLIENTS = ["lots", "genealogy", "qc", "health", "events", "migrate"]
# Webhook deliveries (issue 16): the events service alone reaches out, on HTTP(S) only.
WEBHOOK_PORTS = (443, 80)
# What a webhook must never reach through the NetworkPolicy (the cluster's and the machine's own).
PRIVATE_RANGES = {
    "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
    "::1/128", "fc00::/7", "fe80::/10",
}  # fmt: skip


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_only_the_calls_the_architecture_makes(overlay):
    docs = _render(overlay)
    policies, pods = _policies(docs), _pods(docs)
    ports = {50050, 50051, 50052, 50053, 50054, 8000, 5432, 6379, *WEBHOOK_PORTS, *range(9150, 9156)}
    want = set(CALLS)
    if overlay == "dev":  # in-cluster data stores
        want |= {(c, "postgres", 5432) for c in DATA_CLIENTS} | {(c, "valkey", 6379) for c in DATA_CLIENTS}
    allowed = {
        (src, dst, port)
        for src in pods
        for dst in pods
        for port in ports
        if src != dst
        and _allowed(policies, "egress", pods[src], pods[dst], port)
        and _allowed(policies, "ingress", pods[dst], pods[src], port)
    }
    assert allowed == want
    # Outside the cluster (production's managed PostgreSQL and Valkey): the data clients only.
    outward = {
        (src, port) for src in pods for port in ports if _allowed(policies, "egress", pods[src], None, port)
    }
    assert outward == {(c, p) for c in DATA_CLIENTS for p in (5432, 6379)} | {
        ("events", p) for p in WEBHOOK_PORTS
    }
    # From outside the namespace: the gateway's HTTP port; metrics only for labelled scrapers.
    stranger = {"app": "anything"}
    entry = {
        (dst, port)
        for dst in pods
        for port in ports
        if _allowed(policies, "ingress", pods[dst], stranger, port, same_ns=False)
    }
    assert entry == {("gateway", GW["port"])}
    scraper = {"flowviz/scrape-metrics": "true"}
    scraped = {
        dst
        for dst in pods
        if _allowed(policies, "ingress", pods[dst], scraper, GRPC.get(dst, GW)["metrics_port"], same_ns=False)
    }
    assert scraped == set(ALL_APPS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_webhook_egress_is_http_to_public_addresses_only(overlay):
    """The events service's way out: TCP 443/80 to anywhere but the private, shared, link-local
    and loopback ranges (pods, Services, metadata), in both address families; no other pod has one."""
    import ipaddress

    policies = _policies(_render(overlay))
    pods = _pods(_render(overlay))
    blocks = [
        (rule, peer["ipBlock"])
        for p in policies
        if "Egress" in p["spec"]["policyTypes"]
        for rule in p["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]
    assert blocks, "no egress to addresses outside the cluster"
    for rule, block in blocks:
        selected = {app for app, labels in pods.items() if _selects(_policy_of(policies, rule), labels)}
        assert selected == {"events"}, selected
        assert sorted(p["port"] for p in rule["ports"]) == sorted(WEBHOOK_PORTS)
        assert all(p.get("protocol", "TCP") == "TCP" and "endPort" not in p for p in rule["ports"])
        net = ipaddress.ip_network(block["cidr"])
        assert net.prefixlen == 0, block
        excepted = {str(ipaddress.ip_network(e)) for e in block.get("except", [])}
        want = {r for r in PRIVATE_RANGES if ipaddress.ip_network(r).version == net.version}
        assert want <= excepted, f"{block['cidr']}: not excepted {want - excepted}"
    assert {ipaddress.ip_network(b["cidr"]).version for _, b in blocks} == {4, 6}


def _policy_of(policies: list[dict], rule: dict) -> dict:
    """The pod selector of the policy holding `rule`."""
    return next(p for p in policies if rule in p["spec"].get("egress", []))["spec"]["podSelector"]


def test_compose_gives_each_service_its_own_database_role():
    svcs = _compose()["services"]
    for name in GRPC:
        assert svcs[name]["environment"]["DATABASE_URL"].startswith(f"postgresql://flowviz_{name}:")
    gw = svcs[GW["name"]]["environment"]
    assert "DATABASE_URL" not in gw and not gw.get("VALKEY_URL")
    migrate = svcs["migrate"]
    assert migrate["environment"]["DATABASE_URL"].startswith("postgresql://flowviz_owner:")
    for name in GRPC:
        assert (
            migrate["environment"][f"FLOWVIZ_{name.upper()}_DATABASE_URL"]
            == svcs[name]["environment"]["DATABASE_URL"]
        )
    assert "python -m flowviz.tools.dbroles" in " ".join(migrate["entrypoint"])
    assert svcs["postgres"]["environment"]["POSTGRES_USER"] != "flowviz_owner"


def test_compose_role_passwords_have_no_default():
    uses = re.findall(r"\$\{(FLOWVIZ_[A-Z]+_DB_PASSWORD)([^}]*)\}", COMPOSE_FILE.read_text())
    names = {name for name, _ in uses}
    assert names == {f"FLOWVIZ_{r}_DB_PASSWORD" for r in ("OWNER", *(s.upper() for s in GRPC))}
    assert all(rest.startswith(":?") for _, rest in uses), uses  # unset: compose refuses to start
