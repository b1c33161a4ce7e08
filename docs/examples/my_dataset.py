"""A DataModule of your own: images listed in a CSV file, for ``ImageClassifier`` through ``lit-vision``.

The CSV has a header and one row per image: ``path,label,split`` (``split`` is ``train``, ``val`` or
``test``; ``path`` is relative to the CSV's folder or absolute)::

    path,label,split
    images/0001.png,circle,train
    images/0002.png,square,val

What a DataModule of your own provides (see docs/architecture.md, "A dataset of your own"):

* ``__init__`` reads and checks the listing, and sets the class names: the CLI links ``num_classes`` and
  ``class_names`` into the model right after building the data, so they must be known here. Every problem
  with the listing is raised here, naming the file and the line, before a model is built.
* ``build_dataset(split)`` returns the dataset of one split (``train``, ``val``, ``test`` or ``predict``),
  transforms included. ``SplitDataModule`` calls it from its one ``setup`` loop and owns the loaders; the
  loader options (``--data.batch_size``, ``--data.num_workers``, ...) reach it through ``**kwargs``.
* ``data_info()`` says what the task should know about the data; ``setup`` hands it over with
  ``task.connect_data(...)``. The default gives the class names; this one also passes the training-set
  class counts in ``extra`` (a task of your own could weight its loss with them).

Items follow the classification batch contract (``{"image", "label", "path"}``), so ``ImageClassifier``,
``MixupCutmix`` and the prediction writer work unchanged. Try it::

    python docs/examples/my_dataset.py /tmp/csv_shapes            # writes a tiny CSV-listed dataset
    PYTHONPATH=docs/examples lit-vision fit --model ImageClassifier --model.backbone tv/resnet18 \\
        --data my_dataset.CSVImageDataModule --data.csv_file /tmp/csv_shapes/labels.csv \\
        --data.image_size 32 --data.batch_size 8 --data.num_workers 0 --trainer.max_epochs 2
"""

from __future__ import annotations

import csv
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from lit_vision.contracts import DataInfo
from lit_vision.data import DataError, ImageFolderDataset, SplitDataModule
from lit_vision.data.checks import OnBad, should_verify, verify_images
from lit_vision.data.classification import (
    classification_eval_transforms,
    classification_train_transforms,
)

SPLITS = ("train", "val", "test")


def read_listing(csv_file: Path, on_bad: OnBad) -> dict[str, list[tuple[str, str]]]:
    """``split -> [(image path, label name)]`` from the CSV; bad rows raise naming the line (or are skipped)."""
    if not csv_file.is_file():
        raise DataError(f"listing {csv_file} does not exist")
    rows: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    skipped = 0
    with csv_file.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"path", "label", "split"} <= set(reader.fieldnames or []):
            raise DataError(f"{csv_file}: the header must name the columns path, label, split; got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            path = Path(row["path"] or "").expanduser()
            path = path if path.is_absolute() else csv_file.parent / path
            problem = None
            if row["split"] not in SPLITS:
                problem = f"split {row['split']!r} is not one of {SPLITS}"
            elif not row["label"]:
                problem = "the label is empty"
            elif not path.is_file():
                problem = f"image {path} does not exist"
            if problem is None:
                rows[row["split"]].append((str(path), row["label"]))
            elif on_bad == "error":
                raise DataError(f"{csv_file}, line {line}: {problem}. Fix the listing, or set on_bad='skip'.")
            else:
                skipped += 1
    if skipped:
        warnings.warn(f"{csv_file}: skipped {skipped} bad row(s) (on_bad='skip')", stacklevel=2)
    for split in ("train", "val"):
        if not rows[split]:
            raise DataError(f"{csv_file} lists no {split} images")
    return rows


class CSVImageDataModule(SplitDataModule):
    """Classification data listed in a CSV file (see the module docstring).

    Args:
        csv_file: the listing (``path,label,split``).
        image_size: training crop and evaluation size.
        scale_range: fraction of the image area a random training crop covers (the house name for it).
        hflip: random horizontal flips in training.
        class_names: label names in label order; default: the sorted names of the listing. Given, they must
            cover every label of the listing (a class may have no image).
        on_bad: ``"error"`` raises on a bad row; ``"skip"`` drops such rows with one counted warning.
        verify_images: decode every image in ``setup``; ``None`` = only up to 20,000 per split.
        **kwargs: loader arguments of :class:`~lit_vision.data.SplitDataModule` (``batch_size``,
            ``eval_batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``, ``drop_last``).
    """

    def __init__(
        self,
        csv_file: str,
        image_size: int = 224,
        scale_range: tuple[float, float] = (0.08, 1.0),
        hflip: bool = True,
        class_names: list[str] | None = None,
        on_bad: OnBad = "error",
        verify_images: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # the plain **kwargs hand-over is what lets jsonargparse list the loader options
        if on_bad not in ("error", "skip"):
            raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
        self.csv_file = Path(csv_file).expanduser()
        self.image_size, self.scale_range, self.hflip = image_size, tuple(scale_range), hflip
        self.verify_images = verify_images
        self.rows = read_listing(self.csv_file, on_bad)
        labels = sorted({label for rows in self.rows.values() for _, label in rows})
        if class_names is not None:
            unknown = sorted(set(labels) - set(class_names))
            if unknown:
                raise DataError(f"{self.csv_file} has labels {unknown} that are not in class_names {class_names}")
        self._class_names = list(class_names) if class_names is not None else labels  # what the CLI links

    def build_dataset(self, split: str) -> ImageFolderDataset:
        source = {"predict": "val"}.get(split, split)  # predict serves the val images (with their labels)
        if source == "test" and not self.rows["test"]:
            rank_zero_warn(f"{self.csv_file} lists no test images: testing on the val images")
            source = "val"
        index = {name: i for i, name in enumerate(self.class_names or [])}
        samples = [(path, index[label]) for path, label in self.rows[source]]
        if should_verify(self.verify_images, len(samples)):
            verify_images([p for p, _ in samples], f"the {source} images of {self.csv_file}")
        if split == "train":
            transform = classification_train_transforms(self.image_size, scale_range=self.scale_range, hflip=self.hflip,
                                                        color_jitter=0.0)
        else:
            transform = classification_eval_transforms(self.image_size, crop_pct=1.0)
        return ImageFolderDataset(samples, transform)

    def data_info(self) -> DataInfo:
        counts = Counter(label for _, label in self.rows["train"])
        return DataInfo(class_names=list(self.class_names or []),
                        extra={"train_counts": [counts[name] for name in self.class_names or []]})


def write_demo_listing(folder: str | Path, per_class: int = 12) -> Path:
    """A tiny dataset to try the module on: white circles and squares on dark noise, 32 px, listed in a CSV."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["path,label,split"]
    for i in range(2 * per_class * 2):
        label = ("circle", "square")[i % 2]
        split = "train" if i < 2 * per_class else "val"
        image = Image.fromarray(rng.integers(0, 60, (32, 32, 3), dtype=np.uint8))
        (x, y), r = rng.integers(10, 22, 2).tolist(), int(rng.integers(5, 9))
        draw = ImageDraw.Draw(image)
        (draw.ellipse if label == "circle" else draw.rectangle)([x - r, y - r, x + r, y + r], fill=(255, 255, 255))
        image.save(folder / "images" / f"{i:04d}.png")
        lines.append(f"images/{i:04d}.png,{label},{split}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


if __name__ == "__main__":
    print(write_demo_listing(sys.argv[1] if len(sys.argv) > 1 else "csv_shapes"))
