"""`flowviz backup FILE` and `flowviz restore FILE`: the whole database in PostgreSQL's custom
format, with the embedded PostgreSQL's own pg_dump and pg_restore.

The database is DATABASE_URL, else the one `make run` embeds (127.0.0.1:FLOWVIZ_PG_PORT).
A restore replaces every object the file holds, in one transaction (all or nothing), and then
orphans every cached answer (VALKEY_URL, else the embedded Valkey), so no answer from before
the restore is served after it. For a real server and point-in-time recovery see the README.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import subprocess
import sys
from pathlib import Path

from flowviz.tools import auditchain, local
from flowviz.tools.embedded import PG_BIN


def backup(url: str, file: Path) -> None:
    # Written beside the target, then renamed: a failed dump never leaves a half file as FILE.
    partial = file.with_name(file.name + ".partial")
    auditchain.seal(url)  # the file holds every committed audit row sealed, whenever it is restored
    try:
        subprocess.run(
            [str(PG_BIN / "pg_dump"), "--format=custom", "--file", str(partial), "--dbname", url], check=True
        )
        partial.replace(file)
    finally:
        partial.unlink(missing_ok=True)


def restore(url: str, file: Path) -> None:
    subprocess.run(
        [str(PG_BIN / "pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction",
         "--exit-on-error", "--dbname", url, str(file)],
        check=True,
    )  # fmt: skip


async def _orphan_cache(url: str | None) -> bool:
    from flowviz.core.cache import Cache

    if url is None:
        return False
    cache = Cache(url, key=secrets.token_bytes(32), timeout=1.0, ttl=1)  # only invalidates: any key
    try:
        return await cache.invalidate_all()
    finally:
        await cache.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="flowviz", description=__doc__)
    parser.add_argument("command", choices=["backup", "restore"])
    parser.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    try:
        url = local.database_url(admin=args.command == "restore")
    except local.UserError as exc:
        sys.exit(f"flowviz: {exc}")
    try:
        if args.command == "backup":
            backup(url, args.file)
            print(f"backed up to {args.file} ({args.file.stat().st_size} bytes)")
            return 0
        if not args.file.is_file():
            sys.exit(f"{args.file}: no such file")
        restore(url, args.file)
    except subprocess.CalledProcessError as exc:
        sys.exit(f"{Path(exc.cmd[0]).name} failed with code {exc.returncode}; nothing was changed")
    print(f"restored from {args.file}")
    if not asyncio.run(_orphan_cache(local.valkey_url())):
        print("warning: the cache could not be reached; restart the services before serving", file=sys.stderr)
        return 1
    return 0
