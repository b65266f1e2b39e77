"""CIFAR-10 reading without unpickling, download with MD5 checks, labelled image folders."""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
import struct
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


# ----------------------------------------------------------------------------------------------
# Labels at the boundary of the class list


def _batch_with_labels(root: Path, labels: list[int], names: tuple[str, ...] | None = None) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = synthetic_images(len(labels), 5)
    write_batch(folder / "test_batch", images, np.array(labels))
    if names is not None:
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [n.encode() for n in names]}, f, protocol=3)
    return root


def test_labels_from_zero_to_the_last_class_are_accepted(tmp_path):
    _, y, names = D.load_cifar10(_batch_with_labels(tmp_path / "ten", [0, 9, 5, 9, 0]), "test")
    assert y.tolist() == [0, 9, 5, 9, 0] and len(names) == 10
    _, y, names = D.load_cifar10(_batch_with_labels(tmp_path / "three", [2, 0, 1], ("a", "b", "c")), "test")
    assert y.tolist() == [2, 0, 1] and names == ("a", "b", "c")


@pytest.mark.parametrize(
    ("labels", "names", "found"),
    [
        ([0, 10, 3], None, "labels must be 0..9, found 0..10"),
        ([5, -1, 9], None, "labels must be 0..9, found -1..9"),
        ([0, 1, 3], ("a", "b", "c"), "labels must be 0..2, found 0..3"),
    ],
)
def test_labels_outside_the_class_list_are_refused(tmp_path, labels, names, found):
    root = _batch_with_labels(tmp_path, labels, names)
    with pytest.raises(D.DatasetError) as e:
        D.load_cifar10(root, "test")
    assert str(e.value) == f"{root / 'cifar-10-batches-py' / 'test_batch'}: {found}"


# ----------------------------------------------------------------------------------------------
# Corrupt and malicious batches


def _malicious(marker: Path, protocol: int, top_level: bool = False) -> bytes:
    evil = _Evil(marker)
    obj = evil if top_level else {b"batch_label": b"x", b"labels": [1, 2], b"data": evil}
    return pickle.dumps(obj, protocol=protocol)


def test_corrupt_and_malicious_batches(tmp_path):
    marker = tmp_path / "MARKER"
    images, labels = synthetic_images(20, 3)
    write_batch(tmp_path / "good", images, labels)
    good = (tmp_path / "good").read_bytes()
    cases = {
        "truncated-last-byte": good[:-1],
        "text": b"data_batch_1\n",
        "not-a-dict": pickle.dumps([1, 2, 3], protocol=3),
        "no-labels": pickle.dumps({b"data": np.zeros((20, 3072), np.uint8)}, 3),
        "wrong-shape": pickle.dumps({b"data": np.zeros((20, 100), np.uint8), b"labels": list(range(20))}, 3),
        "float-data": pickle.dumps({b"data": np.zeros((20, 3072), np.float32), b"labels": list(range(20))}, 3),
        "fortran-data": pickle.dumps(
            {b"data": np.asfortranarray(np.zeros((20, 3072), np.uint8)), b"labels": list(range(20))}, 3
        ),
        "label-count": pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 3}, 3),
    }
    for protocol in (0, 1, 2, 3, 4, 5):
        cases[f"evil-p{protocol}"] = _malicious(marker, protocol)
        cases[f"evil-top-p{protocol}"] = _malicious(marker, protocol, top_level=True)
    for name, data in cases.items():
        f = tmp_path / name
        f.write_bytes(data)
        with pytest.raises(D.DatasetError) as e:
            D.read_batch(f)
        assert str(e.value).startswith(f"{f}: not a valid CIFAR-10 batch ("), (name, str(e.value))
    meta = tmp_path / "meta" / "batches.meta"
    meta.parent.mkdir()
    meta.write_bytes(_malicious(marker, 2, top_level=True))
    with pytest.raises(D.DatasetError, match="batches.meta: not a valid CIFAR-10 meta file"):
        D.read_meta(meta.parent)
    assert not marker.exists(), "unpickling ran code"


@pytest.mark.parametrize("protocol", [3, 4])
def test_python3_pickle_protocols_read_back(tmp_path, protocol):
    """What Python 3's pickle writes for a batch (the official files are Python 2's protocol 2, read
    in test_real_cifar10), with the plain values the reader must understand around it."""
    images, labels = synthetic_images(6, protocol)
    flat = images.transpose(0, 3, 1, 2).reshape(6, -1)
    extra = [None, True, False, 1.5, -3, 2**40, "text", (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), {"k": [1, 2]}]
    obj = {b"batch_label": b"p", b"labels": [int(v) for v in labels], b"data": flat, "extra": extra, "again": extra}
    (tmp_path / "b").write_bytes(pickle.dumps(obj, protocol=protocol))
    x, y = D.read_batch(tmp_path / "b")
    np.testing.assert_array_equal(x, images)
    assert y.tolist() == [int(v) for v in labels] and y.dtype == np.int64
    fine = {b"data": flat, b"fine_labels": [1, 2, 3, 4, 5, 6]}  # CIFAR-100's key for the labels
    (tmp_path / "c").write_bytes(pickle.dumps(fine, protocol=protocol))
    assert D.read_batch(tmp_path / "c")[1].tolist() == [1, 2, 3, 4, 5, 6]


# ----------------------------------------------------------------------------------------------
# The download's single retry, over a real HTTP connection on the loopback interface


class _ArchiveServer:
    """Serves one archive on 127.0.0.1; the first `bad` requests get it cut short."""

    def __init__(self, data: bytes, bad: int):
        import http.server
        import threading

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                server.requests += 1
                body = data[: len(data) // 2] if server.requests <= bad else data
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        self.requests = 0
        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("bad", [0, 1, 2])
def test_download_retries_exactly_once(tmp_path, bad):
    from cifar10kit.runtime.download import download_cifar10

    archive, md5, file_md5 = _archive(tmp_path)
    server = _ArchiveServer(archive.read_bytes(), bad)
    notes: list[str] = []
    dest = tmp_path / "data"
    try:
        if bad < 2:
            folder = download_cifar10(dest, url=server.url, md5=md5, file_md5=file_md5, log=notes.append)
            assert D.verify_cifar10(dest, file_md5) == [] and folder == dest / "cifar-10-batches-py"
        else:
            with pytest.raises(D.DatasetError, match=f"expected {md5}, twice"):
                download_cifar10(dest, url=server.url, md5=md5, file_md5=file_md5, log=notes.append)
            assert not (dest / "cifar-10-batches-py").exists()
    finally:
        server.close()
    assert server.requests == min(bad + 1, 2)
    retries = [n for n in notes if "corrupt or partial" in n and n.endswith("retrying")]
    assert len(retries) == min(bad, 1) and len(notes) == len(retries)
    assert not [p for p in dest.iterdir() if p.name.startswith(".download-")]


# ----------------------------------------------------------------------------------------------
# Batches written the way Python 2's cPickle wrote the official files (protocol 2: str values are
# SHORT_BINSTRING/BINSTRING, the array is numpy's _reconstruct + BUILD), assembled opcode by opcode
# so that hostile variants of the same layout can be built too.


def _str(b: bytes) -> bytes:
    """A Python 2 str: SHORT_BINSTRING below 256 bytes, BINSTRING above (the pixel data)."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])  # BININT1
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)  # BININT2
    return b"J" + struct.pack("<i", n)  # BININT


def _global(module: bytes, name: bytes) -> bytes:
    return b"c" + module + b"\n" + name + b"\n"


U8_DTYPE = _global(b"numpy", b"dtype") + _str(b"u1") + _int(0) + _int(1) + b"\x87R"  # dtype('u1', 0, 1)
U8_DTYPE += b"(" + _int(3) + _str(b"|") + b"NNN" + _int(-1) + _int(-1) + _int(0) + b"tb"  # its state


def _reconstruct(state: bytes) -> bytes:
    """_reconstruct(ndarray, (0,), 'b') then BUILD with the opcodes of `state` as a MARK..TUPLE."""
    call = _global(b"numpy.core.multiarray", b"_reconstruct") + _global(b"numpy", b"ndarray")
    call += _int(0) + b"\x85" + _str(b"b") + b"\x87R"  # TUPLE1, TUPLE3, REDUCE
    return call + b"(" + state + b"tb"


def _py2_array(shape: tuple[int, int], raw: bytes, dtype: bytes = U8_DTYPE, fortran: bool = False) -> bytes:
    """numpy's array as in the official files: state (1, shape, dtype, fortran, raw)."""
    shape_tuple = _int(shape[0]) + _int(shape[1]) + b"\x86"  # TUPLE2
    return _reconstruct(_int(1) + shape_tuple + dtype + (b"\x88" if fortran else b"\x89") + _str(raw))


def _py2_batch(data: bytes, labels: list[int]) -> bytes:
    """{'batch_label': ..., 'labels': [...], 'data': <data>} with SETITEMS and APPENDS, like the official files."""
    items = _str(b"batch_label") + _str(b"testing batch 1 of 1")
    items += _str(b"labels") + b"](" + b"".join(_int(v) for v in labels) + b"e"
    return b"\x80\x02}(" + items + _str(b"data") + data + b"u."


def test_python2_batch_like_the_official_files_reads_back(tmp_path):
    images, labels = synthetic_images(4, 7)
    flat = images.transpose(0, 3, 1, 2).reshape(4, -1)
    path = tmp_path / "data_batch_1"
    path.write_bytes(_py2_batch(_py2_array((4, 3072), flat.tobytes()), [int(v) for v in labels]))
    # The writer is faithful: numpy itself unpickles what it wrote (safe here: we wrote every opcode).
    unpickled = pickle.loads(path.read_bytes(), encoding="bytes")
    np.testing.assert_array_equal(unpickled[b"data"], flat)
    assert unpickled[b"labels"] == labels.tolist()
    x, y = D.read_batch(path)
    np.testing.assert_array_equal(x, images)
    assert y.tolist() == labels.tolist() and y.dtype == np.int64


def test_empty_batch_reads_back_with_int64_labels(tmp_path):
    """No images at all is a valid batch; an empty label list must still come back as int64."""
    py2 = tmp_path / "py2"
    py2.write_bytes(_py2_batch(_py2_array((0, 3072), b""), []))  # '](e': a MARK with nothing above it
    py3 = tmp_path / "py3"
    py3.write_bytes(pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, protocol=3))
    for path in (py2, py3):
        x, y = D.read_batch(path)
        assert x.shape == (0, 32, 32, 3) and x.dtype == np.uint8
        assert y.shape == (0,) and y.dtype == np.int64


# ----------------------------------------------------------------------------------------------
# The reader agrees with pickle.loads on data-only pickles. read_meta hands back whatever list is
# stored under 'label_names', so it shows every value the reader built.


def _meta_names(tmp_path: Path, data: bytes) -> tuple:
    folder = tmp_path / "meta"
    folder.mkdir(exist_ok=True)
    (folder / "batches.meta").write_bytes(data)
    return D.read_meta(folder)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_memo_and_small_containers_read_back_like_pickle(tmp_path, protocol):
    shared = [1, 2]
    many = [f"name{i}" for i in range(300)]  # past 256 memo entries: LONG_BINPUT / LONG_BINGET
    values = [(), (1,), [7], shared, (3, 4), shared, "x", *many, many[3], many[299], [shared]]
    data = pickle.dumps({"label_names": values}, protocol=protocol)  # a str key: protocol 2 has no bytes
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    assert {"EMPTY_TUPLE", "APPEND", "BINGET", "LONG_BINGET"} <= ops  # what this test is about
    assert ({"BINPUT", "LONG_BINPUT"} if protocol < 4 else {"MEMOIZE"}) <= ops
    got = _meta_names(tmp_path, data)
    assert got == tuple(values) == tuple(pickle.loads(data)["label_names"])
    assert got[3] is got[5] and got[-1][0] is got[3]  # a memo reference is the same object, as in pickle


def test_python2_strings_and_marks_with_nothing_after_them(tmp_path):
    """Python 2 str values become bytes (as pickle.loads(encoding='bytes') gives them); a MARK
    directly followed by TUPLE/APPENDS/SETITEMS makes an empty container."""
    names = b"](" + _str(b"cat") + _str("caf\xe9".encode("latin-1")) + b"(t" + b"](e" + b"}(u" + _str(b"x" * 300) + b"e"
    data = b"\x80\x02}" + _str(b"label_names") + names + b"s."
    expected = ("cat", "caf\xe9", (), [], {}, "x" * 300)  # read_meta decodes bytes names as latin-1
    loaded = pickle.loads(data, encoding="bytes")[b"label_names"]
    assert tuple(v.decode("latin-1") if isinstance(v, bytes) else v for v in loaded) == expected
    assert _meta_names(tmp_path, data) == expected


# ----------------------------------------------------------------------------------------------
# Why a batch is refused: the reason in the message, for each kind of damage

HINT = "download it with `cifar10 download --data-dir {}`, or pass --data-dir / set $CIFAR10_DATA to a copy"


def _reason(path: Path) -> str:
    """The reason read_batch gives (in brackets) for refusing `path`; the rest of the message is fixed."""
    with pytest.raises(D.DatasetError) as e:
        D.read_batch(path)
    prefix = f"{path}: not a valid CIFAR-10 batch ("
    suffix = f"); delete it and {HINT.format(path.parent)}"
    message = str(e.value)
    assert message.startswith(prefix) and message.endswith(suffix), message
    return message[len(prefix) : -len(suffix)]


U8_ZEROS = np.zeros((2, 3072), np.uint8)
NOT_NUMPY_DTYPE = _global(b"numpy", b"not dtype") + _str(b"u1") + _int(0) + _int(1) + b"\x87R"

REFUSALS = {
    # What the reader builds is not a batch
    "not-a-dict": (pickle.dumps([1, 2, 3], 3), "top level is not a dict"),
    "no-labels": (pickle.dumps({b"data": U8_ZEROS}, 3), "no 'data' and 'labels' entries"),
    "no-data": (pickle.dumps({b"labels": [0, 1]}, 3), "no 'data' and 'labels' entries"),
    "wrong-shape": (
        pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, 3),
        "data shape (2, 100) and 2 labels do not match",
    ),
    "label-count": (
        pickle.dumps({b"data": U8_ZEROS, b"labels": [0, 1, 2]}, 3),
        "data shape (2, 3072) and 3 labels do not match",
    ),
    "3d-data": (
        pickle.dumps({b"data": np.zeros((2, 3, 1024), np.uint8), b"labels": [0, 1]}, 3),
        "data shape (2, 3, 1024) and 2 labels do not match",
    ),
    # 'data' is not numpy's array reconstruction
    "bytes-data": (pickle.dumps({b"data": bytes(6144), b"labels": [0, 1]}, 3), "'data' is not a numpy array"),
    "list-data": (pickle.dumps({b"data": [0] * 6144, b"labels": [0, 1]}, 3), "'data' is not a numpy array"),
    "other-callable": (
        _py2_batch(_global(b"os", b"system") + _str(b"true") + b"\x85R" + b"(" + b"NNNNN" + b"tb", [0]),
        "'data' is not a numpy array",
    ),
    "four-field-state": (
        _py2_batch(_reconstruct(_int(1) + _int(3072) + b"\x85" + U8_DTYPE + _str(bytes(3072))), [0]),
        "'data' is not a numpy array",
    ),
    # ... or not one of C-ordered uint8
    "float-data": (
        pickle.dumps({b"data": U8_ZEROS.astype(np.float32), b"labels": [0, 1]}, 3),
        "'data' is not a C-ordered uint8 array",
    ),
    "fortran-data": (
        _py2_batch(_py2_array((1, 3072), bytes(3072), fortran=True), [0]),
        "'data' is not a C-ordered uint8 array",
    ),
    "plain-dtype": (
        _py2_batch(_py2_array((1, 3072), bytes(3072), dtype=b"N"), [0]),
        "'data' is not a C-ordered uint8 array",
    ),
    "dtype-named-otherwise": (
        _py2_batch(_py2_array((1, 3072), bytes(3072), dtype=NOT_NUMPY_DTYPE), [0]),
        "'data' is not a C-ordered uint8 array",
    ),
    "short-data": (
        _py2_batch(_py2_array((2, 3072), bytes(100)), [0, 1]),
        "'data' holds 100 bytes, its shape (2, 3072) needs 6144",
    ),
    # Not a data-only pickle, or not one this reader understands
    "callable-key": (
        pickle.dumps({b"data": U8_ZEROS, b"labels": [0, 1], frozenset({1}): 0}, 3),
        "it is not a data-only pickle",
    ),
    "build-on-a-value": (b"\x80\x02}}b.", "BUILD on a plain value"),
    "protocol-0": (pickle.dumps({b"data": 1}, 0), "unsupported pickle opcode DICT"),
    "tuple-without-mark": (b"\x80\x02t.", "MARK missing"),
    "appends-without-mark": (b"\x80\x02]K\x01e.", "MARK missing"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusal_says_why(tmp_path, case):
    data, reason = REFUSALS[case]
    path = tmp_path / "data_batch_1"
    path.write_bytes(data)
    assert _reason(path) == reason


def test_refusal_inside_the_cifar_folder_points_at_the_data_dir(tmp_path):
    """The download hint names the folder that holds cifar-10-batches-py, as --data-dir expects."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"\x80\x02t.")
    with pytest.raises(D.DatasetError) as e:
        D.read_batch(folder / "test_batch")
    assert str(e.value) == (
        f"{folder / 'test_batch'}: not a valid CIFAR-10 batch (MARK missing); delete it and {HINT.format(tmp_path)}"
    )


def test_download_hint_quotes_the_folder():
    assert D.download_hint(Path("/data/my cifar")) == HINT.format("'/data/my cifar'")
    assert D.download_hint(Path("/data/cifar")) == HINT.format("/data/cifar")


def test_unreadable_batch_says_why(tmp_path):
    with pytest.raises(D.DatasetError) as e:
        D.read_batch(tmp_path / "test_batch")
    assert str(e.value) == f"{tmp_path / 'test_batch'}: cannot read (No such file or directory)"
    with pytest.raises(D.DatasetError) as e:
        D.read_batch(tmp_path)
    assert str(e.value) == f"{tmp_path}: cannot read (Is a directory)"


def test_missing_files_are_listed_by_name(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    with pytest.raises(D.DatasetError) as e:
        D.load_cifar10(tmp_path)  # the default split is 'test'
    assert str(e.value) == f"{folder}: CIFAR-10 test files missing (test_batch); {HINT.format(tmp_path)}"
    folder.mkdir()
    for name in ("data_batch_1", "data_batch_3", "data_batch_4"):
        (folder / name).write_bytes(b"")  # only their presence is checked before anything is read
    with pytest.raises(D.DatasetError) as e:
        D.load_cifar10(folder, "train")
    assert str(e.value) == (
        f"{folder}: CIFAR-10 train files missing (data_batch_2, data_batch_5); {HINT.format(tmp_path)}"
    )


def test_default_split_is_test(tmp_path):
    root = make_tiny_cifar(tmp_path, per_batch=3, test=7)
    x, y, _ = D.load_cifar10(root)
    np.testing.assert_array_equal(x, D.read_batch(root / "cifar-10-batches-py" / "test_batch")[0])
    assert len(y) == 7


def test_scan_image_folder_refusals_and_hidden_folders(tmp_path):
    with pytest.raises(D.DatasetError) as e:
        D.scan_image_folder(tmp_path / "absent")
    assert str(e.value) == f"{tmp_path / 'absent'}: not a folder; expected one sub-folder per class"
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(D.DatasetError) as e:
        D.scan_image_folder(tmp_path)
    suffixes = ".png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff, .ppm, .pgm, .pbm"
    assert str(e.value) == f"{tmp_path}: class folders hold no images ({suffixes})"
    # Hidden folders (.thumbnails, .ipynb_checkpoints...) are not classes, even with images inside.
    (tmp_path / ".thumbnails").mkdir()
    for folder in ("cat", ".thumbnails"):
        Image.new("RGB", (8, 8)).save(tmp_path / folder / "0.png")
    items, classes = D.scan_image_folder(tmp_path)
    assert classes == ("cat",) and items == [(tmp_path / "cat" / "0.png", 0)]
