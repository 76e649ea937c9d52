"""Real data for the accuracy tasks, available offline.

Every image task arrives as float images (N, 1, 32, 32) in [0, 1] with int64 labels 0..9:
- ``digits``: the 1,797 handwritten digits that scikit-learn ships (8x8, upsampled to 32x32),
  split 80/20, stratified and seeded;
- ``mnist``: a local MNIST in IDX format (``--data-dir``), 28x28 padded to 32x32 as LeNet-5 was.
Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclasses.dataclass(frozen=True)
class ImageTask:
    name: str
    x_train: torch.Tensor  # (N, 1, 32, 32) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor


@functools.lru_cache(maxsize=4)
def load_task(data_dir: str | None = None) -> ImageTask:
    """The accuracy task: MNIST from ``data_dir`` when given, else scikit-learn's digits."""
    if data_dir is not None:
        return load_mnist_idx(Path(data_dir))
    return load_digits_task()


def load_digits_task(test_fraction: float = 0.2, seed: int = 0) -> ImageTask:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8)
    images = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )
    return ImageTask(
        "digits",
        images[idx_train].contiguous(),
        labels[idx_train],
        images[idx_test].contiguous(),
        labels[idx_test],
    )


def _read_idx(path: Path) -> np.ndarray:
    candidates = [path, path.with_name(path.name + ".gz")]
    found = next((p for p in candidates if p.exists()), None)
    if found is None:
        raise FileNotFoundError(f"--data-dir: missing MNIST file {path.name}[.gz] in {path.parent}")
    opener = gzip.open if found.suffix == ".gz" else open
    with opener(found, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"--data-dir: {found} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"--data-dir: {found} is truncated ({data.size} of {np.prod(dims)} values)")
    return data.reshape(dims)


def load_mnist_idx(data_dir: Path) -> ImageTask:
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data-dir: {data_dir} is not a directory")
    arrays = {k: _read_idx(data_dir / v) for k, v in MNIST_FILES.items()}

    def images(a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)  # (N,1,28,28)
        return F.pad(x, (2, 2, 2, 2))  # (N,1,32,32)

    return ImageTask(
        "mnist",
        images(arrays["train_x"]),
        torch.from_numpy(arrays["train_y"].astype(np.int64)),
        images(arrays["test_x"]),
        torch.from_numpy(arrays["test_y"].astype(np.int64)),
    )
