"""Deterministic sample inputs per model, from data that ships with packages or this repo.

- iris: all 150 rows of scikit-learn's bundled iris data (float32).
- mnist: the first 1,000 MNIST test digits (uint8) in samples/mnist_test_1000.npz, written
  by scripts/train_models.py.
- face: scikit-image's sample photos (astronaut, camera, coffee: one has no face), resized
  so the longest side is each requested size and encoded as JPEG, quality 90, by Pillow.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np

from .contract import Batch, EncodedImage, Family

SAMPLES = Path(__file__).resolve().parent / "samples"
PHOTOS = ("astronaut", "camera", "coffee")
FACE_SIZES = (160, 320, 512)


@functools.cache
def _iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y.astype(np.int64)


def iris_rows(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(rows (N, 4) float32, labels (N,)); all 150 when n is None, cycling when n > 150."""
    x, y = _iris()
    if n is None:
        return x.copy(), y.copy()
    index = np.arange(n) % len(x)
    return x[index], y[index]


@functools.cache
def _mnist() -> tuple[np.ndarray, np.ndarray]:
    with np.load(SAMPLES / "mnist_test_1000.npz") as data:
        return data["images"], data["labels"]


def mnist_digits(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,)); all 1,000 when n is None."""
    images, labels = _mnist()
    if n is None:
        return images.copy(), labels.copy()
    index = np.arange(n) % len(images)
    return images[index], labels[index]


@functools.cache
def _photo(name: str, size: int) -> bytes:
    from PIL import Image
    from skimage import data

    pixels = getattr(data, name)()
    image = Image.fromarray(pixels).convert("RGB")
    scale = size / max(image.size)
    image = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR
    )
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def face_images(
    sizes: tuple[int, ...] = FACE_SIZES, photos: tuple[str, ...] = PHOTOS
) -> list[EncodedImage]:
    """JPEG photos, one per (photo, size), with ids like "astronaut-320"."""
    return [EncodedImage(f"{p}-{s}", _photo(p, s)) for s in sizes for p in photos]


def batch(family: Family, size: int) -> Batch:
    """`size` inputs of a family's wire shape, for load cells: iris rows, MNIST digits, or
    160-pixel photos, cycling."""
    if family is Family.TABULAR:
        return iris_rows(size)[0]
    if family is Family.DIGITS:
        return mnist_digits(size)[0]
    return (face_images(sizes=(160,)) * size)[:size]
