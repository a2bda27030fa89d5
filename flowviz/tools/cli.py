"""The `flowviz` command: run the whole system, migrate, seed, generate, import, manage users.

Without DATABASE_URL the commands use the embedded database of the `make run` running in this
checkout (flowviz/tools/local.py). A mistake the user can fix is one line on stderr and exit code 1,
never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request

from flowviz.core.config import ConfigError, tool_settings
from flowviz.tools import local

PROJECT_ROOT = local.PROJECT_ROOT


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

    from flowviz.core import keys
    from flowviz.core.config import DATABASE_ROLES
    from flowviz.tools import accounts, migrate, seed
    from flowviz.tools.embedded import Postgres, Valkey, port_in_use
    from flowviz.tools.supervisor import run_children

    data = local.data_dir()
    given = tool_settings()
    env: dict[str, str] = {}
    pg = vk = None
    wrote_state = False
    started = time.monotonic()
    try:
        if not given.database_url:
            port = given.pg_port
            pg = Postgres(data / "postgres", port)
            if port_in_use(port):
                sys.exit(f"port {port} is taken: set FLOWVIZ_PG_PORT, or DATABASE_URL to use that server")
            print(f"starting embedded PostgreSQL on 127.0.0.1:{port} (data in {pg.data_dir})", flush=True)
            pg.init()
            pg.start()
            env["DATABASE_URL"] = pg.owner_url  # migrations, seed, the command line: not a superuser
        if not given.valkey_url:
            port = given.valkey_port
            if port_in_use(port):
                sys.exit(f"port {port} is taken: set FLOWVIZ_VALKEY_PORT, or VALKEY_URL to use that server")
            vk = Valkey(data / "valkey", port)
            print(f"starting embedded Valkey on 127.0.0.1:{port}", flush=True)
            vk.start()
            env["VALKEY_URL"] = vk.url
        env["FLOWVIZ_CACHE_SECRET"] = accounts.cache_secret(data)
        # Token keys: made once under .data/keys (0600); each process gets only its own private
        # key, the user-token one only the lots service (unless the keys are set outside).
        own_keys: dict[str, str] = {}
        if not given.token_public_key:
            own_keys = keys.write_keys(data / "keys")
            env.update(keys.process_env(own_keys, ""))
        # This process reads them too (settings() in run_children, below).
        os.environ.update(env)
        database_url, valkey_url = tool_settings().database_url, tool_settings().valkey_url
        # So that `flowviz import`, `flowviz user ...` in another terminal use these servers too
        # (a file only its owner reads, beside the token secret).
        # The owner's URL for the command line; the superuser's only for `flowviz restore`.
        admin = {"admin_database_url": pg.url} if pg else {}
        local.write_state(data, database_url=database_url, valkey_url=valkey_url, **admin)
        wrote_state = True
        migrate.upgrade(database_url)
        seed.load(database_url)
        accounts.ensure_admin(database_url)
        # Each service as its own role (migration 0011 made them); the gateway gets no URL.
        database_urls = {}
        if pg:
            pg.enable_service_roles()
            database_urls = {name: pg.service_url(name) for name in DATABASE_ROLES}
        gateway_port = given.gateway_port

        def announce() -> None:
            if _wait_healthy(gateway_port):
                print(
                    f"\nflowviz is up in {time.monotonic() - started:.1f}s: "
                    f"http://127.0.0.1:{gateway_port}/api/health  (Ctrl-C stops)\n",
                    flush=True,
                )

        threading.Thread(target=announce, daemon=True).start()
        return run_children(
            env,
            given.drain_seconds,
            servers=[s for s in (pg, vk) if s],
            database_urls=database_urls,
            child_env=lambda name: keys.process_env(own_keys, name),
        )
    finally:
        if wrote_state:
            local.clear_state(data)
        if vk:
            vk.stop()
        if pg:
            pg.stop()
            print("stopped; data kept for the next run", flush=True)


def cmd_keys(args: argparse.Namespace) -> int:
    """Write a system's Ed25519 keys into DIR (kept if there) and print the settings of each process."""
    from pathlib import Path

    from flowviz.core import keys

    folder = Path(args.dir)
    made = keys.write_keys(folder)
    if args.env:  # docker compose's .env: the keys themselves, one private key per process
        for name, value in keys.compose_env(made).items():
            print(f"{name}={value}")
        return 0
    print(f"# keys in {folder} (mode 0600; the public ones also in {folder / 'public.env'}). Every process:")
    for name, value in keys.process_env(made, "").items():
        print(f"{name}={value}")
    for service in keys.SERVICE_NAMES:
        print(f"# {service} only:")
        for name, value in made.items():
            if name.endswith(f"@{service}"):
                print(f"{name.partition('@')[0]}={value}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from flowviz.tools import migrate

    url = local.database_url()
    with local.reaching(url):
        migrate.upgrade(url)
    print(f"migrated {local.redact(url)}")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from flowviz.tools import seed

    url = local.database_url()
    with local.reaching(url):
        seed.load(url)
    print(f"seed data loaded into {local.redact(url)}")
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    import getpass

    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        raise local.UserError("the two passwords differ; nothing was changed")
    return password


def cmd_user_add(args: argparse.Namespace) -> int:
    from flowviz.tools import accounts

    url = local.database_url()
    if not accounts.add_user(url, args.username, args.role, _password(args), args.display_name):
        raise local.UserError(
            f"user {args.username} already exists; to set a new password: flowviz user reset-password {args.username}"
        )
    print(f"created {args.role} {args.username}")
    return 0


def cmd_user_reset_password(args: argparse.Namespace) -> int:
    from flowviz.tools import accounts

    url = local.database_url()
    disabled = accounts.reset_password(url, args.username, _password(args))
    if disabled is None:
        raise local.UserError(
            f"there is no user {args.username}; to create one: flowviz user add {args.username} --role ROLE"
        )
    note = " (the user is disabled: an admin enables it with PATCH /api/users/NAME)" if disabled else ""
    print(f"password of {args.username} reset{note}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from flowviz.core.errors import DomainError

    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except (local.UserError, ConfigError) as exc:  # ConfigError: a setting, named in the message
        print(f"flowviz: {exc}", file=sys.stderr)
    except DomainError as exc:  # a name or a password the rules refuse
        print(f"flowviz: {exc.message}", file=sys.stderr)
    except KeyboardInterrupt:
        print("flowviz: interrupted", file=sys.stderr)
    return 1


def _main(args_in: list[str]) -> int:
    # These two parse their own arguments (flowviz generate --help, flowviz import --help).
    if args_in and args_in[0] == "generate":
        from flowviz.tools import generate

        return generate.main(args_in[1:])
    if args_in and args_in[0] in ("backup", "restore"):
        from flowviz.tools import backup

        return backup.main(args_in)
    if args_in and args_in[0] == "audit":
        from flowviz.tools import auditchain

        return auditchain.main(args_in[1:])
    if args_in and args_in[0] == "import":
        from flowviz.tools import importer

        return importer.main(args_in[1:])
    parser = argparse.ArgumentParser(prog="flowviz", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the whole system").set_defaults(fn=cmd_run)
    sub.add_parser(
        "migrate", help="apply database migrations (DATABASE_URL, else make run's database)"
    ).set_defaults(fn=cmd_migrate)
    sub.add_parser("seed", help="load the seed data (DATABASE_URL)").set_defaults(fn=cmd_seed)
    keys_cmd = sub.add_parser(
        "keys", help="keys DIR: write the token and service keys (0600), print the settings"
    )
    keys_cmd.add_argument("dir")
    keys_cmd.add_argument("--env", action="store_true", help="print .env lines for docker compose instead")
    keys_cmd.set_defaults(fn=cmd_keys)
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
    reset = user.add_parser(
        "reset-password", help="set a user's password (e.g. a lost admin password); audited"
    )
    reset.add_argument("username")
    reset.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    reset.set_defaults(fn=cmd_user_reset_password)
    args = parser.parse_args(args_in)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
