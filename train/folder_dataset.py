"""Train on your own images: root/<class name>/<images>, any size, any number of classes."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from ..runtime.dataset import DatasetError, scan_image_folder
from ..runtime.preprocess import ImageError, prepare


def load_folder_split(root: str, seed: int = 0, test_fraction: float = 0.1):
    """(train_x, train_y, test_x, test_y, class names): a stratified, seeded hold-out split.

    Images go through the same preprocessing as at prediction time, so training sees exactly
    what the exported model will. Unreadable files are skipped and listed."""
    items, classes = scan_image_folder(root)
    images, labels, skipped = [], [], []
    for path, label in tqdm(items, desc="loading images", unit="img"):
        try:
            images.append(prepare(path))
            labels.append(label)
        except ImageError as e:
            skipped.append(str(e))
    for msg in skipped:
        print(f"skipped {msg}")
    if len(classes) < 2:
        raise DatasetError(f"{root}: training needs at least two class folders, found {len(classes)}")
    x, y = np.stack(images), np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    for c in range(len(classes)):
        idx = np.flatnonzero(y == c)
        if len(idx) < 2:
            raise DatasetError(f"{root}/{classes[c]}: needs at least 2 readable images, has {len(idx)}")
        n_test = max(1, int(round(len(idx) * test_fraction)))
        test[rng.choice(idx, n_test, replace=False)] = True
    return x[~test], y[~test], x[test], y[test], classes
