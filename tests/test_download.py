"""`cifar10 download` and safe extraction, against local archives built from tiny fake batches."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from cifar10kit.runtime import download as DL
from cifar10kit.runtime.dataset import load_cifar10
from cifar10kit.runtime.locations import CIFAR_DIRNAME, DatasetError

from conftest import cli, make_tiny_cifar


def _good_archive(tmp_path: Path) -> tuple[Path, str]:
    """A gzipped tar laid out like the official one (cifar-10-batches-py/...), and its MD5."""
    src = make_tiny_cifar(tmp_path / "src", per_batch=5, test=7)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / CIFAR_DIRNAME, arcname=CIFAR_DIRNAME)
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# The command


def test_download_command_fetches_verifies_and_shows_progress(tmp_path):
    archive, md5 = _good_archive(tmp_path)
    dest = tmp_path / "data"
    r = cli("download", "--data-dir", str(dest), "--url", archive.as_uri(), "--md5", md5)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(dest / CIFAR_DIRNAME)
    assert "CIFAR-10" in r.stderr and "100%" in r.stderr  # the tqdm bar reached the end
    x, y, _ = load_cifar10(dest, "test")
    assert len(x) == len(y) == 7
    assert not [p for p in dest.iterdir() if p.name.startswith(".download-")]  # no temporary left


def test_download_command_errors_are_one_line(tmp_path):
    archive, md5 = _good_archive(tmp_path)
    dest = tmp_path / "data"
    wrong = cli("download", "--data-dir", str(dest), "--url", archive.as_uri(), "--md5", "0" * 32, "-q")
    assert wrong.returncode == 1 and "MD5" in wrong.stderr and "Traceback" not in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) <= 2  # the retry notice, then the error
    assert not (dest / CIFAR_DIRNAME).exists()
    missing = cli("download", "--data-dir", str(dest), "--url", (tmp_path / "nope.tar.gz").as_uri(), "-q")
    assert missing.returncode == 1 and "cannot download" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_download_uses_the_environment_and_the_cache_folder(tmp_path):
    archive, md5 = _good_archive(tmp_path)
    env_dir = tmp_path / "from-env"
    r = cli("download", "--url", archive.as_uri(), "--md5", md5, "-q", env={"CIFAR10_DATA": str(env_dir)})
    assert r.returncode == 0, r.stderr
    assert (env_dir / CIFAR_DIRNAME / "test_batch").exists()
    env = {"CIFAR10_DATA": "", "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    r = cli("download", "--url", archive.as_uri(), "--md5", md5, "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "xdg" / "cifar10kit" / CIFAR_DIRNAME / "test_batch").exists()


def test_messages_that_ask_for_a_download_name_a_real_command(tmp_path):
    r = cli("evaluate", "--data-dir", str(tmp_path / "empty"))
    assert r.returncode == 2 and f"cifar10 download --data-dir {tmp_path / 'empty'}" in r.stderr
    command = r.stderr.split("`")[1].split()  # the command the message suggests, as a user would type it
    assert command[:2] == ["cifar10", "download"]
    archive, md5 = _good_archive(tmp_path)
    ran = cli(*command[1:], "--url", archive.as_uri(), "--md5", md5, "-q")
    assert ran.returncode == 0, ran.stderr
    assert cli("evaluate", "--data-dir", str(tmp_path / "empty"), "--json").returncode == 0  # data found now


# ----------------------------------------------------------------------------------------------
# Safe extraction: both branches, hostile archives


def _hostile(tmp_path: Path, kind: str, outside: Path) -> Path:
    """An archive holding one good file and one member of the given hostile kind."""
    archive = tmp_path / f"{kind}.tar"
    with tarfile.open(archive, "w") as tar:
        good = tarfile.TarInfo(f"{CIFAR_DIRNAME}/ok.txt")
        good.size = 2
        tar.addfile(good, io.BytesIO(b"ok"))
        member = tarfile.TarInfo(f"{CIFAR_DIRNAME}/evil")
        payload = b"pwned"
        if kind == "absolute":
            member.name = str(outside)
        elif kind == "dotdot":
            member.name = f"{CIFAR_DIRNAME}/../../{outside.name}"
        elif kind == "symlink":
            member.type, member.linkname = tarfile.SYMTYPE, str(outside)
        elif kind == "hardlink":
            member.type, member.linkname = tarfile.LNKTYPE, f"{CIFAR_DIRNAME}/ok.txt"
        elif kind == "device":
            member.type, member.devmajor, member.devminor = tarfile.CHRTYPE, 1, 3
        elif kind == "fifo":
            member.type = tarfile.FIFOTYPE
        member.size = len(payload) if member.type == tarfile.REGTYPE else 0
        tar.addfile(member, io.BytesIO(payload) if member.size else None)
    return archive


@pytest.mark.parametrize("use_data_filter", [True, False], ids=["data-filter", "own-checks"])
@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink", "device", "fifo"])
def test_hostile_members_are_refused(tmp_path, kind, use_data_filter):
    if use_data_filter and not DL.has_data_filter():
        pytest.skip("this Python's tarfile has no data filter")
    outside = tmp_path / "outside-target"
    archive = _hostile(tmp_path, kind, outside)
    names = [m.name for m in tarfile.open(archive).getmembers()]
    assert len(names) == 2 and (kind != "absolute" or os.path.isabs(names[1]))  # the archive really is hostile
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match="refusing to extract") as e:
        DL.safe_extract(archive, dest, use_data_filter=use_data_filter)
    assert names[1] in str(e.value) and "\n" not in str(e.value)
    assert not outside.exists() and not (tmp_path / "outside-target").is_symlink()
    assert not any(p.name == "evil" for p in tmp_path.rglob("*"))


def test_both_extraction_branches_write_the_same_files(tmp_path):
    archive, _ = _good_archive(tmp_path)
    outputs = {}
    for use_filter in [True, False] if DL.has_data_filter() else [False]:
        dest = tmp_path / f"out-{use_filter}"
        DL.safe_extract(archive, dest, use_data_filter=use_filter)
        outputs[use_filter] = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    first = next(iter(outputs.values()))
    assert len(first) == 7 and all(files == first for files in outputs.values())


def test_download_without_the_data_filter(tmp_path, monkeypatch):
    """Pythons 3.10.0-3.10.11 and 3.11.0-3.11.3 lack tarfile's data filter: the whole download
    path must still extract (with our own checks), and never pass `filter=` to tarfile."""
    monkeypatch.setattr(DL, "has_data_filter", lambda: False)

    def no_filter_argument(self, *args, **kwargs):
        raise AssertionError("extractall called on a Python without the data filter")

    monkeypatch.setattr(tarfile.TarFile, "extractall", no_filter_argument)
    archive, md5 = _good_archive(tmp_path)
    folder = DL.download_cifar10(tmp_path / "data", url=archive.as_uri(), md5=md5, file_md5={})
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]
    )
    assert load_cifar10(tmp_path / "data", "train")[0].shape == (25, 32, 32, 3)


def test_a_hostile_download_leaves_nothing_behind(tmp_path):
    outside = tmp_path / "outside-target"
    archive = _hostile(tmp_path, "dotdot", outside)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    dest = tmp_path / "data"
    with pytest.raises(DatasetError, match="refusing"):
        DL.download_cifar10(dest, url=archive.as_uri(), md5=md5, file_md5={})
    assert not outside.exists() and list(dest.iterdir()) == []
