"""The `flowviz` command: run the whole system, migrate, seed."""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _wait_healthy(port: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def cmd_run(args: argparse.Namespace) -> int:
    """Embedded PostgreSQL + Valkey unless DATABASE_URL/VALKEY_URL are set; migrate; seed; serve."""
    import threading

    from flowviz import accounts, migrate, seed
    from flowviz.embedded import Postgres, Valkey, port_in_use
    from flowviz.supervisor import run_children

    data = Path(os.environ.get("FLOWVIZ_DATA_DIR", PROJECT_ROOT / ".data"))
    env: dict[str, str] = {}
    pg = vk = None
    started = time.monotonic()
    try:
        if not os.environ.get("DATABASE_URL"):
            port = int(os.environ.get("FLOWVIZ_PG_PORT", "5433"))
            pg = Postgres(data / "postgres", port)
            if port_in_use(port):
                sys.exit(f"port {port} is taken: set FLOWVIZ_PG_PORT, or DATABASE_URL to use that server")
            print(f"starting embedded PostgreSQL on 127.0.0.1:{port} (data in {pg.data_dir})", flush=True)
            pg.init()
            pg.start()
            env["DATABASE_URL"] = pg.url
        if not os.environ.get("VALKEY_URL"):
            port = int(os.environ.get("FLOWVIZ_VALKEY_PORT", "6379"))
            if port_in_use(port):
                sys.exit(f"port {port} is taken: set FLOWVIZ_VALKEY_PORT, or VALKEY_URL to use that server")
            vk = Valkey(data / "valkey", port)
            print(f"starting embedded Valkey on 127.0.0.1:{port}", flush=True)
            vk.start()
            env["VALKEY_URL"] = vk.url
        env["FLOWVIZ_TOKEN_SECRET"] = accounts.token_secret(data)
        os.environ.update(env)
        migrate.upgrade(os.environ["DATABASE_URL"])
        seed.load(os.environ["DATABASE_URL"])
        accounts.ensure_admin(os.environ["DATABASE_URL"])
        os.environ.setdefault("FLOWVIZ_LOG_FORMAT", "json")
        gateway_port = int(os.environ.get("FLOWVIZ_GATEWAY_PORT", "8000"))

        def announce() -> None:
            if _wait_healthy(gateway_port):
                print(
                    f"\nflowviz is up in {time.monotonic() - started:.1f}s: "
                    f"http://127.0.0.1:{gateway_port}/api/health  (Ctrl-C stops)\n",
                    flush=True,
                )

        threading.Thread(target=announce, daemon=True).start()
        drain = float(os.environ.get("FLOWVIZ_DRAIN_SECONDS", "10"))
        return run_children(env, drain, servers=[s for s in (pg, vk) if s])
    finally:
        if vk:
            vk.stop()
        if pg:
            pg.stop()
            print("stopped; data kept for the next run", flush=True)


def cmd_migrate(args: argparse.Namespace) -> int:
    from flowviz import migrate

    migrate.main()
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from flowviz import seed

    seed.main()
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    import getpass

    from flowviz import accounts
    from flowviz.core.errors import InvalidArgument

    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("DATABASE_URL is not set")
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass("password: ")
    try:
        created = accounts.add_user(url, args.username, args.role, password, args.display_name)
    except InvalidArgument as exc:
        sys.exit(exc.message)
    if not created:
        sys.exit(f"user {args.username} already exists")
    print(f"created {args.role} {args.username}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    # These two parse their own arguments (flowviz generate --help, flowviz import --help).
    if args_in and args_in[0] == "generate":
        from flowviz import generate

        return generate.main(args_in[1:])
    if args_in and args_in[0] in ("backup", "restore"):
        from flowviz import backup

        return backup.main(args_in)
    if args_in and args_in[0] == "audit":
        from flowviz import auditchain

        return auditchain.main(args_in[1:])
    if args_in and args_in[0] == "import":
        from flowviz import importer

        return importer.main(args_in[1:])
    parser = argparse.ArgumentParser(prog="flowviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the whole system").set_defaults(fn=cmd_run)
    sub.add_parser("migrate", help="apply database migrations (DATABASE_URL)").set_defaults(fn=cmd_migrate)
    sub.add_parser("seed", help="load the seed data (DATABASE_URL)").set_defaults(fn=cmd_seed)
    sub.add_parser("generate", help="write a synthetic genealogy: --lots N --seed S --out DIR")
    sub.add_parser("import", help="bulk import LOTS.csv GENEALOGY.csv (DATABASE_URL), all rows or none")
    sub.add_parser("audit", help="audit verify: walk the audit log's hash chain (DATABASE_URL)")
    sub.add_parser(
        "backup", help="backup FILE: the whole database with pg_dump (DATABASE_URL or the embedded)"
    )
    sub.add_parser("restore", help="restore FILE: replace the database from a backup, then orphan the cache")
    user = sub.add_parser("user", help="manage users (DATABASE_URL)").add_subparsers(
        dest="action", required=True
    )
    add = user.add_parser("add", help="add a user; the password is prompted for")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=["viewer", "operator", "qc", "admin"])
    add.add_argument("--display-name", default="")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(fn=cmd_user_add)
    args = parser.parse_args(args_in)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
