"""PASCAL VOC-layout object detection: XML parsing, a checked dataset, COCO-format ground truth, a DataModule.

A VOC year folder (``root``, e.g. ``VOCdevkit/VOC2012``) holds ``Annotations/<id>.xml``,
``JPEGImages/<id>.jpg`` and ``ImageSets/Main/<split>.txt`` (one id per line). Items follow the same contract
as :class:`~lit_vision.data.detection.coco.CocoDetectionDataset` (same transforms, same :func:`detection_collate`), so
a detector trains on either layout unchanged.

**Box convention.** VOC boxes are 1-based inclusive pixel indices: ``xmin=1, xmax=10`` covers the first
ten pixel columns. They are converted to continuous XYXY coordinates (pixel ``i`` spans ``[i, i+1)``) as
torchvision's detection reference does: ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``, so the
box above is ``[0, 10]``, 10 pixels wide: the same box a COCO file gives as ``bbox = [0, y, 10, h]``.

**Labels.** ``labels`` are indices into ``class_names`` (default :data:`VOC_CLASSES`); the COCO category
id of label ``i`` is ``i + 1`` (:attr:`VOCDetectionDataset.label_to_category_id`).

**Image ids.** ``target["image_id"]`` is an int: when every id of the split is made of digits and
underscores (VOC's ``2007_000027``, the shapes dataset's ``000001``), it is that id with the underscores
removed, parsed as an int (``2007000027``, ``1``): stable whatever the split list, so one image has one
id in ``train``, ``val`` and ``trainval``. Otherwise (other names, or ids that would collide) it is the
1-based position in the split list. :attr:`VOCDetectionDataset.ids` holds the string ids in the same
order, and :meth:`VOCDetectionDataset.ground_truth` uses the same integer ids.

**Difficult objects.** Objects flagged ``<difficult>1`` are not training targets unless
``keep_difficult=True``. In :meth:`~VOCDetectionDataset.ground_truth` (always, whatever ``keep_difficult``)
they are annotations with ``iscrowd: 1``: COCOeval treats crowd regions as "ignore" ground truth, so a
detection matched to one is neither a true nor a false positive and a missed one is no false negative,
as VOC's metric treats difficult objects. The difference: COCO measures the overlap of a detection with
a crowd region as intersection over the *detection's* area (not IoU), so a detection lying inside a
difficult box but much smaller than it is also ignored, where VOC would count it as a false positive.
(COCOeval also first tries to match a detection to a non-crowd object, and its AP is COCO's 101-point,
multi-threshold AP rather than VOC's; both are properties of the COCO metric, not of this mapping.)

**Checks.** The split list and every XML are read and checked in the dataset constructor, which the
DataModule calls from its ``__init__`` (``num_classes`` is known when the CLI builds the model): a
missing split file, an id without XML or without JPEG, an unreadable XML, an unknown class name or a
degenerate / out-of-image box raises :class:`DataError` naming the XML file (and the object index, from
0, in file order); ``on_bad="skip"`` drops the image (missing files, unreadable XML) or the object
(class, box) and warns once with counts. Image contents and sizes are checked in ``setup``.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import tv_tensors

from lit_vision.data.checks import (
    DataError,
    OnBad,
    check_annotated_size,
    load_rgb,
    warn_exif_ignored,
)
from lit_vision.data.detection.base import (
    DetectionDataModule,
    DetectionSource,
)
from lit_vision.data.readers.coco import BOX_TOLERANCE
from lit_vision.data.readers.voc import (
    VOC_CLASSES,
    image_ids_of,
    parse_voc_xml,
    read_split_ids,
)


class VOCDetectionDataset(DetectionSource):
    """Images and targets of one split of a VOC-layout folder; items are ``{"image", "target", "path"}`` dicts.

    ``target`` holds ``boxes`` (float ``[N, 4]`` XYXY pixels of the transformed image), ``labels`` (long
    ``[N]``, index in ``class_names``), ``image_id`` (int, see the module docstring), ``orig_size``
    ``(h, w)`` and ``scale``/``pad`` (see :mod:`lit_vision.data.detection.transforms`).

    Args:
        root: the year folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/<split>.txt``.
        split: name of the id list in ``ImageSets/Main``.
        class_names: class names in label order; an object with another name is an error.
        transforms: ``(image, target) -> (image, target)`` on tv_tensors (see the presets); ``None``
            returns the original image as float in [0, 1] with the original boxes.
        keep_difficult: also make ``difficult`` objects training targets.
        on_bad: ``"error"`` raises :class:`DataError` on the first problem; ``"skip"`` drops bad images
            and objects with one warning giving counts per problem.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        class_names: Sequence[str] = VOC_CLASSES,
        transforms: Callable | None = None,
        keep_difficult: bool = False,
        on_bad: OnBad = "error",
    ) -> None:
        if on_bad not in ("error", "skip"):
            raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
        self.root = Path(root).expanduser()
        self.split = split
        self.class_names = [str(c) for c in class_names]
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be non-empty and unique, got {self.class_names}")
        self.transforms = transforms
        self.keep_difficult = keep_difficult
        self.on_bad = on_bad
        self.label_to_category_id = {i: i + 1 for i in range(len(self.class_names))}
        self.category_id_to_label = {i + 1: i for i in range(len(self.class_names))}
        self.split_file, listed = read_split_ids(self.root, "Main", split)
        self.records, self.skipped = self._validate(listed)
        self.ids = [r["id"] for r in self.records]
        self.image_ids = image_ids_of(self.ids)
        self.coco = self._coco_dict()

    # ------------------------------------------------------------------ checks
    def _validate(self, listed: list[str]) -> tuple[list[dict[str, Any]], Counter]:
        """Parse and check every listed image; raise or count the problems."""
        skipped: Counter = Counter()
        known = set(self.class_names)

        def bad(problem: str, message: str) -> None:
            if self.on_bad == "error":
                raise DataError(f"{message}. Fix the data, or set on_bad='skip' to drop such entries.")
            skipped[problem] += 1

        records = []
        for image_id in listed:
            xml = self.root / "Annotations" / f"{image_id}.xml"
            jpeg = self.root / "JPEGImages" / f"{image_id}.jpg"
            if not xml.is_file():
                bad("id without XML", f"{self.split_file}: id {image_id!r} has no annotation file {xml}")
                continue
            if not jpeg.is_file():
                bad("id without JPEG", f"{xml}: its image file {jpeg} does not exist")
                continue
            try:
                parsed = parse_voc_xml(xml)
            except DataError as err:
                bad("unreadable XML", str(err))
                continue
            W, H = parsed["width"], parsed["height"]
            if W < 1 or H < 1:
                bad("unreadable XML", f"{xml}: image size {W}x{H} is not positive")
                continue
            objects = []
            for index, obj in enumerate(parsed["objects"]):
                where = f"{xml}: object {index} ({obj['name']!r}"
                if obj["name"] not in known:
                    bad("unknown class", f"{where}) is not one of the class_names {self.class_names}")
                    continue
                x1, y1, x2, y2 = obj["bbox"]
                written = [x1 + 1, y1 + 1, x2, y2]  # xmin, ymin, xmax, ymax as in the file
                if not all(math.isfinite(v) for v in obj["bbox"]) or x2 <= x1 or y2 <= y1:
                    bad("degenerate box", f"{where}) has xmin/ymin/xmax/ymax {written}: zero or negative width/height")
                    continue
                t = BOX_TOLERANCE
                if x1 < -t or y1 < -t or x2 > W + t or y2 > H + t:
                    bad("box outside the image", f"{where}) has xmin/ymin/xmax/ymax {written} reaching outside the "
                        f"{W}x{H} image (VOC boxes are 1-based: 1 <= xmin <= xmax <= width)")
                    continue
                objects.append(obj | {"label": self.class_names.index(obj["name"])})
            records.append({"id": image_id, "xml": xml, "jpeg": jpeg, "width": W, "height": H, "objects": objects})
        if skipped:
            counts = ", ".join(f"{n} {p}" for p, n in sorted(skipped.items()))
            warnings.warn(f"{self.split_file}: skipped bad entries (on_bad='skip'): {counts}", stacklevel=3)
        return records, skipped

    def _coco_dict(self) -> dict[str, Any]:
        images, annotations = [], []
        for record, image_id in zip(self.records, self.image_ids):
            images.append({"id": image_id, "file_name": record["jpeg"].name,
                           "width": record["width"], "height": record["height"]})
            for obj in record["objects"]:
                x1, y1, x2, y2 = obj["bbox"]
                x1, y1 = max(x1, 0.0), max(y1, 0.0)
                x2, y2 = min(x2, float(record["width"])), min(y2, float(record["height"]))
                w, h = x2 - x1, y2 - y1
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": obj["label"] + 1,
                    "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": int(obj["difficult"]),
                    "difficult": int(obj["difficult"]), "truncated": int(obj["truncated"]),
                })  # fmt: skip
        return {
            "info": {"description": f"VOC-layout ground truth of {self.split_file}"},
            "licenses": [], "images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n, "supercategory": "none"} for i, n in enumerate(self.class_names)],
        }  # fmt: skip

    @property
    def describe(self) -> str:
        return str(self.split_file)

    def check_sizes(self) -> None:
        """The XML's width/height must be the JPEG's, as viewers show it (EXIF orientation applied) or as stored:
        boxes are given in those pixels (see :func:`~lit_vision.data.checks.exif_applies`)."""
        ignored = [r["jpeg"] for r in self.records
                   if check_annotated_size(r["jpeg"], (r["width"], r["height"]), f"{r['xml']}:")]
        warn_exif_ignored(ignored, str(self.split_file))

    def ground_truth(self) -> dict[str, Any]:
        """COCO instances dict of the split for :func:`~lit_vision.evaluation.coco.evaluate_coco`.

        Categories ``1..K`` named by ``class_names``; images with the ids of ``target["image_id"]``;
        ``bbox = [x, y, w, h]`` in continuous pixels (clamped to the image), ``area = w * h``; difficult
        objects as ``iscrowd: 1`` (see the module docstring). Skipped entries are absent.
        """
        return self.coco

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, index: int) -> str:
        return str(self.records[index]["jpeg"])

    def raw_target(self, index: int) -> dict[str, Any]:
        """Target in original pixels as tv_tensors (boxes clamped to the image), before any transform."""
        record = self.records[index]
        h, w = record["height"], record["width"]
        objects = [o for o in record["objects"] if self.keep_difficult or not o["difficult"]]
        boxes = torch.tensor([o["bbox"] for o in objects], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        return {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor([o["label"] for o in objects], dtype=torch.int64),
        }

    def raw_item(self, index: int) -> tuple[Image.Image, dict[str, Any], int, str]:
        path, record = self.image_path(index), self.records[index]
        image = load_rgb(path, (record["width"], record["height"]), f"{record['xml']}:")  # EXIF: as annotated
        return image, self.raw_target(index), self.image_ids[index], path


class VOCDetectionDataModule(DetectionDataModule):
    """Detection data from a VOC-layout folder (splits are ``ImageSets/Main/<split>.txt`` lists).

    The same surface as :class:`~lit_vision.data.detection.coco.COCODetectionDataModule` (``num_classes``,
    ``class_names``, ``label_to_category_id``, :meth:`ground_truth`, batches of :func:`detection_collate`).

    Args:
        root: the year folder (``VOCdevkit/VOC2012``) holding ``Annotations``, ``JPEGImages``, ``ImageSets``.
        train_split, val_split, test_split: id lists in ``ImageSets/Main``; ``test_split=None`` tests on val.
        class_names: class names in label order; default :data:`VOC_CLASSES`.
        keep_difficult: also train on ``difficult`` objects (evaluation always ignores them).
        **kwargs: transforms, checks and loaders: see :class:`~lit_vision.data.detection.base.DetectionDataModule`.
    """

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = None,
        class_names: list[str] | None = None,
        keep_difficult: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        names = list(class_names) if class_names is not None else list(VOC_CLASSES)
        sources: dict[str, VOCDetectionDataset] = {}
        for split, name in {"train": train_split, "val": val_split, "test": test_split}.items():
            if name is None:
                if split != "test":
                    raise DataError(f"{split}_split is required")
                continue
            sources[split] = VOCDetectionDataset(root, name, names, None, keep_difficult, self.hparams.on_bad)
        self._set_sources(sources)
