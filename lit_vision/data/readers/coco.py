"""The COCO instances format, read and checked once for every task that uses it.

Detection (:mod:`lit_vision.data.detection.coco`) and semantic segmentation
(:mod:`lit_vision.data.segmentation.coco`) read the same JSON files; :class:`CocoInstances` is where the file
is loaded and every entry checked, so both tasks name a bad annotation the same way (the JSON file and
the annotation id) and both honour ``on_bad``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lit_vision.data.checks import (
    DataError,
    OnBad,
    check_annotated_size,
    warn_exif_ignored,
)

BOX_TOLERANCE = 1.0  # pixels a box may extend past the image (rounding in exported files); clamped


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Binary ``uint8[H, W]`` mask of a COCO segmentation: the same pixels as ``COCO.annToMask``.

    Polygons (list of lists) are rasterized and merged; uncompressed RLE (``counts`` a list) is encoded
    first; compressed RLE is decoded as is.
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def load_instances(path: Path) -> dict[str, Any]:
    """The parsed JSON of a COCO instances file; a missing, unparsable or non-COCO file raises naming it."""
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"annotation file {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise DataError(f"{path} is not a COCO instances file (needs 'images', 'annotations' and 'categories')")
    if not data["categories"]:
        raise DataError(f"{path} has no categories")
    return data


class CocoInstances:
    """One COCO instances JSON and its image folder, checked: what survives ``on_bad`` is what the tasks see.

    Attributes:
        categories: category dicts sorted by id; ``category_id_to_label`` / ``label_to_category_id`` map them
            to contiguous labels ``0..K-1``; ``class_names`` are their names in label order.
        images, annotations: the entries that passed every check (crowd annotations included).
        skipped: counts per problem (``on_bad="skip"``).
        coco: the checked content as a COCO dict (the evaluation's ground truth).

    Args:
        images_dir: folder the JSON's ``file_name`` entries are relative to.
        annotations_json: COCO instances file.
        on_bad: ``"error"`` raises :class:`DataError` on the first bad annotation or missing image file;
            ``"skip"`` drops them with one warning giving counts per problem.
    """

    def __init__(self, images_dir: str | Path, annotations_json: str | Path, on_bad: OnBad = "error") -> None:
        if on_bad not in ("error", "skip"):
            raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
        self.images_dir = Path(images_dir).expanduser()
        self.annotations_json = Path(annotations_json).expanduser()
        self.on_bad = on_bad
        if not self.images_dir.is_dir():
            raise DataError(f"image folder {self.images_dir} (for {self.annotations_json}) does not exist")
        data = load_instances(self.annotations_json)
        self.categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_id_to_label = {c["id"]: i for i, c in enumerate(self.categories)}
        self.label_to_category_id = {i: c["id"] for i, c in enumerate(self.categories)}
        self.class_names = [str(c.get("name", c["id"])) for c in self.categories]
        self.images, self.annotations, self.skipped = self._validate(data)
        self.coco = {**data, "images": self.images, "annotations": self.annotations}

    def _validate(self, data: dict[str, Any]) -> tuple[list[dict], list[dict], Counter]:
        """Keep the images and annotations that pass every check; raise or count the others."""
        where = self.annotations_json
        skipped: Counter = Counter()

        def bad(problem: str, message: str) -> None:
            if self.on_bad == "error":
                raise DataError(f"{where}: {message}. Fix the file, or set on_bad='skip' to drop such entries.")
            skipped[problem] += 1

        images: dict[int, dict[str, Any]] = {}
        for img in data["images"]:
            if not {"id", "file_name", "width", "height"} <= set(img):
                raise DataError(f"{where}: image entry {img.get('id', img)} lacks id/file_name/width/height")
            if img["id"] in images:
                raise DataError(f"{where}: image id {img['id']} appears twice")
            images[img["id"]] = img
        anns_of: dict[int, list[Any]] = {}
        for ann in data["annotations"]:
            anns_of.setdefault(ann.get("image_id"), []).append(ann.get("id"))
        for image_id, img in list(images.items()):
            path = self.images_dir / img["file_name"]
            if not path.is_file():
                ids = anns_of.get(image_id, [])
                bad("missing image file", f"image id {image_id}: file {path} does not exist "
                    f"(annotation ids {ids[:10]}{' ...' if len(ids) > 10 else ''})")
                del images[image_id]
        kept = []
        listed_ids = {img["id"] for img in data["images"]}  # once: COCO train has ~860k annotations
        for ann in data["annotations"]:
            aid = ann.get("id")
            if ann.get("image_id") not in images:
                if ann.get("image_id") in listed_ids:
                    skipped["annotation of a skipped image"] += 1  # its image file is missing (counted above)
                    continue
                bad("unknown image id", f"annotation id {aid} points at image id {ann.get('image_id')}, "
                    "which is not in 'images'")
                continue
            if ann.get("category_id") not in self.category_id_to_label:
                bad("unknown category id", f"annotation id {aid} has category_id {ann.get('category_id')}, not one "
                    f"of the categories {sorted(self.category_id_to_label)}")
                continue
            img = images[ann["image_id"]]
            box = ann.get("bbox")
            if not (isinstance(box, (list, tuple)) and len(box) == 4
                    and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
                bad("malformed bbox", f"annotation id {aid} (image {img['file_name']}) has bbox {box!r}, "
                    "expected [x, y, width, height]")
                continue
            x, y, w, h = box
            if w <= 0 or h <= 0:
                bad("zero/negative size box", f"annotation id {aid} (image {img['file_name']}) has bbox {box} "
                    "with zero or negative width/height")
                continue
            W, H = img["width"], img["height"]
            t = BOX_TOLERANCE
            if x < -t or y < -t or x + w > W + t or y + h > H + t:
                bad("box outside the image", f"annotation id {aid} (image {img['file_name']}, {W}x{H}) has bbox "
                    f"{box} reaching outside the image")
                continue
            kept.append(ann)
        real = {k: v for k, v in skipped.items() if k != "annotation of a skipped image"}
        if real:
            counts = ", ".join(f"{n} {p}" for p, n in sorted(skipped.items()))
            warnings.warn(f"{where}: skipped bad entries (on_bad='skip'): {counts}", stacklevel=3)
        return list(images.values()), kept, skipped

    def check_sizes(self) -> None:
        """The JSON's width/height must be the file's, as viewers show it (EXIF orientation applied) or as
        stored: boxes and masks are given in those pixels (see :func:`~lit_vision.data.checks.exif_applies`)."""
        ignored = []
        for img in self.images:
            path = self.images_dir / img["file_name"]
            if check_annotated_size(path, self.annotated_size(img), self.where(img)):
                ignored.append(path)
        warn_exif_ignored(ignored, str(self.annotations_json))

    @staticmethod
    def annotated_size(img: dict[str, Any]) -> tuple[int, int]:
        """``(w, h)`` of an image entry: what :func:`~lit_vision.data.checks.load_rgb` is told to match."""
        return int(img["width"]), int(img["height"])

    def where(self, img: dict[str, Any]) -> str:
        """How messages name an image entry."""
        return f"{self.annotations_json}: image id {img['id']}"

    def image_path(self, index: int) -> str:
        return str(self.images_dir / self.images[index]["file_name"])

    def same_categories(self, other: CocoInstances, split: str) -> None:
        """Raise :class:`DataError` naming both files unless ``other`` (the ``split`` data) has the same categories."""
        mine = [(c["id"], c.get("name")) for c in self.categories]
        theirs = [(c["id"], c.get("name")) for c in other.categories]
        if mine != theirs:
            raise DataError(f"the categories of {other.annotations_json} ({split}) differ from those of "
                            f"{self.annotations_json}: {theirs} vs {mine}")


def coco_split_files(
    train: tuple[str | None, str | None], val: tuple[str | None, str | None], test: tuple[str | None, str | None]
) -> dict[str, tuple[str, str]]:
    """``split -> (images folder, instances JSON)`` of the configured splits: train and val are required, and a
    split's folder and JSON come together."""
    out = {}
    for split, (images, ann_file) in {"train": train, "val": val, "test": test}.items():
        if split != "test" and (images is None or ann_file is None):
            raise DataError(f"{split}_images and {split}_annotations are required")
        if (images is None) != (ann_file is None):
            raise DataError(f"{split}_images and {split}_annotations must be given together")
        if images is not None and ann_file is not None:
            out[split] = (images, ann_file)
    return out
