"""What the embedded servers change on the machine: only what PostgreSQL needs, said when done."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import pytest

from flowviz.embedded import open_traverse

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
