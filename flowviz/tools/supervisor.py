"""A small supervisor for `make run`: starts every process, shows their logs readably on a
terminal, restarts a crashed service or embedded server (PostgreSQL, Valkey) loudly (and gives
up if one keeps crashing), stops all in order. The services reconnect to a restarted server on
their own (flowviz/core/db.py, flowviz/core/cache.py).

On a terminal each JSON log line is rewritten as `name | time level msg key=value`. Otherwise
(output to a file or a pipe) the children write their JSON lines straight to our output, with
no copy through this process: one line is one write, and each line names its process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from flowviz.core.logs import escape

COLORS = {"lots": 33, "genealogy": 36, "qc": 35, "health": 32, "gateway": 34, "events": 31}
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    # This child's own settings (its database URL, its private keys) on top of the supervisor's
    # environment; None removes a variable (the gateway's DATABASE_URL).
    env: dict[str, str | None] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    restarts: list[float] = field(default_factory=list)
    # Which replica of which service (its own ports: Supervisor.replica_env); "" for the gateway.
    service: str = ""
    replica: int = 0


class Server(Protocol):
    """An embedded server (flowviz.tools.embedded.Postgres, Valkey): `start()` blocks until it serves."""

    name: str
    proc: subprocess.Popen[bytes] | None

    def start(self) -> None: ...


async def exited(proc: subprocess.Popen[bytes]) -> int:
    """Wait, without polling, for a process we did not start with asyncio (a pidfd)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return proc.wait()
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def on_exit() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, on_exit)
    try:
        if proc.poll() is None:
            await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()


def _backoff(restarts: list[float]) -> float | None:
    """Note a crash in `restarts`; the delay before the restart, None when it keeps crashing."""
    now = time.monotonic()
    restarts[:] = [t for t in restarts if now - t < RESTART_WINDOW] + [now]
    if len(restarts) > MAX_RESTARTS:
        return None
    return 0.5 * (1 << (len(restarts) - 1))


def _value(value: object) -> str:
    """A key=value value: escaped, and quoted when it holds a space, a quote or nothing (so
    `a=b c=d` is never read as two pairs when it was one value)."""
    text = escape(value if isinstance(value, str) else orjson.dumps(value, default=str).decode())
    return orjson.dumps(text).decode() if not text or any(c in text for c in ' "=') else text


def readable(name: str, line: str) -> str:
    """A JSON log line as `time name level msg key=value`; other lines escaped. Every value is
    escaped: a decoded newline or ANSI code in a logged value cannot make a fake line."""
    color = COLORS.get(name, 37)
    prefix = f"\x1b[{color}m{name:>9}\x1b[0m |"
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return f"{prefix} {escape(line)}"
    if not isinstance(doc, dict):
        return f"{prefix} {escape(line)}"
    ts = str(doc.pop("ts", ""))[11:23]
    level = str(doc.pop("level", "")).upper()
    msg = doc.pop("msg", "")
    doc.pop("proc", None)
    doc.pop("logger", None)
    exc = doc.pop("exc", None)
    extra = " ".join(f"{escape(str(k))}={_value(v)}" for k, v in doc.items())
    text = f"{prefix} {escape(ts)} {escape(level):<7} {escape(str(msg))} {extra}".rstrip()
    if not exc:
        return text
    # A traceback keeps its lines, each marked as part of this record.
    return "\n".join([text, *(f"{prefix}   {escape(part)}" for part in str(exc).split("\n"))])


class Supervisor:
    def __init__(
        self,
        children: Sequence[Child],
        env: dict[str, str],
        drain_seconds: float,
        readable: bool,
        servers: Sequence[Server] = (),
    ) -> None:
        self.children = list(children)
        self.servers = list(servers)
        self.readable = readable
        self.env = env
        self.drain_seconds = drain_seconds
        self.stopping = False
        self.failed = False
        # (service, replica) -> its own settings (ports), over env.
        self.replica_env: dict[tuple[str, int], dict[str, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pump(self, child: Child, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            print(readable(child.name, raw.decode(errors="replace").rstrip()), flush=True)

    async def _start(self, child: Child) -> None:
        env = {k: v for k, v in {**self.env, **child.env}.items() if v is not None}
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env={**env, **self.replica_env.get((child.service, child.replica), {})},
            stdout=asyncio.subprocess.PIPE if self.readable else None,  # None: our own stdout
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        if child.proc.stdout is not None:
            self._tasks.add(asyncio.create_task(self._pump(child, child.proc.stdout)))

    async def _watch(self, child: Child) -> None:
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping:
                return
            delay = _backoff(child.restarts)
            if delay is None:
                return self._give_up(child.name)
            print(f"!!! {child.name} exited with code {code}; restarting in {delay:.1f}s", flush=True)
            await asyncio.sleep(delay)
            if self.stopping:
                return
            await self._start(child)

    def _give_up(self, name: str) -> None:
        print(f"!!! {name} crashed {MAX_RESTARTS} times in {RESTART_WINDOW:.0f}s; stopping", flush=True)
        self.failed = True
        self.stop_event.set()

    async def _watch_server(self, server: Server) -> None:
        """Restart an embedded server that died (kill -9, OOM, ...); the services reconnect."""
        restarts: list[float] = []
        while True:
            assert server.proc is not None
            pid = server.proc.pid
            code = await exited(server.proc)
            if self.stopping:
                return
            while True:
                delay = _backoff(restarts)
                if delay is None:
                    return self._give_up(server.name)
                print(
                    f"!!! {server.name} (pid {pid}) exited with code {code}; restarting in {delay:.1f}s",
                    flush=True,
                )
                await asyncio.sleep(delay)
                if self.stopping:
                    return
                try:
                    await asyncio.to_thread(server.start)
                except Exception as exc:  # said, then tried again after a longer delay
                    print(f"!!! {server.name} did not start: {exc}", flush=True)
                    continue
                break
            assert server.proc is not None
            print(f"!!! {server.name} restarted (pid {server.proc.pid}); services reconnect", flush=True)

    async def run(self) -> int:
        self.stop_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_event.set)
        for child in self.children:
            await self._start(child)
        watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
        watchers += [asyncio.create_task(self._watch_server(s)) for s in self.servers]
        await self.stop_event.wait()
        await self.stop()
        for w in watchers:
            w.cancel()
        return 1 if self.failed else 0

    async def stop(self) -> None:
        """SIGTERM every child (they drain), wait for them, kill what is left."""
        self.stopping = True
        print("stopping: draining services", flush=True)
        alive = [c.proc for c in self.children if c.proc and c.proc.returncode is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in alive)), self.drain_seconds + 5)
        except TimeoutError:
            for proc in alive:
                if proc.returncode is None:
                    proc.kill()


# Replica i (from 0) of a service listens on its port + i * REPLICA_PORT_STEP (its metrics too).
REPLICA_PORT_STEP = 1000
SERVICES = ("lots", "genealogy", "qc", "health", "events")


def replica_layout(
    replicas: int, ports: Mapping[str, int], metrics_ports: Mapping[str, int], env: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, list[dict[str, str]]]]:
    """(what every process gets, each service's replicas' own settings). With more than one
    replica, every client dials the service's whole list with round robin
    (`ipv4:127.0.0.1:p1,127.0.0.1:p2`), unless FLOWVIZ_<SVC>_ADDR says otherwise."""
    shared: dict[str, str] = {}
    own: dict[str, list[dict[str, str]]] = {}
    for name in SERVICES:
        up = name.upper()
        listen = [ports[name] + i * REPLICA_PORT_STEP for i in range(replicas)]
        metrics = [
            metrics_ports[name] + i * REPLICA_PORT_STEP if metrics_ports[name] else 0 for i in range(replicas)
        ]
        own[name] = [
            {f"FLOWVIZ_{up}_PORT": str(p), f"FLOWVIZ_{up}_METRICS_PORT": str(m)}
            for p, m in zip(listen, metrics, strict=True)
        ]
        if replicas > 1 and f"FLOWVIZ_{up}_ADDR" not in env:
            shared[f"FLOWVIZ_{up}_ADDR"] = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in listen)
    return shared, own


def service_children(
    python: str = sys.executable, replicas: int = 1, database_urls: Mapping[str, str] | None = None
) -> list[Child]:
    """`replicas` of each of the four services (each with its own DATABASE_URL when
    `database_urls` has one) and the gateway, which gets no database URL at all (it has no pool;
    a compromised gateway holds no database secret)."""
    urls = database_urls or {}
    children = []
    for name in SERVICES:
        env: dict[str, str | None] = {"DATABASE_URL": urls[name]} if name in urls else {}
        for i in range(replicas):
            label = name if replicas == 1 else f"{name}-{i + 1}"
            children.append(
                Child(label, [python, "-m", f"services.{name}"], dict(env), service=name, replica=i)
            )
    return [*children, Child("gateway", [python, "-m", "gateway"], {"DATABASE_URL": None})]


def run_children(
    env: dict[str, str],
    drain_seconds: float,
    servers: Sequence[Server] = (),
    database_urls: Mapping[str, str] | None = None,
    child_env: Callable[[str], dict[str, str]] | None = None,
) -> int:
    import uvloop

    from flowviz.core.config import environ, settings

    merged = {**environ(), **env}
    cfg = settings()
    shared, own = replica_layout(cfg.replicas, cfg.ports, cfg.metrics_ports, merged)
    merged.update(shared)
    children = service_children(replicas=cfg.replicas, database_urls=database_urls)
    for child in children:  # each process's own keys (flowviz.core.keys), beside its database URL
        child.env.update(child_env(child.service or child.name) if child_env else {})
    supervisor = Supervisor(
        children,
        merged,
        drain_seconds,
        readable=sys.stdout.isatty(),
        servers=servers,
    )
    supervisor.replica_env = {(name, i): e for name, envs in own.items() for i, e in enumerate(envs)}
    if cfg.replicas > 1:
        print(
            f"{cfg.replicas} replicas of each service: " + " ".join(f"{k}={v}" for k, v in shared.items()),
            flush=True,
        )
    return uvloop.run(supervisor.run())
