"""Image datasets: Fashion-MNIST checked against pinned checksums/shapes, digits fallback, clear errors."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from normlab.data import images
from normlab.data.images import DatasetUnavailable, load_images

HAVE_FASHION = all((images.FASHION_MNIST_DIR / name).is_file() for name in images._FASHION_FILES)
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason="dataset-fashion-mnist not installed")


def _idx_bytes(magic: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return np.array([magic, *shape], dtype=">u4").tobytes() + payload


@needs_fashion
def test_fashion_mnist_counts_shapes_and_standardization():
    data = load_images("fashion-mnist", fallback=False)
    assert data.name == "fashion-mnist" and data.notice == ""
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.y_train.shape == (60000,) and data.y_test.shape == (10000,)
    # Fashion-MNIST is balanced: 6000 train and 1000 test images per class.
    assert data.y_train.bincount().tolist() == [6000] * 10
    assert data.y_test.bincount().tolist() == [1000] * 10
    assert float(data.x_train.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(data.x_train.std()) == pytest.approx(1.0, abs=1e-4)
    assert data.classes[9] == "Ankle boot"


@needs_fashion
def test_subset_is_deterministic_and_sized():
    a = load_images("fashion-mnist", train_size=500, test_size=200, fallback=False)
    b = load_images("fashion-mnist", train_size=500, test_size=200, fallback=False)
    c = load_images("fashion-mnist", train_size=500, test_size=200, subset_seed=1, fallback=False)
    assert a.x_train.shape == (500, 1, 28, 28) and a.x_test.shape == (200, 1, 28, 28)
    assert a.x_train.equal(b.x_train) and a.y_test.equal(b.y_test)
    assert not a.x_train.equal(c.x_train)


@needs_fashion
def test_corrupted_copy_fails_checksum_with_install_hint(tmp_path, monkeypatch):
    for name in images._FASHION_FILES:
        shutil.copy(images.FASHION_MNIST_DIR / name, tmp_path / name)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[-1] = (raw[-1] + 1) % 10  # one label changed: shape and header still fine
    labels.write_bytes(gzip.compress(bytes(raw)))
    monkeypatch.setenv(images.FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(DatasetUnavailable, match=r"sha256.*apt-get install dataset-fashion-mnist"):
        load_images("fashion-mnist", fallback=False)


def test_missing_dataset_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(images.FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(DatasetUnavailable, match=r"not found.*apt-get install dataset-fashion-mnist"):
        load_images("fashion-mnist", fallback=False)


def test_fallback_to_digits_is_announced(tmp_path, monkeypatch):
    monkeypatch.setenv(images.FASHION_MNIST_ENV, str(tmp_path))
    with pytest.warns(UserWarning, match="fell back to scikit-learn's 8x8 digits"):
        data = load_images("fashion-mnist", train_size=100)
    assert data.name == "digits" and "Fashion-MNIST unavailable" in data.notice
    assert data.x_train.shape == (100, 1, 8, 8)


def test_not_gzip_and_wrong_header_are_rejected(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetUnavailable, match="not valid gzip"):
        images._read_idx(bad, "0" * 64, 2049, (3,))
    raw = _idx_bytes(2051, (3,), bytes([1, 2, 3]))  # images magic where labels are expected
    bad.write_bytes(gzip.compress(raw))
    with pytest.raises(DatasetUnavailable, match="IDX header says magic 2051"):
        images._read_idx(bad, hashlib.sha256(raw).hexdigest(), 2049, (3,))
    good = _idx_bytes(2049, (3,), bytes([4, 5, 6]))
    bad.write_bytes(gzip.compress(good))
    assert images._read_idx(bad, hashlib.sha256(good).hexdigest(), 2049, (3,)).tolist() == [4, 5, 6]


def test_digits_split_is_fixed_disjoint_and_standardized_on_train():
    data = load_images("digits")
    assert data.x_train.shape == (1348, 1, 8, 8) and data.x_test.shape == (449, 1, 8, 8)
    assert float(data.x_train.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(data.x_train.std()) == pytest.approx(1.0, abs=1e-5)
    train_rows = {tuple(r) for r in data.x_train.flatten(1).numpy().round(4)}
    # Disjoint up to duplicate images in the data set itself (a handful of 8x8 digits repeat).
    overlap = sum(tuple(r) in train_rows for r in data.x_test.flatten(1).numpy().round(4))
    assert overlap < 5
    assert load_images("digits").x_test.equal(data.x_test)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "mnist"}, "name must be one of"),
    ({"name": "digits", "train_size": 0}, "train_size must be an int"),
    ({"name": "digits", "test_size": 10**6}, "test_size must be an int"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_images(**kwargs)


def test_pinned_files_cover_the_debian_package_layout():
    assert sorted(images._FASHION_FILES) == sorted(
        f"{split}-{kind}-idx{dim}-ubyte.gz" for split in ("train", "t10k") for kind, dim in (("images", 3), ("labels", 1))
    )
    assert images.FASHION_MNIST_DIR == Path("/usr/share/datasets/fashion-mnist")


@needs_fashion
def test_downsample_is_average_pooling_of_the_standardized_images():
    full = load_images("fashion-mnist", train_size=20, test_size=10, fallback=False)
    half = load_images("fashion-mnist", train_size=20, test_size=10, fallback=False, downsample=2)
    assert half.x_train.shape == (20, 1, 14, 14)
    expected = full.x_test[:, :, :2, :2].mean(dim=(2, 3))  # the top-left 2x2 block of each test image
    assert half.x_test[:, :, 0, 0].allclose(expected, atol=1e-6)
    with pytest.raises(ValueError, match="downsample must be a positive int"):
        load_images("digits", downsample=0)
