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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from lit_vision.data.checks import OnBad, load_rgb
from lit_vision.data.detection.base import (
    DetectionDataModule,
    DetectionSource,
)
from lit_vision.data.readers.coco import (
    CocoInstances,
    annotation_mask,
    coco_split_files,
)


class CocoDetectionDataset(DetectionSource):
    """Images and targets of one COCO instances JSON; items are ``{"image", "target", "path"}`` dicts.

    ``target`` holds ``boxes`` (float ``[N, 4]`` XYXY pixels of the transformed image), ``labels`` (long
    ``[N]``, contiguous), ``image_id`` (the COCO id), ``orig_size`` ``(h, w)``, ``scale``/``pad`` (see
    :mod:`lit_vision.data.detection.transforms`) and, with ``with_masks``, ``masks`` (uint8 ``[N, H, W]``).

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
        on_bad: OnBad = "error",
    ) -> None:
        self.instances = CocoInstances(images_dir, annotations_json, on_bad)
        self.transforms = transforms
        self.with_masks = with_masks
        inst = self.instances
        self.images_dir, self.annotations_json, self.on_bad = inst.images_dir, inst.annotations_json, on_bad
        self.categories, self.class_names = inst.categories, inst.class_names
        self.category_id_to_label, self.label_to_category_id = inst.category_id_to_label, inst.label_to_category_id
        self.images, self.annotations, self.skipped, self.coco = inst.images, inst.annotations, inst.skipped, inst.coco
        by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in self.images}
        for ann in self.annotations:
            if not ann.get("iscrowd", 0):
                by_image[ann["image_id"]].append(ann)
        self._anns = [by_image[img["id"]] for img in self.images]

    @property
    def describe(self) -> str:
        return str(self.annotations_json)

    def ground_truth(self) -> dict[str, Any]:
        """The instances as loaded and checked (skipped entries removed), crowd regions kept."""
        return self.coco

    def check_sizes(self) -> None:
        self.instances.check_sizes()

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

    def raw_item(self, index: int) -> tuple[Image.Image, dict[str, Any], int, str]:
        path, img = self.image_path(index), self.images[index]
        image = load_rgb(path, self.instances.annotated_size(img), self.instances.where(img))  # EXIF: as annotated
        return image, self.raw_target(index), img["id"], path


class COCODetectionDataModule(DetectionDataModule):
    """Detection data from COCO instances JSON files (one per split) and their image folders.

    Args:
        train_images, train_annotations, val_images, val_annotations: image folder and instances JSON per
            split; the val categories must equal the train categories. ``test_*`` default to val.
        with_masks: put instance masks in the targets.
        **kwargs: transforms, checks and loaders: see :class:`~lit_vision.data.detection.base.DetectionDataModule`
            (``image_size``, ``scale_range``, ``letterbox``, ``on_bad``, ``batch_size``, ...).
    """

    def __init__(
        self,
        train_images: str,
        train_annotations: str,
        val_images: str,
        val_annotations: str,
        test_images: str | None = None,
        test_annotations: str | None = None,
        with_masks: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        on_bad = self.hparams.on_bad
        sources: dict[str, CocoDetectionDataset] = {}
        files = coco_split_files((train_images, train_annotations), (val_images, val_annotations),
                                 (test_images, test_annotations))
        for split, (images, ann_file) in files.items():
            sources[split] = CocoDetectionDataset(images, ann_file, None, with_masks, on_bad)
        for split, ds in sources.items():
            sources["train"].instances.same_categories(ds.instances, split)
        self._set_sources(sources)

    def gt_json(self, split: str = "val") -> str:
        """Path of the ground-truth JSON of ``split`` (test falls back to val).

        With ``on_bad="skip"`` the file still holds the dropped entries; :meth:`ground_truth` gives the
        cleaned content.
        """
        return str(self._split_source(split).annotations_json)
