"""Embedded real data: the UCI handwritten digits (scikit-learn's ``load_digits``) as an ImageFolder tree.

The 1,797 8x8 digit scans ship inside this package (``digits.csv.gz``, scikit-learn's copy of the UCI test set,
57 KB, byte-identical: see ``DIGITS_LICENSE.txt``), so no network is needed. They are upscaled to
32x32 grayscale PNGs and written once, deterministically split 80/20 per class, to
``<cache_dir>/digits/{train,val}/<digit>/<index>.png``. The tree is written to a temporary folder and
renamed into place, so concurrent processes (DDP ranks, parallel tests) never see a half-written tree.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from lit_vision.data.embedded.cache import default_cache_dir, write_once

DIGITS_SIZE = 32
DIGITS_VAL_FRACTION = 0.2
DIGITS_MEAN = (0.308, 0.308, 0.308)
DIGITS_STD = (0.349, 0.349, 0.349)
DIGITS_FILE = Path(__file__).with_name("digits.csv.gz")


def load_digits_scans() -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: the 1,797 scans as ``(N, 8, 8)`` integers 0..16 and their digits, as scikit-learn's
    ``load_digits`` returns them. Read from the embedded file rather than through scikit-learn, which (with
    SciPy, its dependency) would be a run-time dependency for 57 KB of data, and whose presence alone makes
    ``import torchmetrics`` import ``scipy.signal``: ~1.7 s on every ``lit-vision`` start on this 2-core machine."""
    with gzip.open(DIGITS_FILE, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64]


def write_digits(cache_dir: str | Path | None = None, size: int = DIGITS_SIZE) -> Path:
    """Write the digits ImageFolder tree (if not already there) and return its root.

    The split is stratified and seeded (``seed=0``): the same 1,438 train / 359 val files every time
    (20% of each class, rounded per class).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"digits_{size}px"
    if (target / ".complete").exists():
        return target
    scans, labels = load_digits_scans()
    images = (scans / 16.0 * 255.0).clip(0, 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    val_index: set[int] = set()
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        val_index.update(idx[: round(len(idx) * DIGITS_VAL_FRACTION)].tolist())

    def write(tmp: Path) -> None:
        for i, (img, label) in enumerate(zip(images, labels)):
            split = "val" if i in val_index else "train"
            folder = tmp / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, mode="L").resize((size, size), Image.BICUBIC).save(folder / f"{i:04d}.png")

    return write_once(target, write)

