"""Write an ImageFolder, COCO / VOC detection or VOC / COCO segmentation set into LitData's optimised shards.

The source is read by the file-based DataModule of its format (``ImageFolderDataModule``,
``COCODetectionDataModule``, ``VOCDetectionDataModule``, ``VOCSegmentationDataModule``,
``COCOSegmentationDataModule``), so every structural check, every ``on_bad`` policy and every annotation
convention (contiguous labels, VOC's 1-based boxes, crowd and difficult objects, COCO segmentation
overlaps) is exactly the one training from files uses: a record holds what that DataModule's dataset gives
before its transforms. Each image is decoded once while writing (the shards are verified when written) but
stored as the file's own bytes. ``litdata.optimize`` does the chunking, the worker processes and the upload
to an object store. The training split is written in a seeded random order (LitData shuffles only inside a
chunk); ``keep_data_ordered=True`` keeps the written order, the index's ``record_of`` maps each source item to its
record (each record also carries its source ``index``), so random access in source order gives a fit from shards
the same order as a fit from files under the seeded sampler.

Records, per task (numpy arrays; boxes XYXY float32 in original pixels, as the file-based targets):

* classification: ``index``, ``name``, ``image`` (bytes), ``exif``, ``label``
* detection: the above without ``label``, plus ``image_id``, ``boxes``, ``labels``, ``difficult`` (VOC's flag;
  crowd annotations are never training targets), ``masks`` (COCO ``with_masks``: the instance masks as one PNG) and
  the image's evaluation ground truth: ``gt_ids``, ``gt_boxes`` (COCO ``[x, y, w, h]``, float64 as in the JSON),
  ``gt_category_ids``, ``gt_iscrowd``, ``gt_area``
* segmentation: ``index``, ``name``, ``image``, ``exif``, ``mask`` (the uint8 class map as a greyscale PNG)
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lit_vision.data.checks import DataError, load_rgb
from lit_vision.data.classification.imagefolder import ImageFolderDataModule
from lit_vision.data.detection.coco import COCODetectionDataModule
from lit_vision.data.detection.voc import VOCDetectionDataModule
from lit_vision.data.segmentation.coco import COCOSegmentationDataModule
from lit_vision.data.segmentation.voc import VOCSegmentationDataModule
from lit_vision.data.streaming.index import (
    INDEX_FILE,
    INDEX_VERSION,
    TASK_OF_FORMAT,
    applied_orientation,
    encode_mask,
    is_remote,
    join,
    require_litdata,
    write_index,
)

FORMATS = tuple(TASK_OF_FORMAT)


# ------------------------------------------------------------------ one record per source item
class ClassificationRecords:
    """``fn`` of ``litdata.optimize`` for one ImageFolder split: item ``i`` of its ``(path, label)`` samples."""

    def __init__(self, samples: list[tuple[str, int]], root: Path) -> None:
        self.samples, self.root = samples, root

    def name(self, i: int) -> str:
        return os.path.relpath(self.samples[i][0], self.root)

    def __call__(self, i: int) -> dict[str, Any]:
        path, label = self.samples[i]
        load_rgb(path)  # decodes and verifies: a bad file raises DataError naming it
        return {"index": i, "name": self.name(i), "image": Path(path).read_bytes(),
                "exif": applied_orientation(path, None, ""), "label": int(label)}


class DetectionRecords:
    """Item ``i`` of a checked COCO or VOC detection source (built with ``keep_difficult=True``: every object)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.gt_of: dict[int, list[dict[str, Any]]] = {}
        for ann in source.ground_truth()["annotations"]:
            self.gt_of.setdefault(ann["image_id"], []).append(ann)

    def _annotated(self, i: int) -> tuple[tuple[int, int], str]:
        """The size the annotation gives image ``i`` and how messages name it (what ``raw_item`` passes to load_rgb)."""
        if hasattr(self.source, "instances"):  # COCO
            img = self.source.images[i]
            return self.source.instances.annotated_size(img), self.source.instances.where(img)
        record = self.source.records[i]  # VOC
        return (record["width"], record["height"]), f"{record['xml']}:"

    def __call__(self, i: int) -> dict[str, Any]:
        _, target, image_id, path = self.source.raw_item(i)  # decodes and checks the image against its annotation
        annotated, where = self._annotated(i)
        records = getattr(self.source, "records", None)
        difficult = [o["difficult"] for o in records[i]["objects"]] if records is not None else []
        labels = target["labels"].numpy().astype(np.int64)
        gt = self.gt_of.get(image_id, [])
        return {
            "index": i, "name": Path(path).name if records is not None else self.source.images[i]["file_name"],
            "image": Path(path).read_bytes(), "exif": applied_orientation(path, annotated, where),
            "image_id": int(image_id),
            "boxes": target["boxes"].as_subclass(torch.Tensor).numpy().astype(np.float32).reshape(-1, 4),
            "labels": labels,
            "difficult": np.asarray(difficult or [0] * len(labels), dtype=np.uint8).reshape(-1),
            "gt_ids": np.asarray([a["id"] for a in gt], dtype=np.int64),
            "gt_boxes": np.asarray([a["bbox"] for a in gt], dtype=np.float64).reshape(-1, 4),
            "gt_category_ids": np.asarray([a["category_id"] for a in gt], dtype=np.int64),
            "gt_iscrowd": np.asarray([a.get("iscrowd", 0) for a in gt], dtype=np.uint8),
            "gt_area": np.asarray([a["area"] for a in gt], dtype=np.float64),
            # Instance masks (COCO with_masks): the [N, H, W] 0/1 stack as one greyscale PNG of N*H rows, since a
            # record's structure must not vary in length (b"" without masks).
            "masks": encode_mask(target["masks"].as_subclass(torch.Tensor).flatten(0, 1).numpy())
            if "masks" in target and len(labels) else b"",
        }  # fmt: skip


class SegmentationRecords:
    """Item ``i`` of a checked segmentation source: its image file and its class map (as the dataset reads it)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def name(self, i: int) -> str:
        images = getattr(self.source, "images", None)  # COCO: the JSON's file_name
        return images[i]["file_name"] if images is not None else Path(self.source.image_paths[i]).name

    def __call__(self, i: int) -> dict[str, Any]:
        path = self.source.image_paths[i]
        _, mask = self.source.load(i)  # decodes the image, reads or rasterizes the mask, checks both
        orientation = applied_orientation(path, self.source.annotated_size(i), self.source.annotation_where(i))
        return {"index": i, "name": self.name(i), "image": Path(path).read_bytes(), "exif": orientation,
                "mask": encode_mask(mask.numpy())}


# ------------------------------------------------------------------ the sources, read by the file-based DataModules
def _read_source(fmt: str, options: dict[str, Any]) -> tuple[Any, dict[str, Callable[[int], dict]], dict[str, Any]]:
    """``(DataModule, split -> record fn, index fields)`` for a format; the DataModule checks the source."""
    loader = {"num_workers": 0}
    if fmt == "imagefolder":
        dm = ImageFolderDataModule(**options, fast_decode=False, **loader)
        records = {s: ClassificationRecords(samples, dm.root) for s, samples in dm.split.items()}
        return dm, records, {}
    if fmt in ("coco", "voc"):
        dm = (COCODetectionDataModule(**options, **loader) if fmt == "coco"
              else VOCDetectionDataModule(**options, keep_difficult=True, **loader))
        records = {s: DetectionRecords(src) for s, src in dm.sources.items()}
        categories = dm.sources["train"].ground_truth()["categories"]
        return dm, records, {"categories": categories,
                             "label_to_category_id": {str(k): v for k, v in dm.label_to_category_id.items()}}
    if fmt in ("voc-seg", "coco-seg"):
        dm = (VOCSegmentationDataModule if fmt == "voc-seg" else COCOSegmentationDataModule)(**options, **loader)
        return dm, {s: SegmentationRecords(src) for s, src in dm.sources.items()}, {}
    raise DataError(f"unknown source format {fmt!r}: one of {', '.join(FORMATS)}")


def _split_images(fmt: str, records: Any, count: int) -> list[dict[str, Any]]:
    """What the index lists per image: file name, and for detection the COCO id and size evaluation needs."""
    if isinstance(records, DetectionRecords):
        return [{k: img[k] for k in ("id", "file_name", "width", "height")}
                for img in records.source.ground_truth()["images"]]
    return [{"file_name": records.name(i)} for i in range(count)]


def _check_output(output_dir: str) -> None:
    if is_remote(output_dir):
        return  # LitData refuses a non-empty remote folder itself
    out = Path(output_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"output folder {out} already exists and is not empty: choose a new folder (or delete it)")


def optimize_data(
    fmt: str,
    output_dir: str,
    chunk_bytes: int | str = "64MB",
    num_workers: int = 1,
    start_method: str | None = None,
    shuffle_seed: int | None = 0,
    **options: Any,
) -> dict[str, Any]:
    """Write the splits of a ``fmt`` source into ``output_dir`` (a folder or an object-store URI); return the index.

    Args:
        fmt: ``imagefolder``, ``coco``, ``voc``, ``voc-seg`` or ``coco-seg``.
        output_dir: a new folder, or e.g. ``s3://bucket/prefix`` (LitData uploads; the sidecar index is written
            with fsspec).
        chunk_bytes: target chunk size (LitData: ``"64MB"``; a few tens of MB suit object stores).
        num_workers: LitData writer processes.
        start_method: their start method; ``None``: LitData's (``spawn``: re-imports torch in every worker, ~10 s
            of start-up per call on a small machine). ``"fork"`` starts at once but can hang when the calling
            process already runs threads (torch's OpenMP pool after training, a W&B or checkpoint thread: a forked
            worker inherits their held locks), which is how a test session that wrote shards after other tests
            hung; use it only from a fresh process.
        shuffle_seed: the training split's records are written in the order of this seed (``None``: source
            order), since LitData shuffles only within chunks; record positions are kept in the index.
        **options: the source's arguments, as its file-based DataModule takes them (``root``, ``train_split``,
            ``train_images``, ``train_annotations``, ..., ``class_names``, ``categories``, ``on_bad``).
    """
    litdata = require_litdata()
    if fmt not in FORMATS:
        raise DataError(f"unknown source format {fmt!r}: one of {', '.join(FORMATS)}")
    _check_output(output_dir)
    dm, records, extra = _read_source(fmt, options)
    splits: dict[str, Any] = {}
    for split, fn in records.items():
        count = len(fn.samples) if isinstance(fn, ClassificationRecords) else len(fn.source)
        if count == 0:
            raise DataError(f"the {split} split of the {fmt} source is empty")
        # LitData shuffles the order of chunks and the items inside a chunk, never across chunks: a class-sorted
        # source written in order would give batches of one or two classes. The training split is written in a
        # seeded random order instead; the index keeps each source item's record position, so random access in
        # source order (the seeded sampler, evaluation) still reads source item i as item i.
        order = list(range(count))
        if split == "train" and shuffle_seed is not None:
            random.Random(shuffle_seed).shuffle(order)
        litdata.optimize(fn=fn, inputs=order, output_dir=join(output_dir, split),
                         chunk_bytes=chunk_bytes, num_workers=max(1, min(num_workers, count)),
                         keep_data_ordered=True, reorder_files=False, start_method=start_method, verbose=False)
        position = [0] * count
        for k, i in enumerate(order):
            position[i] = k
        splits[split] = {"num_items": count, "images": _split_images(fmt, fn, count), "record_of": position}
    if fmt == "coco":
        extra["with_masks"] = bool(options.get("with_masks", False))
    try:
        lv_version = version("lit_vision")
    except PackageNotFoundError:
        lv_version = "unknown"
    index = {"lit_vision_streaming": INDEX_VERSION, "lit_vision_version": lv_version, "task": TASK_OF_FORMAT[fmt],
             "format": fmt, "source": {k: (v if isinstance(v, (int, float, bool, list, dict)) or v is None else str(v))
                                       for k, v in options.items()},
             "class_names": list(dm.class_names or []), **extra, "splits": splits}
    write_index(output_dir, index)
    return index


__all__ = ["FORMATS", "INDEX_FILE", "optimize_data"]
