"""Datasets without PyTorch: the official CIFAR-10 batches, and folders of images, one sub-folder a class.

The CIFAR-10 "python version" batches are pickles. Unpickling runs code named by the file, so we
never call `pickle.load` on them. `read_batch` walks the pickle's opcodes with `pickletools.genops`
(a parser, it executes nothing) on a tiny stack machine that knows only data opcodes: strings,
numbers, lists, dicts, tuples. References to callables (GLOBAL, REDUCE, BUILD) become inert records;
the one shape we accept, numpy's array reconstruction with a uint8 dtype and the right byte count,
is decoded by hand with `np.frombuffer`. A file that is anything else is rejected with its name.
"""

from __future__ import annotations

import os
import pickletools
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .contract import CIFAR10_CLASSES
from .download import CIFAR_MD5, CIFAR_URL, FILE_MD5, download_cifar10, file_digest, verify_cifar10
from .locations import CIFAR_DIRNAME, DATA_ENV, DatasetError, default_data_dir, resolve_data_dir
from .preprocess import IMAGE_SUFFIXES, is_image_file

# Names other modules import from here; they live in download.py, locations.py and preprocess.py.
__all__ = [
    "CIFAR_DIRNAME",
    "CIFAR_MD5",
    "CIFAR_URL",
    "DATA_ENV",
    "FILE_MD5",
    "DatasetError",
    "default_data_dir",
    "download_cifar10",
    "file_digest",
    "load_cifar10",
    "read_batch",
    "read_meta",
    "resolve_data_dir",
    "scan_image_folder",
    "verify_cifar10",
]
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)


def download_hint(root: Path) -> str:
    """What to type to get the data into `root` (every message that asks for a download uses it)."""
    command = f"cifar10 download --data-dir {shlex.quote(str(root))}"
    return f"download it with `{command}`, or pass --data-dir / set ${DATA_ENV} to a copy"


# ----------------------------------------------------------------------------------------------
# A pickle reader that executes nothing


@dataclass
class _Global:
    module: str
    name: str


@dataclass
class _Call:
    func: Any
    args: tuple
    state: Any = None


_MARK = object()
_STRING_OPS = {"SHORT_BINSTRING", "BINSTRING"}  # Python 2 str: raw bytes, genops decodes latin-1
_BYTES_OPS = {"SHORT_BINBYTES", "BINBYTES", "BINBYTES8"}
_UNICODE_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
_INT_OPS = {"BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT"}


def _pop_mark(stack: list) -> list:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise ValueError("MARK missing")


def _parse_pickle(data: bytes) -> Any:
    """Evaluate the data-only subset of pickle; callables are recorded, never resolved."""
    stack: list = []
    memo: dict[int, Any] = {}
    # genops stops right after STOP and raises ValueError when the data ends before it, so the loop
    # always finishes at STOP with the pickled object on top of the stack.
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name in ("PROTO", "FRAME", "STOP"):
            continue
        if name == "MARK":
            stack.append(_MARK)
        elif name in _STRING_OPS:
            stack.append(arg.encode("latin-1"))
        elif name in _BYTES_OPS or name in _UNICODE_OPS or name in _INT_OPS:
            stack.append(arg)
        elif name == "NONE":
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name == "TUPLE":
            stack.append(tuple(_pop_mark(stack)))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "APPEND":
            item = stack.pop()
            stack[-1].append(item)
        elif name == "APPENDS":
            items = _pop_mark(stack)
            stack[-1].extend(items)
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            stack[-1][key] = value
        elif name == "SETITEMS":
            items = _pop_mark(stack)
            stack[-1].update(zip(items[::2], items[1::2]))
        elif name in ("BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif name == "GLOBAL":
            module, _, attr = arg.partition(" ")
            stack.append(_Global(module, attr))
        elif name == "STACK_GLOBAL":
            attr, module = stack.pop(), stack.pop()
            stack.append(_Global(module, attr))
        elif name == "REDUCE":
            args = stack.pop()
            stack.append(_Call(stack.pop(), args))
        elif name == "BUILD":
            state = stack.pop()
            if not isinstance(stack[-1], _Call):
                raise ValueError("BUILD on a plain value")
            stack[-1].state = state
        else:
            raise ValueError(f"unsupported pickle opcode {name}")
    return stack.pop()


_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}


def _decode_uint8_array(obj: Any) -> np.ndarray:
    """numpy's pickled array, (reconstruct, state=(ver, shape, dtype, fortran, raw)), as uint8."""
    ok = isinstance(obj, _Call) and isinstance(obj.func, _Global)
    ok = ok and (obj.func.module, obj.func.name) in _RECONSTRUCT and isinstance(obj.state, tuple)
    if not ok or len(obj.state) != 5:
        raise ValueError("'data' is not a numpy array")
    _, shape, dtype, fortran, raw = obj.state
    dtype_ok = isinstance(dtype, _Call) and isinstance(dtype.func, _Global)
    dtype_ok = dtype_ok and dtype.func.name == "dtype" and _key(dtype.args[0]) == "u1"
    if not dtype_ok or fortran or not isinstance(raw, bytes):
        raise ValueError("'data' is not a C-ordered uint8 array")
    shape = tuple(int(s) for s in shape)
    if int(np.prod(shape)) != len(raw):
        raise ValueError(f"'data' holds {len(raw)} bytes, its shape {shape} needs {np.prod(shape)}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _key(k: Any) -> Any:
    return k.decode("latin-1") if isinstance(k, bytes) else k


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file as (images uint8 [N,32,32,3] RGB, labels int64 [N])."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        obj = _parse_pickle(data)
        if not isinstance(obj, dict):
            raise ValueError("top level is not a dict")
        obj = {_key(k): v for k, v in obj.items()}
        if "data" not in obj or not ("labels" in obj or "fine_labels" in obj):
            raise ValueError("no 'data' and 'labels' entries")
        flat = _decode_uint8_array(obj["data"])
        labels = np.asarray(obj.get("labels", obj.get("fine_labels")), dtype=np.int64)
        if flat.ndim != 2 or flat.shape[1] != 3 * 32 * 32 or len(labels) != len(flat):
            raise ValueError(f"data shape {flat.shape} and {len(labels)} labels do not match")
    except Exception as e:  # noqa: BLE001 - any parse failure means a corrupt or foreign file
        if isinstance(e, TypeError):  # e.g. dict keys built by a callable: not a data-only pickle
            e = ValueError("it is not a data-only pickle")
        raise DatasetError(
            f"{path}: not a valid CIFAR-10 batch ({e}); delete it and "
            f"{download_hint(path.parent.parent if path.parent.name == CIFAR_DIRNAME else path.parent)}"
        ) from None
    images = flat.reshape(len(flat), 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_meta(folder: Path) -> tuple[str, ...]:
    """Class names from batches.meta, or the standard ten when the file is absent."""
    meta = folder / "batches.meta"
    if not meta.exists():
        return CIFAR10_CLASSES
    try:
        obj = {_key(k): v for k, v in _parse_pickle(meta.read_bytes()).items()}
        return tuple(_key(n) for n in obj["label_names"])
    except Exception as e:  # noqa: BLE001
        raise DatasetError(f"{meta}: not a valid CIFAR-10 meta file ({e})") from None


def load_cifar10(
    data_dir: str | os.PathLike | None, split: str = "test"
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(images uint8 [N,32,32,3], labels int64 [N], class names) for split 'train' or 'test'."""
    folder = resolve_data_dir(data_dir) / CIFAR_DIRNAME
    files = TRAIN_FILES if split == "train" else TEST_FILES
    missing = [f for f in files if not (folder / f).exists()]
    if missing:
        raise DatasetError(
            f"{folder}: CIFAR-10 {split} files missing ({', '.join(missing)}); {download_hint(folder.parent)}"
        )
    names = read_meta(folder)
    parts = [read_batch(folder / f) for f in files]
    for f, (_, y) in zip(files, parts):
        if len(y) and (y.min() < 0 or y.max() >= len(names)):
            raise DatasetError(f"{folder / f}: labels must be 0..{len(names) - 1}, found {y.min()}..{y.max()}")
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, names


# ----------------------------------------------------------------------------------------------
# Folders of images: root/<class name>/<image files>


def scan_image_folder(root: str | os.PathLike) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """[(path, class index)] and class names (sorted sub-folder names) of a labelled folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; expected one sub-folder per class")
    classes = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    if not classes:
        raise DatasetError(f"{root}: no class sub-folders; put each class's images in root/<class>/")
    items = []
    for index, name in enumerate(classes):
        items.extend((f, index) for f in sorted((root / name).rglob("*")) if is_image_file(f))
    if not items:
        raise DatasetError(f"{root}: class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    return items, classes
