"""The embedded digits: real scikit-learn data, written deterministically as an ImageFolder tree."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from lit_vision.data import DigitsDataModule, write_digits


def test_digits_tree_holds_every_scan_split_80_20_per_class(tmp_path: Path) -> None:
    root = write_digits(tmp_path)
    files = sorted(root.glob("*/*/*.png"))
    assert len(files) == 1797
    splits = Counter(f.parts[-3] for f in files)
    assert splits == {"train": 1438, "val": 359}  # 20% of each class, rounded per class
    target = load_digits().target
    for f in files:  # the folder is the true label of the scan the file name points to
        assert int(f.parent.name) == target[int(f.stem)]
    val_per_class = Counter(f.parent.name for f in files if f.parts[-3] == "val")
    assert set(val_per_class) == {str(d) for d in range(10)} and min(val_per_class.values()) >= 35


def test_digits_pixels_are_the_upscaled_scans(tmp_path: Path) -> None:
    root = write_digits(tmp_path)
    digits = load_digits()
    f = next(root.glob("train/7/*.png"))
    scan = (digits.images[int(f.stem)] / 16 * 255).clip(0, 255).astype(np.uint8)
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
