"""COCO-format object detection (and instance masks): dataset with up-front checks, and its DataModule.

The annotation JSON is read and checked in the dataset constructor, which the DataModule calls from its
``__init__``: ``num_classes`` and ``class_names`` must be known when the CLI links them into the model, and
every annotation problem (degenerate or out-of-image box, unknown image or category id, missing image
file) is raised there, naming the JSON file and the annotation id, before any model is built. Image
contents are decoded and checked in ``setup``.

Labels are contiguous ``0..K-1`` in category-id order, whatever the JSON's numbering (COCO's sparse 1..90
or renumbered); ``label_to_category_id`` maps predictions back for the evaluator, which reads the
ground-truth JSON itself (crowd regions included, see :mod:`lit_vision.evaluation.coco`). Crowd
annotations (``iscrowd=1``) are never training targets.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from lit_vision.data.checks import DataError, load_rgb
from lit_vision.data.detection_base import DetectionDataModule, DetectionSource, detection_item

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


def _load_instances(path: Path) -> dict[str, Any]:
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


class CocoDetectionDataset(DetectionSource):
    """Images and targets of one COCO instances JSON; items are ``{"image", "target", "path"}`` dicts.

    ``target`` holds ``boxes`` (float ``[N, 4]`` XYXY pixels of the transformed image), ``labels`` (long
    ``[N]``, contiguous), ``image_id`` (the COCO id), ``orig_size`` ``(h, w)``, ``scale``/``pad`` (see
    :mod:`lit_vision.data.detection_transforms`) and, with ``with_masks``, ``masks`` (uint8 ``[N, H, W]``).

    Args:
        images_dir: folder the JSON's ``file_name`` entries are relative to.
        annotations_json: COCO instances file.
        transforms: ``(image, target) -> (image, target)`` on tv_tensors (see the presets); ``None``
            returns the original image as float in [0, 1] with the original boxes.
        with_masks: also decode instance masks (polygons and RLE).
        on_bad: ``"error"`` raises :class:`DataError` on the first bad annotation or missing image file;
            ``"skip"`` drops them with one warning giving counts per problem.
    """

    def __init__(
        self,
        images_dir: str | Path,
        annotations_json: str | Path,
        transforms: Callable | None = None,
        with_masks: bool = False,
        on_bad: str = "error",
    ) -> None:
        if on_bad not in ("error", "skip"):
            raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
        self.images_dir = Path(images_dir).expanduser()
        self.annotations_json = Path(annotations_json).expanduser()
        self.transforms = transforms
        self.with_masks = with_masks
        self.on_bad = on_bad
        if not self.images_dir.is_dir():
            raise DataError(f"image folder {self.images_dir} (for {self.annotations_json}) does not exist")
        data = _load_instances(self.annotations_json)
        self.categories = sorted(data["categories"], key=lambda c: c["id"])
        self.category_id_to_label = {c["id"]: i for i, c in enumerate(self.categories)}
        self.label_to_category_id = {i: c["id"] for i, c in enumerate(self.categories)}
        self.class_names = [str(c.get("name", c["id"])) for c in self.categories]
        self.images, self.annotations, self.skipped = self._validate(data)
        by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in self.images}
        for ann in self.annotations:
            if not ann.get("iscrowd", 0):
                by_image[ann["image_id"]].append(ann)
        self._anns = [by_image[img["id"]] for img in self.images]
        self.coco = {**data, "images": self.images, "annotations": self.annotations}

    # ------------------------------------------------------------------ checks
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

    @property
    def describe(self) -> str:
        return str(self.annotations_json)

    def ground_truth(self) -> dict[str, Any]:
        """The instances as loaded and checked (skipped entries removed), crowd regions kept."""
        return self.coco

    def check_sizes(self) -> None:
        """The JSON's width/height must be the file's: boxes and masks are given in those pixels."""
        for img in self.images:
            path = self.images_dir / img["file_name"]
            with Image.open(path) as im:
                w, h = im.size
            if (w, h) != (img["width"], img["height"]):
                raise DataError(f"{self.annotations_json}: image id {img['id']} says {img['width']}x{img['height']} "
                                f"but {path} is {w}x{h}")

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> str:
        return str(self.images_dir / self.images[index]["file_name"])

    def raw_target(self, index: int) -> dict[str, Any]:
        """Target in original pixels as tv_tensors (boxes clamped to the image), before any transform."""
        img, anns = self.images[index], self._anns[index]
        h, w = img["height"], img["width"]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([self.category_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
        }
        if self.with_masks:
            masks = [annotation_mask(a["segmentation"], h, w) for a in anns]
            stacked = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, h, w), dtype=torch.uint8)
            target["masks"] = tv_tensors.Mask(stacked)
        return target

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.image_path(index)
        return detection_item(load_rgb(path), self.raw_target(index), self.transforms, self.images[index]["id"], path)


class COCODetectionDataModule(DetectionDataModule):
    """Detection data from COCO instances JSON files (one per split) and their image folders.

    Args:
        train_images, train_annotations, val_images, val_annotations: image folder and instances JSON per
            split; the val categories must equal the train categories. ``test_*`` default to val.
        predict_paths: folders (searched recursively) or image files to predict; default: the val split.
        image_size: longer side after resizing (side of the square canvas with ``letterbox``).
        batch_size: per-device batch size; ``eval_batch_size`` defaults to it.
        hflip, scale_jitter, letterbox: training augmentation (see :func:`detection_train_transforms`);
            evaluation resizes (or letterboxes) deterministically to ``image_size``.
        with_masks: put instance masks in the targets.
        on_bad: ``"error"`` or ``"skip"`` for bad annotations / missing files (see :class:`CocoDetectionDataset`).
        verify_images: decode every image in ``setup``; ``None`` = only up to 20,000 files per split.
    """

    def __init__(
        self,
        train_images: str,
        train_annotations: str,
        val_images: str,
        val_annotations: str,
        test_images: str | None = None,
        test_annotations: str | None = None,
        predict_paths: str | list[str] | None = None,
        image_size: int = 640,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        hflip: bool = True,
        scale_jitter: tuple[float, float] | None = (0.5, 1.5),
        letterbox: bool = False,
        with_masks: bool = False,
        on_bad: str = "error",
        verify_images: bool | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        sources = {"train": (train_images, train_annotations), "val": (val_images, val_annotations),
                   "test": (test_images, test_annotations)}
        for split, (images, ann_file) in sources.items():
            if split != "test" and (images is None or ann_file is None):
                raise DataError(f"{split}_images and {split}_annotations are required")
            if (images is None) != (ann_file is None):
                raise DataError(f"{split}_images and {split}_annotations must be given together")
            if images is not None:
                self.sources[split] = CocoDetectionDataset(images, ann_file, None, with_masks, on_bad)
        first = self.sources["train"]
        for split, ds in self.sources.items():
            if [(c["id"], c.get("name")) for c in ds.categories] != [(c["id"], c.get("name")) for c in first.categories]:
                raise DataError(
                    f"the categories of {ds.annotations_json} ({split}) differ from those of {first.annotations_json}: "
                    f"{[(c['id'], c.get('name')) for c in ds.categories]} vs "
                    f"{[(c['id'], c.get('name')) for c in first.categories]}"
                )

    def gt_json(self, split: str = "val") -> str:
        """Path of the ground-truth JSON of ``split`` (test falls back to val).

        With ``on_bad="skip"`` the file still holds the dropped entries; :meth:`ground_truth` gives the
        cleaned content.
        """
        return str(self._split_source(split).annotations_json)
