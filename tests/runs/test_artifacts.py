"""Result files: written whole or not at all, with the mode the user's umask gives."""

import errno
import json
import os
import stat

import pytest

from gradinv_exp.runs import artifacts


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_of_any_new_file_under_the_umask(tmp_path, umask, expected):
    previous = os.umask(umask)
    try:
        artifacts.write_json(tmp_path / "metrics.json", {"status": "ok"})
        artifacts.write_text(tmp_path / "summary.md", "x\n")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "metrics.json") == mode(tmp_path / "summary.md") == expected


def test_a_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    artifacts.write_json(path, {"status": "ok"})

    def disk_full(tmp):
        tmp.write_text('{"half": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        artifacts.atomic_write(path, disk_full)
    assert json.loads(path.read_text()) == {"status": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
