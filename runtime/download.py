"""Downloading CIFAR-10: checked before use, extracted safely, never half-used.

The official archive is fetched to a temporary file and its MD5 compared with the published one
before anything is extracted; a corrupt or partial download is deleted and fetched again once.
Extraction goes to a temporary folder that replaces the target only when complete.

Extraction trusts no member name. Every member must be a plain file or folder whose path stays
inside the target: absolute paths, `..`, symbolic and hard links, devices and FIFOs are refused
with the member's name. On Pythons with tarfile's "data" filter (3.12, 3.11.4+, 3.10.12+) that
filter extracts as well; on older ones (3.10.0-3.10.11, 3.11.0-3.11.3, which lack it) we write
each checked file ourselves, so nothing depends on the filter being there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .locations import CIFAR_DIRNAME, DatasetError, resolve_data_dir

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
# Per-file MD5s of the official release (the same list torchvision publishes).
FILE_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}

Progress = Callable[[int, int], None]  # (bytes so far, total bytes or 0 when unknown)


def _log(message: str) -> None:
    print(message, file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Checking what is there


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_cifar10(data_dir: str | os.PathLike | None, file_md5: dict[str, str] = FILE_MD5) -> list[str]:
    """Names of official files that are missing or differ from their published MD5."""
    folder = resolve_data_dir(data_dir) / CIFAR_DIRNAME
    bad = []
    for name, md5 in file_md5.items():
        f = folder / name
        if not f.exists() or file_digest(f) != md5:
            bad.append(name)
    return bad


# ----------------------------------------------------------------------------------------------
# Downloading


def download_cifar10(
    data_dir: str | os.PathLike | None,
    url: str = CIFAR_URL,
    md5: str = CIFAR_MD5,
    file_md5: dict[str, str] = FILE_MD5,
    progress: Progress | None = None,
    log: Callable[[str], None] = _log,
) -> Path:
    """Fetch and unpack the official archive into data_dir unless a good copy is there.

    progress: called with (bytes so far, total); None draws a tqdm bar when stderr is a terminal.
    Returns the `cifar-10-batches-py` folder. Raises DatasetError with a one-line message."""
    root = resolve_data_dir(data_dir)
    folder = root / CIFAR_DIRNAME
    if folder.exists():
        bad = verify_cifar10(root, file_md5)
        if not bad:
            return folder
        log(f"{folder}: {', '.join(bad)} missing or corrupt (MD5 mismatch); downloading again")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(
            f"{root}: cannot create the data folder ({e.strerror or e}); pick another with --data-dir"
        ) from None
    for attempt in (1, 2):
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
            archive = Path(tmp) / ARCHIVE_NAME
            report, close = progress, None
            if report is None and sys.stderr.isatty():  # e.g. `cifar10 train --download` at a terminal
                report, close = tqdm_progress()
            try:
                _fetch(url, archive, report)
            finally:
                if close:
                    close()
            got = file_digest(archive)
            if got != md5:
                if attempt == 2:
                    raise DatasetError(
                        f"{url}: downloaded archive has MD5 {got}, expected {md5}, twice; "
                        f"check the network, or download it by hand and unpack it into {root}"
                    )
                log(f"download of {url} is corrupt or partial (MD5 {got}); retrying")
                continue
            unpacked = Path(tmp) / "unpacked"
            safe_extract(archive, unpacked)
            extracted = unpacked / CIFAR_DIRNAME
            if not extracted.is_dir():
                raise DatasetError(f"{url}: archive has no {CIFAR_DIRNAME}/ folder")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(extracted, folder)
            return folder
    raise AssertionError("unreachable")


def _fetch(url: str, dest: Path, progress: Progress | None) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(dest, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise DatasetError(f"cannot download {url} ({reason}); check the network connection") from None


def tqdm_progress(desc: str = "CIFAR-10"):
    """A progress callback drawing a tqdm bar on stderr, and a function that closes the bar.

    Without tqdm installed, (None, a no-op): the download still works, silently."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda: None
    bar = tqdm(desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)

    def update(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return update, bar.close


# ----------------------------------------------------------------------------------------------
# Safe extraction


_FILTER_ERROR = getattr(tarfile, "FilterError", ())  # an empty tuple catches nothing where it is absent


def has_data_filter() -> bool:
    """Whether this Python's tarfile has the "data" extraction filter (PEP 706)."""
    return hasattr(tarfile, "data_filter")


def safe_extract(archive: Path, dest: Path, use_data_filter: bool | None = None) -> None:
    """Extract a tar archive into `dest`, refusing any member that could land outside it.

    use_data_filter: None picks what this Python has; False forces our own writer (for tests)."""
    if use_data_filter is None:
        use_data_filter = has_data_filter()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, dest, archive)
            if use_data_filter:
                tar.extractall(dest, members=members, filter="data")
            else:
                _write_members(tar, members, dest)
    except _FILTER_ERROR as e:  # the data filter's own refusal (our checks run first; belt and braces)
        raise DatasetError(f"{archive}: {e}; refusing to extract it") from None
    except (tarfile.TarError, EOFError) as e:
        raise DatasetError(f"{archive}: not a readable tar archive ({e}); delete it and download again") from None
    except OSError as e:
        raise DatasetError(f"{archive}: cannot extract into {dest} ({e.strerror or e})") from None


def _check_member(member: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    name = member.name
    if not (member.isfile() or member.isdir()):
        kind = "a link" if (member.issym() or member.islnk()) else "a device or FIFO"
        raise DatasetError(f"{archive}: member {name!r} is {kind}; refusing to extract it")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise DatasetError(f"{archive}: member {name!r} has an absolute path; refusing to extract it")
    if ".." in parts:
        raise DatasetError(f"{archive}: member {name!r} points outside the folder (..); refusing to extract it")
    root = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(root, name))
    if target != root and not target.startswith(root + os.sep):
        raise DatasetError(f"{archive}: member {name!r} would land outside {dest}; refusing to extract it")


def _write_members(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path) -> None:
    """Plain files and folders only (already checked), with our permissions, never the archive's."""
    for member in members:
        target = dest / member.name
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        if source is None:  # cannot happen for regular files; be explicit rather than write nothing
            raise DatasetError(f"member {member.name!r} has no data")
        with source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
