"""Semantic segmentation from COCO instances files: per-pixel class maps rasterized with pycocotools.

The JSON is read and checked in ``__init__`` by :class:`~lit_vision.data.readers.coco.CocoInstances` (unknown
image or category ids, missing image files, bad boxes: errors name the JSON and the annotation id), plus
the segmentation checks here (missing or malformed polygons/RLE, RLE size not the image's). Masks are
rasterized in ``__getitem__`` from the loaded annotations with
:func:`~lit_vision.data.readers.coco.annotation_mask` (the pixels of ``COCO.annToMask``): cheap next to decoding
the JPEG, and nothing to precompute or keep in sync.

**Classes.** ``categories=None`` keeps every category (class ``i + 1`` = the ``i``-th by category id);
a list of category names (str) or ids (int) keeps those, in that order, as classes ``1..K-1``; a dict
maps names/ids to class indices, several categories may share one (COCO-as-VOC: :data:`COCO_VOC_CATEGORIES`),
value ``255`` makes a category "ignore". Class 0 is ``"background"``: every pixel no kept annotation covers,
including pixels of categories left out (or mapped to 0), which are simply not painted.

**Overlaps** (deterministic): crowd regions (``iscrowd=1``) of kept categories are painted first, as
``255`` (ignore: a crowd says "some of these are here" without saying where). Non-crowd annotations are
then painted over them in order of *decreasing* rasterized pixel area, so where objects overlap the
**smaller one wins** (a person in front of a couch stays a person); equal areas keep file order, the later
annotation painting last. Polygon parts with fewer than 3 points (< 6 numbers) have no area and are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lit_vision.constants import IGNORE_INDEX
from lit_vision.data.checks import DataError
from lit_vision.data.readers.coco import (
    CocoInstances,
    annotation_mask,
    coco_split_files,
)
from lit_vision.data.segmentation.base import (
    MAX_CLASSES,
    SegmentationDataModule,
    SegmentationDataset,
)

CategorySpec = Sequence[str | int] | Mapping[str | int, int] | None

# COCO's names of the 20 VOC classes -> VOC class index, as torchvision's COCO-as-VOC segmentation reference
# keeps them; pair with class_names=VOC_SEGMENTATION_CLASSES (lit_vision.data.segmentation).
COCO_VOC_CATEGORIES: dict[str, int] = {
    "airplane": 1, "bicycle": 2, "bird": 3, "boat": 4, "bottle": 5, "bus": 6, "car": 7, "cat": 8, "chair": 9,
    "cow": 10, "dining table": 11, "dog": 12, "horse": 13, "motorcycle": 14, "person": 15, "potted plant": 16,
    "sheep": 17, "couch": 18, "train": 19, "tv": 20,
}  # fmt: skip


def resolve_categories(
    categories: CategorySpec, coco_categories: Sequence[dict[str, Any]], where: str
) -> tuple[dict[int, int], list[str]]:
    """``(category id -> class index, class names)`` for a ``categories`` spec (see the module docstring)."""
    by_name = {str(c.get("name", c["id"])): c["id"] for c in coco_categories}
    name_of = {c["id"]: str(c.get("name", c["id"])) for c in coco_categories}

    def cat_id(key: str | int) -> int:
        if isinstance(key, str) and key in by_name:
            return by_name[key]
        if isinstance(key, int) and key in name_of:
            return key
        if isinstance(key, str) and key.isdigit() and int(key) in name_of:  # ids that became str keys in YAML
            return int(key)
        raise DataError(f"{where}: category {key!r} is not one of its categories "
                        f"{[(i, n) for i, n in name_of.items()]} (give names as str, ids as int)")

    if categories is None:
        ids = sorted(name_of)
        return {i: k + 1 for k, i in enumerate(ids)}, ["background"] + [name_of[i] for i in ids]
    if isinstance(categories, Mapping):
        mapping: dict[int, int] = {}
        for key, index in categories.items():
            if not (0 <= int(index) < MAX_CLASSES or int(index) == IGNORE_INDEX):
                raise DataError(f"categories maps {key!r} to {index}: class indices are 0..{MAX_CLASSES - 1} "
                                f"or {IGNORE_INDEX} (ignore)")
            mapping[cat_id(key)] = int(index)
        used = sorted({v for v in mapping.values() if v != IGNORE_INDEX} - {0})
        if used != list(range(1, len(used) + 1)):
            raise DataError(f"categories maps to class indices {used}: they must be 1..K-1 without gaps "
                            "(0 is background)")
        names = ["background"] + ["/".join(name_of[i] for i, v in mapping.items() if v == k) for k in used]
        return mapping, names
    ids = [cat_id(key) for key in categories]
    if len(set(ids)) != len(ids):
        raise DataError(f"categories lists a category more than once: {list(categories)}")
    return {i: k + 1 for k, i in enumerate(ids)}, ["background"] + [name_of[i] for i in ids]


def _polygon_parts(segmentation: Any) -> list[list[float]] | None:
    """The usable parts of a polygon segmentation, or ``None`` if it is malformed."""
    if not isinstance(segmentation, list) or not all(isinstance(p, list) for p in segmentation):
        return None
    if not all(len(p) % 2 == 0 and all(isinstance(v, (int, float)) for v in p) for p in segmentation):
        return None
    return [p for p in segmentation if len(p) >= 6]


class CocoSegmentationDataset(SegmentationDataset):
    """One COCO instances JSON as image/class-map pairs (see the module docstring for classes and overlaps).

    Args:
        images_dir: folder the JSON's ``file_name`` entries are relative to.
        annotations_json: COCO instances file (polygons and/or RLE segmentations).
        categories: which categories become which classes (``None``: all, in id order).
        class_names: override the class names (length must match); default from the categories.
        transforms: as for :class:`SegmentationDataset`.
    """

    def __init__(
        self,
        images_dir: str | Path,
        annotations_json: str | Path,
        categories: CategorySpec = None,
        class_names: Sequence[str] | None = None,
        transforms: Any = None,
    ) -> None:
        checked = CocoInstances(images_dir, annotations_json)
        self.annotations_json = checked.annotations_json
        self.categories = checked.categories
        self.category_to_class, names = resolve_categories(categories, checked.categories, str(self.annotations_json))
        if class_names is not None:
            if len(class_names) != len(names):
                raise DataError(f"class_names has {len(class_names)} names but the categories give {len(names)} "
                                f"classes ({names})")
            names = [str(c) for c in class_names]
        if len(names) > MAX_CLASSES:
            raise DataError(f"{self.annotations_json}: {len(names)} classes, but at most {MAX_CLASSES} fit (index "
                            f"{IGNORE_INDEX} means ignore); keep fewer with categories=")
        self.class_names = names
        self.images = checked.images
        by_id = {img["id"]: img for img in self.images}
        self._anns: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in self.images}
        for ann in checked.annotations:
            self._anns[ann["image_id"]].append(self._checked_segmentation(ann, by_id[ann["image_id"]]))
        super().__init__([checked.images_dir / img["file_name"] for img in self.images], None, len(names),
                         transforms, describe=str(self.annotations_json))
        self.with_masks = True

    def _checked_segmentation(self, ann: dict[str, Any], img: dict[str, Any]) -> dict[str, Any]:
        """The annotation (polygon parts without area dropped); malformed segmentations raise, naming it."""
        where = f"{self.annotations_json}: annotation id {ann.get('id')} (image id {ann['image_id']})"
        seg = ann.get("segmentation")
        if isinstance(seg, dict):
            if "counts" not in seg or "size" not in seg:
                raise DataError(f"{where}: RLE segmentation needs 'counts' and 'size'")
            if list(seg["size"]) != [img["height"], img["width"]]:
                raise DataError(f"{where}: RLE size {seg['size']} is not the image's [height, width] "
                                f"{[img['height'], img['width']]}")
            return ann
        parts = _polygon_parts(seg)
        if not seg or parts is None:
            raise DataError(f"{where}: has no usable segmentation ({str(seg)[:60]!r}); expected polygons "
                            "[[x1, y1, x2, y2, ...], ...] or RLE {'counts', 'size'}")
        return ann if len(parts) == len(seg) else {**ann, "segmentation": parts}

    def mask_source(self, index: int) -> str:
        return f"of {self.annotations_json} for image id {self.images[index]['id']}"

    def annotated_size(self, index: int) -> tuple[int, int]:
        return int(self.images[index]["width"]), int(self.images[index]["height"])

    def annotation_where(self, index: int) -> str:
        return f"{self.annotations_json}: image id {self.images[index]['id']}"

    def read_mask(self, index: int, height: int, width: int) -> np.ndarray:
        """Rasterize the class map of image ``index``: crowd as ignore first, then objects, larger first."""
        img = self.images[index]
        if (img["height"], img["width"]) != (height, width):
            raise DataError(f"{self.annotations_json}: image id {img['id']} says {img['width']}x{img['height']} "
                            f"but {self.image_paths[index]} is {width}x{height}")
        out = np.zeros((height, width), dtype=np.uint8)
        painted = []
        for ann in self._anns[img["id"]]:
            cls = self.category_to_class.get(ann["category_id"], 0)
            if cls == 0 or not ann["segmentation"]:
                continue
            pixels = annotation_mask(ann["segmentation"], height, width).astype(bool)
            if ann.get("iscrowd", 0):
                out[pixels] = IGNORE_INDEX
            else:
                painted.append((pixels, cls))
        for pixels, cls in sorted(painted, key=lambda pc: -int(pc[0].sum())):  # stable: ties keep file order
            out[pixels] = cls
        return out


class COCOSegmentationDataModule(SegmentationDataModule):
    """Semantic segmentation from COCO instances JSON files (one per split) and their image folders.

    Args:
        train_images, train_annotations, val_images, val_annotations: image folder and instances JSON per
            split; ``test_*`` default to val. Every split must give the same class names.
        categories: which categories become which classes: ``None`` (all), a list of names/ids, or a dict
            name/id -> class index (e.g. :data:`COCO_VOC_CATEGORIES`); see the module docstring.
        class_names: names of classes ``0..K-1`` (default: ``"background"`` + the category names; categories
            merged by a dict are joined with ``/``).
        **kwargs: transforms, checks, caching and loaders: see
            :class:`~lit_vision.data.segmentation.base.SegmentationDataModule`.
    """

    def __init__(
        self,
        train_images: str,
        train_annotations: str,
        val_images: str,
        val_annotations: str,
        test_images: str | None = None,
        test_annotations: str | None = None,
        categories: list[str | int] | dict[str | int, int] | None = None,
        class_names: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        files = coco_split_files((train_images, train_annotations), (val_images, val_annotations),
                                 (test_images, test_annotations))
        for split, (images, ann_file) in files.items():
            self.sources[split] = CocoSegmentationDataset(images, ann_file, categories, class_names)
        first = self.sources["train"]
        for split, ds in self.sources.items():
            if ds.class_names != first.class_names:
                raise DataError(f"the classes of {ds.annotations_json} ({split}) differ from those of "
                                f"{first.annotations_json}: {ds.class_names} vs {first.class_names}")
        self._set_class_names(first.class_names)
