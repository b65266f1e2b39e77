"""CIFAR-10 reading without unpickling, download with MD5 checks, labelled image folders."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cifar10kit.runtime import dataset as D

from conftest import make_tiny_cifar, synthetic_images, write_batch


def test_read_batch_round_trip(tmp_path):
    images, labels = synthetic_images(50, 1)
    write_batch(tmp_path / "b", images, labels)
    got_x, got_y = D.read_batch(tmp_path / "b")
    assert got_x.shape == (50, 32, 32, 3) and got_x.dtype == np.uint8
    np.testing.assert_array_equal(got_x, images)
    np.testing.assert_array_equal(got_y, labels)


def test_load_cifar10_and_class_names(tmp_path):
    root = make_tiny_cifar(tmp_path, per_batch=20, test=30)
    x, y, names = D.load_cifar10(root, "train")
    assert x.shape == (100, 32, 32, 3) and len(y) == 100
    assert names[0] == "airplane" and len(names) == 10
    tx, _, _ = D.load_cifar10(root / "cifar-10-batches-py", "test")  # the inner folder works too
    assert len(tx) == 30


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_executes_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "data_batch_1"
    evil.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [1]}, protocol=2))
    with pytest.raises(D.DatasetError, match="data_batch_1"):
        D.read_batch(evil)
    assert not marker.exists()
    # Sanity: the same bytes really would run code if unpickled.
    pickle.loads(evil.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong_size"])
def test_corrupt_batch_is_rejected_by_name(tmp_path, damage):
    path = tmp_path / "test_batch"
    images, labels = synthetic_images(10, 0)
    write_batch(path, images, labels)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # labels and data disagree
        write_batch(path, images, labels[:5])
    with pytest.raises(D.DatasetError, match="test_batch"):
        D.read_batch(path)


def test_missing_files_message_says_what_to_do(tmp_path):
    with pytest.raises(D.DatasetError, match="--data-dir"):
        D.load_cifar10(tmp_path, "test")


def _archive(tmp_path: Path) -> tuple[Path, str, dict[str, str]]:
    src = make_tiny_cifar(tmp_path / "src", per_batch=5, test=5)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(buf.getvalue())
    md5s = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in (src / "cifar-10-batches-py").iterdir()}
    return archive, hashlib.md5(buf.getvalue()).hexdigest(), md5s


def test_download_verifies_and_extracts(tmp_path):
    archive, md5, file_md5 = _archive(tmp_path)
    dest = tmp_path / "data"
    folder = D.download_cifar10(dest, url=archive.as_uri(), md5=md5, file_md5=file_md5)
    assert D.verify_cifar10(dest, file_md5) == []
    x, _, _ = D.load_cifar10(dest, "train")
    assert len(x) == 25
    # A damaged file is detected and the archive fetched again.
    (folder / "data_batch_3").write_bytes(b"broken")
    D.download_cifar10(dest, url=archive.as_uri(), md5=md5, file_md5=file_md5)
    assert D.verify_cifar10(dest, file_md5) == []


def test_corrupt_download_is_never_used(tmp_path):
    archive, md5, file_md5 = _archive(tmp_path)
    archive.write_bytes(archive.read_bytes()[:-100])  # partial download
    dest = tmp_path / "data"
    with pytest.raises(D.DatasetError, match="MD5"):
        D.download_cifar10(dest, url=archive.as_uri(), md5=md5, file_md5=file_md5)
    assert not (dest / "cifar-10-batches-py").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".download-")]


def test_scan_image_folder(tmp_path):
    for cls, n in (("cat", 3), ("dog", 2)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (40, 30), (i * 50, 0, 0)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    items, classes = D.scan_image_folder(tmp_path)
    assert classes == ("cat", "dog")
    assert [c for _, c in items] == [0, 0, 0, 1, 1]
    with pytest.raises(D.DatasetError, match="no class sub-folders"):
        D.scan_image_folder(tmp_path / "cat")


@pytest.mark.slow
def test_real_cifar10(shared_data):
    assert D.verify_cifar10(shared_data) == []
    x, y, names = D.load_cifar10(shared_data, "test")
    assert x.shape == (10000, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    assert names[3] == "cat"
    assert y[:5].tolist() == [3, 8, 8, 0, 6]  # cat, ship, ship, airplane, frog: the official order
    # Channel means match the published training statistics' ordering (R > G > B) and pixels are
    # spatially smooth, which a wrong CHW -> HWC reshape would destroy.
    means = x.reshape(-1, 3).mean(0)
    assert means[0] > means[1] > means[2]
    smooth = np.abs(np.diff(x[:100].astype(int), axis=2)).mean()
    shuffled = np.abs(np.diff(x[:100].reshape(100, -1)[:, np.random.default_rng(0).permutation(3072)], axis=1)).mean()
    assert smooth < shuffled / 2
