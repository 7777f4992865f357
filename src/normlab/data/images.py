"""Small real image datasets that are available offline, checked before use.

* **Fashion-MNIST** (Xiao, Rasul & Vollgraf 2017; 60,000 train + 10,000 test 28x28 grey images, 10
  classes) as shipped by Debian's ``dataset-fashion-mnist`` package under
  ``/usr/share/datasets/fashion-mnist`` (four gzipped IDX files). The loader checks every file's
  decompressed SHA-256 (pinned below, so a re-compressed package still passes), the IDX magic numbers,
  the shapes and the counts, and fails with a message that says how to install the package.
* **digits** (scikit-learn's copy of the UCI 8x8 handwritten digits, 1,797 images, 10 classes), used by
  quick presets and as the fallback when Fashion-MNIST is absent (with a visible notice).

Images come back as float32 tensors ``(N, 1, H, W)`` standardized with the *training* split's mean and
std (one scalar each, so no test information leaks into the transform), labels as int64 ``(N,)``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "NORMLAB_FASHION_MNIST_DIR"  # override the directory (tests, other distros)
INSTALL_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four "
    "*-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist in a directory and set "
    f"{FASHION_MNIST_ENV} to it"
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# file name -> (sha256 of the decompressed IDX bytes, IDX magic, shape). Measured on Debian bookworm's
# dataset-fashion-mnist 0.0~git20200523.55506a9-1; the decompressed bytes are upstream's.
_FASHION_FILES: dict[str, tuple[str, int, tuple[int, ...]]] = {
    "train-images-idx3-ubyte.gz": (
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte.gz": (
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 2049, (60000,)),
    "t10k-images-idx3-ubyte.gz": (
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte.gz": (
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 2049, (10000,)),
}

DATASETS = ("fashion-mnist", "digits")
SPLIT_SIZES = {"fashion-mnist": (60000, 10000), "digits": (1348, 449)}  # (train, test) images per dataset


def check_subset_sizes(name: str, train_size: int | None, test_size: int | None) -> None:
    """A clear ``ValueError`` when ``train_size`` or ``test_size`` exceeds dataset ``name``'s split (checked
    before a run starts; when Fashion-MNIST falls back to digits, the loader clamps to the digits' splits)."""
    for what, value, most in (("train_size", train_size, SPLIT_SIZES[name][0]),
                              ("test_size", test_size, SPLIT_SIZES[name][1])):
        if value is not None and value > most:
            raise ValueError(f"{what}: expected None or an integer in [1, {most}] ({name} has {most} "
                             f"{what.split('_')[0]} images), got {value}")


class DatasetUnavailable(RuntimeError):
    """The requested dataset is missing or its files do not check out."""


@dataclass
class ImageData:
    """A train/test split of images ``(N, 1, H, W)`` float32 and labels ``(N,)`` int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    notice: str = ""  # non-empty when the loader substituted another dataset

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def record(self) -> pd.DataFrame:
        """One row saying which images a cell trained on (a study stores it, so its report names the dataset
        actually used, e.g. digits after a fallback): name, the loader's notice, split sizes, image size."""
        return pd.DataFrame({"dataset": [self.name], "notice": [self.notice], "train_size": [len(self.x_train)],
                             "test_size": [len(self.x_test)], "image_size": [self.x_train.shape[-1]]})


def _read_idx(path: Path, sha256: str, magic: int, shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise DatasetUnavailable(f"Fashion-MNIST file {path} not found; {INSTALL_HINT}")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as err:
        raise DatasetUnavailable(f"Fashion-MNIST file {path} is not valid gzip ({err}); {INSTALL_HINT}") from err
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise DatasetUnavailable(
            f"Fashion-MNIST file {path}: sha256 of its contents is {digest}, expected {sha256} "
            f"(corrupt or a different dataset); {INSTALL_HINT}"
        )
    header_len = 4 * (1 + len(shape))
    header = np.frombuffer(raw[:header_len], dtype=">u4")
    if int(header[0]) != magic or tuple(int(d) for d in header[1:]) != shape:
        raise DatasetUnavailable(
            f"Fashion-MNIST file {path}: IDX header says magic {int(header[0])}, shape "
            f"{tuple(int(d) for d in header[1:])}; expected magic {magic}, shape {shape}"
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header_len)
    if data.size != int(np.prod(shape)):
        raise DatasetUnavailable(f"Fashion-MNIST file {path}: {data.size} values, expected {np.prod(shape)}")
    return data.reshape(shape)


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get(FASHION_MNIST_ENV, FASHION_MNIST_DIR))


@functools.lru_cache(maxsize=2)  # a study loads it once per cell; decompressing and hashing each time would dominate small cells
def _load_fashion_arrays(root: Path) -> tuple[np.ndarray, ...]:
    arrays = [_read_idx(root / name, *spec) for name, spec in _FASHION_FILES.items()]
    for labels in (arrays[1], arrays[3]):
        if labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DatasetUnavailable(f"Fashion-MNIST labels out of range: max {labels.max()}")
    return tuple(arrays)


def _load_digits_arrays() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)  # (1797, 8, 8), values 0..16
    labels = digits.target.astype(np.int64)
    # A fixed stratified-enough split: a seeded permutation, 1/4 held out (the set has no official split).
    order = np.random.default_rng(0).permutation(len(labels))
    n_test = len(labels) // 4
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]


def _subset(n_wanted: int | None, n_have: int, rng: np.random.Generator, what: str) -> np.ndarray:
    if n_wanted is None:
        return np.arange(n_have)
    if not isinstance(n_wanted, int) or not 1 <= n_wanted <= n_have:
        raise ValueError(f"{what} must be an int in [1, {n_have}] or None, got {n_wanted!r}")
    return np.sort(rng.choice(n_have, size=n_wanted, replace=False))


def load_images(
    name: str = "fashion-mnist",
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    subset_seed: int = 0,
    fallback: bool = True,
    downsample: int = 1,
) -> ImageData:
    """Load ``name`` (``"fashion-mnist"`` or ``"digits"``), optionally a random subset of each split.

    Args:
        name: which dataset.
        train_size, test_size: number of examples to keep (a uniformly random subset drawn with
            ``subset_seed``, the same for every caller); None keeps the whole split.
        fallback: when Fashion-MNIST is unavailable, load ``digits`` instead and say so in
            ``ImageData.notice`` and a warning; when False, raise :class:`DatasetUnavailable`.
        downsample: average-pool the (standardized) Fashion-MNIST images by this factor (2: 28x28 ->
            14x14, a quarter of the compute). Ignored for 8x8 ``digits``, already small.
    """
    if not isinstance(downsample, int) or downsample < 1:
        raise ValueError(f"load_images: downsample must be a positive int, got {downsample!r}")
    if name not in DATASETS:
        raise ValueError(f"load_images: name must be one of {DATASETS}, got {name!r}")
    notice = ""
    if name == "fashion-mnist":
        try:
            arrays = _load_fashion_arrays(fashion_mnist_dir())
            classes = FASHION_MNIST_CLASSES
        except DatasetUnavailable as err:
            if not fallback:
                raise
            notice = f"Fashion-MNIST unavailable, fell back to scikit-learn's 8x8 digits: {err}"
            warnings.warn(notice, stacklevel=2)
            name = "digits"
    if name == "digits":
        arrays = _load_digits_arrays()
        classes = tuple(str(d) for d in range(10))
    x_train, y_train, x_test, y_test = arrays
    rng = np.random.default_rng(subset_seed)
    train_idx = _subset(train_size if not notice else min(train_size or len(y_train), len(y_train)),
                        len(y_train), rng, "train_size")
    test_idx = _subset(test_size if not notice else min(test_size or len(y_test), len(y_test)),
                       len(y_test), rng, "test_size")
    x_train = np.asarray(x_train[train_idx], dtype=np.float32)
    x_test = np.asarray(x_test[test_idx], dtype=np.float32)
    mean, std = float(x_train.mean()), float(x_train.std())  # training split only: no test leakage

    def as_tensor(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy((x - mean) / std).unsqueeze(1).contiguous()  # (N, 1, H, W)
        return F.avg_pool2d(t, downsample) if downsample > 1 and name == "fashion-mnist" else t

    return ImageData(
        name=name,
        x_train=as_tensor(x_train),
        y_train=torch.from_numpy(np.asarray(y_train[train_idx], dtype=np.int64)),
        x_test=as_tensor(x_test),
        y_test=torch.from_numpy(np.asarray(y_test[test_idx], dtype=np.int64)),
        classes=classes,
        notice=notice,
    )
