"""planner.fileout, the one writer: atomic, never replaces anything but a regular file, keeps modes, one typed error."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from planner.errors import OutputExistsError, OutputWriteError, UsageError, exit_code_for
from planner.fileout import write_new_file

ROOT = Path(__file__).parents[1]


def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_new_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert _mode(write_new_file(tmp_path / "plan.json", "{}")) == 0o644
        assert _mode(write_new_file(tmp_path / "run.sh", "#!/bin/sh\n", mode=0o777)) == 0o755
    finally:
        os.umask(old)
    assert (tmp_path / "plan.json").read_text() == "{}"


def test_existing_file_needs_force_and_keeps_its_mode(tmp_path):
    p = tmp_path / "run.sh"
    p.write_text("old")
    os.chmod(p, 0o700)
    with pytest.raises(OutputExistsError) as e:
        write_new_file(p, "new")
    assert exit_code_for(e.value) == 3 and p.read_text() == "old"
    write_new_file(p, "new", force=True, mode=0o777)
    assert p.read_text() == "new" and _mode(p) == 0o700


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory", "device"])
def test_force_never_replaces_a_special_file(tmp_path, kind):
    p = tmp_path / "out"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "symlink":
        (tmp_path / "target").write_text("keep")
        p.symlink_to(tmp_path / "target")
    elif kind == "directory":
        p.mkdir()
    else:
        p = Path("/dev/null")            # a character device; refused before anything is written
    before = os.lstat(p)
    with pytest.raises(UsageError, match="only a regular file is ever replaced") as e:
        write_new_file(p, "x", force=True)
    after = os.lstat(p)
    assert exit_code_for(e.value) == 2 and (before.st_mode, before.st_ino) == (after.st_mode, after.st_ino)
    assert [q.name for q in p.parent.iterdir() if q.name.startswith(".out")] == []


def test_missing_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        write_new_file(tmp_path / "nodir" / "plan.json", "{}")
    assert not (tmp_path / "nodir").exists()


def test_disk_full_leaves_nothing(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputWriteError, match="the disk is full") as e:
        write_new_file(tmp_path / "plan.json", "{}")
    assert exit_code_for(e.value) == 3 and list(tmp_path.iterdir()) == []


def test_file_size_limit_leaves_nothing(tmp_path):
    # ulimit -f 1 (512-byte blocks): Python ignores SIGXFSZ, so the write fails with EFBIG
    code = ("import sys; from planner.fileout import write_new_file\n"
            "from planner.errors import OutputWriteError\n"
            "try:\n    write_new_file(sys.argv[1], 'x' * 100000)\n"
            "except OutputWriteError as e:\n    print(e)\n")
    r = subprocess.run(["bash", "-c", f'ulimit -f 1; exec "{sys.executable}" -c "$0" "$1"', code,
                        str(tmp_path / "big.json")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "file size limit" in r.stdout, r.stderr
    assert list(tmp_path.iterdir()) == []
