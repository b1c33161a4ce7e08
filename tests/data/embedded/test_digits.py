"""The embedded digits: real UCI data (scikit-learn's file), written deterministically as an ImageFolder tree."""

from __future__ import annotations

import gzip
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from lit_vision.data import DigitsDataModule, write_digits
from lit_vision.data.embedded.digits import DIGITS_FILE, load_digits_scans

# scikit-learn 1.9.1's sklearn/datasets/data/digits.csv.gz, the file load_digits() reads: the same bytes.
SKLEARN_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
# Published facts of the UCI test set (its description: 1,797 instances; per-class counts; the first scan, a 0).
UCI_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
FIRST_SCAN = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0],
              [0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0],
              [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]


def reference_scans() -> tuple[np.ndarray, np.ndarray]:
    """The embedded CSV read independently of the package's reader (line by line, no numpy parser)."""
    rows = [[int(v) for v in line.split(",")] for line in gzip.open(DIGITS_FILE, "rt").read().splitlines()]
    table = np.array(rows)
    return table[:, :64].reshape(-1, 8, 8), table[:, 64]


def test_embedded_file_is_scikit_learns_and_reads_as_load_digits() -> None:
    assert hashlib.sha256(DIGITS_FILE.read_bytes()).hexdigest() == SKLEARN_SHA256
    images, labels = load_digits_scans()
    ref_images, ref_labels = reference_scans()
    assert images.shape == (1797, 8, 8) and images.min() == 0 and images.max() == 16
    assert np.array_equal(images, ref_images) and np.array_equal(labels, ref_labels)
    assert np.bincount(labels).tolist() == UCI_CLASS_COUNTS and images[0].tolist() == FIRST_SCAN and labels[0] == 0


def test_digits_tree_holds_every_scan_split_80_20_per_class(tmp_path: Path) -> None:
    root = write_digits(tmp_path)
    files = sorted(root.glob("*/*/*.png"))
    assert len(files) == 1797
    splits = Counter(f.parts[-3] for f in files)
    assert splits == {"train": 1438, "val": 359}  # 20% of each class, rounded per class
    target = reference_scans()[1]
    for f in files:  # the folder is the true label of the scan the file name points to
        assert int(f.parent.name) == target[int(f.stem)]
    val_per_class = Counter(f.parent.name for f in files if f.parts[-3] == "val")
    assert set(val_per_class) == {str(d) for d in range(10)} and min(val_per_class.values()) >= 35


def test_digits_pixels_are_the_upscaled_scans(tmp_path: Path) -> None:
    root = write_digits(tmp_path)
    images = reference_scans()[0]
    f = next(root.glob("train/7/*.png"))
    scan = (images[int(f.stem)] / 16 * 255).clip(0, 255).astype(np.uint8)
    expected = np.array(Image.fromarray(scan, mode="L").resize((32, 32), Image.BICUBIC))
    assert np.array_equal(np.array(Image.open(f)), expected)


def test_digits_are_written_once_and_identically(tmp_path: Path) -> None:
    a = write_digits(tmp_path / "a")
    b = write_digits(tmp_path / "b")
    names = lambda r: sorted(str(p.relative_to(r)) for p in r.glob("*/*/*.png"))  # noqa: E731
    assert names(a) == names(b)
    stamp = (a / "train" / "0").stat().st_mtime_ns
    assert write_digits(tmp_path / "a") == a and (a / "train" / "0").stat().st_mtime_ns == stamp


def test_digits_datamodule_defaults_do_not_flip(tmp_path: Path) -> None:
    data = DigitsDataModule(cache_dir=str(tmp_path), num_workers=0)
    assert data.num_classes == 10 and data.class_names == [str(d) for d in range(10)]
    assert data.hparams.hflip is False
