"""What the embedded servers change on the machine (only what PostgreSQL needs, said when done),
and who may use them (their owner, with the password: not the machine's other users)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from flowviz.tools.embedded import PG_BIN, Postgres, free_port, open_traverse
from tests.conftest import Servers

USER = "nobody"


@pytest.mark.skipif(os.geteuid() != 0, reason="the folders are opened only when running as root")
def test_only_folders_the_user_cannot_pass_get_o_x_and_it_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_traverse(tmp_path, USER)  # pytest's own folders above tmp_path, whatever they are
    capsys.readouterr()
    entry = pwd.getpwnam(USER)
    modes = {"closed": 0o700, "closed/open": 0o751, "closed/open/mine": 0o700, "closed/open/mine/group": 0o710,
             "closed/open/mine/group/data": 0o750}  # fmt: skip
    for name, mode in modes.items():
        (tmp_path / name).mkdir()
        (tmp_path / name).chmod(mode)
    shutil.chown(tmp_path / "closed/open/mine", entry.pw_uid)  # its owner may pass (u+x)
    shutil.chown(tmp_path / "closed/open/mine/group", group=entry.pw_gid)  # its group may pass (g+x)
    target = tmp_path / "closed/open/mine/group/data"

    changed = open_traverse(target, USER)

    assert changed == [tmp_path / "closed", target]
    after = {name: (tmp_path / name).stat().st_mode & 0o777 for name in modes}
    assert after == {**modes, "closed": 0o701, "closed/open/mine/group/data": 0o751}
    said = capsys.readouterr().out
    assert f"o+x (traverse only, not list or read) to {tmp_path / 'closed'} {target} " in said
    assert f"chmod o-x {tmp_path / 'closed'} {target}" in said
    # The user can now reach the folder, and a second run changes and says nothing.
    as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    assert (
        subprocess.run(["ls", "-d", str(target)], capture_output=True, check=False, **as_user).returncode == 0
    )
    assert open_traverse(target, USER) == [] and capsys.readouterr().out == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another local user")
def test_another_local_user_cannot_use_the_embedded_database(servers: Servers) -> None:
    """The reviewer's command, as `nobody`: no password, no session (so no COPY ... FROM PROGRAM)."""
    entry = pwd.getpwnam(USER)
    as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/nonexistent"}  # no PGPASSWORD, no .pgpass
    args = [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(servers.pg.port), "-U", "postgres", "-w",
            "-c", "copy (select 1) to program 'id'"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=30, check=False, **as_user)
    assert done.returncode != 0
    assert "password" in done.stderr, done.stderr
    # ... nor read the password: it is ours only.
    assert servers.pg.password_file.stat().st_mode & 0o077 == 0
    read = subprocess.run(["cat", str(servers.pg.password_file)], capture_output=True, check=False, **as_user)
    assert read.returncode != 0 and servers.pg.password.encode() not in read.stdout
    # With the password, the owner connects.
    with psycopg.connect(servers.pg.url_of("postgres")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_an_old_trusting_data_folder_is_switched_to_passwords(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pg = Postgres(tmp_path / "pg", free_port())
    pg.init(fast=True)
    hba = pg.data_dir / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "trust"))  # as initdb --auth=trust left it
    pg.start(fast=True)
    try:
        assert "now asks for a password" in capsys.readouterr().out
        assert "trust" not in [
            line.split()[-1] for line in hba.read_text().splitlines() if line and not line.startswith("#")
        ]
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg.port}/postgres").close()
        psycopg.connect(pg.url_of("postgres")).close()
    finally:
        pg.stop()
