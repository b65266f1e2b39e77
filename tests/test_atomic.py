"""runtime/atomic.py: a file is replaced whole or not at all, with an ordinary file's mode."""

from __future__ import annotations

import os
import re
import stat

import pytest

from cifar10kit.runtime.atomic import atomic_write


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_is_written_whole_and_readable_by_others(tmp_path):
    target = tmp_path / "out.bin"
    assert atomic_write(target, lambda f: f.write(b"x" * 100_000)) == target
    assert target.read_bytes() == b"x" * 100_000
    assert mode(target) == 0o644  # not mkstemp's private 0600
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_replacing_keeps_the_old_files_mode(tmp_path):
    target = tmp_path / "private.bin"
    target.write_bytes(b"old")
    target.chmod(0o600)
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new" and mode(target) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.jsonl"
    target.write_text("epoch 1\n")

    def half_then_fail(f):
        f.write(b"epoch 1\nepo")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "epoch 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_the_temporary_sits_beside_the_target_under_its_name(tmp_path):
    """Beside it: a rename within one file system is atomic. Named `.NAME.*.tmp`: hidden, and what the
    checkpoint writer sweeps when a kill left one behind."""
    seen = []
    atomic_write(tmp_path / "last.pt", lambda f: seen.extend(p.name for p in tmp_path.iterdir()))
    assert len(seen) == 1 and re.fullmatch(r"\.last\.pt\..+\.tmp", seen[0]), seen
