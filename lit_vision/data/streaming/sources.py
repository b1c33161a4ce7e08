"""Datasets over LitData shards that serve exactly the items of the file-based datasets.

Each source decodes a record into what the file-based dataset has before its transforms (a PIL image and a
label; a PIL image and tv_tensor boxes; a uint8 image and class map) and then goes through the file-based
code from there on: :func:`~lit_vision.data.detection.base.detection_item` and
:class:`~lit_vision.data.detection.base.DetectionSource` for detection,
:meth:`~lit_vision.data.segmentation.base.SegmentationDataset.make_item` for segmentation, the classification
presets for classification. So transforms, targets and item contracts cannot drift apart.

Two ways in:

* ``source[i]``: random access through :class:`ShardReader` (``litdata.StreamingDataset[i]``), used by
  evaluation loaders and by the ``sampler="seeded"`` training loader (lit_vision's resumable sampler);
* ``source.item_from_record(record)``: what :class:`~lit_vision.data.streaming.loader.SeededStreamingDataset`, a
  ``litdata.StreamingDataset`` whose order, shuffling and DDP sharding are LitData's, calls on each record.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from lit_vision.data.detection.base import DetectionSource, detection_item
from lit_vision.data.segmentation.base import SegmentationDataset
from lit_vision.data.streaming.index import decode_mask, decode_rgb, require_litdata


class ShardReader:
    """Random access, in source order, to the records of one split's shards (``litdata.StreamingDataset[k]``).

    The ``StreamingDataset`` is created on first use in each process and not pickled: loader workers build
    their own (LitData's reader state is per process).
    """

    def __init__(self, input_dir: str, cache_dir: str | None = None, max_cache_size: int | str = "50GB",
                 record_of: list[int] | None = None) -> None:
        self.input_dir, self.cache_dir, self.max_cache_size = input_dir, cache_dir, max_cache_size
        self.record_of = record_of  # source item -> record position (the training split is written shuffled)
        self._dataset: Any = None
        self._pid = os.getpid()

    def streaming_dataset(self, cls: type | None = None, **kwargs: Any) -> Any:
        """A new ``StreamingDataset`` (or subclass ``cls``) over these shards."""
        litdata = require_litdata()
        return (cls or litdata.StreamingDataset)(self.input_dir, cache_dir=self.cache_dir,
                                                 max_cache_size=self.max_cache_size, **kwargs)

    @property
    def dataset(self) -> Any:
        if self._dataset is None or self._pid != os.getpid():  # a forked loader worker: its own reader
            self._dataset, self._pid = self.streaming_dataset(), os.getpid()
        return self._dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The record of source item ``index``."""
        return self.dataset[self.record_of[index] if self.record_of is not None else int(index)]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None}


class StreamingClassificationSource(Dataset):
    """Classification items from shards: ``{"image", "label", "path"}`` as :class:`ImageFolderDataset` serves them
    (``path``: the file's path relative to the ImageFolder root)."""

    def __init__(self, reader: ShardReader, transform: Callable | None = None) -> None:
        self.reader, self.transform = reader, transform

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item_from_record(self.reader[index])

    @staticmethod
    def decode(record: dict[str, Any]) -> tuple[Image.Image, int]:
        return decode_rgb(record["image"], int(record["exif"]), str(record["name"])), int(record["label"])

    def item_from_record(self, record: dict[str, Any]) -> dict[str, Any]:
        image, label = self.decode(record)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": label, "path": str(record["name"])}

    def with_transforms(self, transform: Callable | None) -> StreamingClassificationSource:
        out = copy.copy(self)
        out.transform = transform
        return out


class StreamingDetectionSource(DetectionSource):
    """A :class:`DetectionSource` over shards: same raw items, targets and ground truth as the COCO/VOC datasets.

    Args:
        reader: the split's records.
        index: the split's entry of the sidecar index (``images``: COCO id, file name, size).
        categories: COCO categories in label order (label ``i`` is ``categories[i]``).
        keep_difficult: also make VOC ``difficult`` objects training targets (evaluation ignores them anyway).
        describe: the shard folder, for messages.
        with_masks: put the stored instance masks in the targets (shards written from COCO with ``with_masks``).
    """

    def __init__(self, reader: ShardReader, index: dict[str, Any], categories: list[dict[str, Any]],
                 keep_difficult: bool = False, describe: str = "", transforms: Callable | None = None,
                 with_masks: bool = False) -> None:
        self.reader, self.images, self.categories = reader, index["images"], categories
        self.with_masks = with_masks
        self.keep_difficult, self.transforms, self._describe = keep_difficult, transforms, describe
        self.class_names = [str(c.get("name", c["id"])) for c in categories]
        self.label_to_category_id = {i: c["id"] for i, c in enumerate(categories)}
        self.category_id_to_label = {c["id"]: i for i, c in enumerate(categories)}
        self._gt: dict[str, Any] = {}  # shared by the copies with_transforms makes: built once

    @property
    def describe(self) -> str:
        return self._describe

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, index: int) -> str:
        return str(self.images[index]["file_name"])

    @property
    def image_paths(self) -> list[str]:
        """No files to verify in ``setup``: the writer decoded every image and checked it against its annotation."""
        return []

    def check_sizes(self) -> None:
        """Nothing to do: the writer checked every image against its annotation."""

    def decode(self, record: dict[str, Any]) -> tuple[Image.Image, dict[str, Any], int, str]:
        """``(image, target, image_id, name)`` of a record, as the file-based ``raw_item`` gives them."""
        name = str(record["name"])
        image = decode_rgb(record["image"], int(record["exif"]), name)
        w, h = image.size
        boxes = torch.from_numpy(record["boxes"].copy()).reshape(-1, 4)
        labels = torch.from_numpy(record["labels"].copy()).to(torch.int64)
        masks = None
        if self.with_masks:
            stacked = decode_mask(record["masks"]) if len(labels) else np.zeros((0, w), np.uint8)
            masks = torch.from_numpy(stacked).reshape(len(labels), -1, w)
        if not self.keep_difficult:
            keep = torch.from_numpy(record["difficult"].copy()) == 0
            boxes, labels = boxes[keep], labels[keep]
            masks = masks[keep] if masks is not None else None
        target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)), "labels": labels}
        if masks is not None:
            target["masks"] = tv_tensors.Mask(masks.reshape(-1, h, w))
        return image, target, int(record["image_id"]), name

    def raw_item(self, index: int) -> tuple[Image.Image, dict[str, Any], int, str]:
        return self.decode(self.reader[index])

    def item_from_record(self, record: dict[str, Any]) -> dict[str, Any]:
        image, target, image_id, name = self.decode(record)
        return detection_item(image, target, self.transforms, image_id, name)

    def ground_truth(self) -> dict[str, Any]:
        """The COCO ground truth of the split, rebuilt from the streamed records (one pass, then kept).

        Images (ids, sizes) come from the index, annotations (ids, boxes, categories, crowd flags, areas: the
        fields COCO box evaluation reads) from the records, so the AP equals the one against the source files.
        """
        if "coco" not in self._gt:
            annotations = []
            for i in range(len(self)):
                r = self.reader[i]
                for k in range(len(r["gt_ids"])):
                    annotations.append({"id": int(r["gt_ids"][k]), "image_id": int(r["image_id"]),
                                        "category_id": int(r["gt_category_ids"][k]),
                                        "bbox": [float(v) for v in r["gt_boxes"][k]],
                                        "area": float(r["gt_area"][k]), "iscrowd": int(r["gt_iscrowd"][k])})
            self._gt["coco"] = {"info": {"description": f"ground truth streamed from {self.describe}"},
                                "licenses": [], "images": self.images, "annotations": annotations,
                                "categories": self.categories}
        return self._gt["coco"]


class StreamingSegmentationSource(SegmentationDataset):
    """A :class:`SegmentationDataset` over shards: images and class maps decoded from the records.

    Checked when written, so ``check()`` has nothing to do; ``cache()`` and ``with_transforms`` are the base's.
    """

    def __init__(self, reader: ShardReader, names: list[str], num_classes: int, describe: str = "",
                 transforms: Callable | None = None) -> None:
        super().__init__(names, None, num_classes, transforms, describe=describe)
        self.reader = reader
        self.with_masks, self._checked = True, True

    def decode(self, record: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        image = F.pil_to_tensor(decode_rgb(record["image"], int(record["exif"]), str(record["name"])))
        return image, (torch.from_numpy(decode_mask(record["mask"])) if self.with_masks else None)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._cache is not None:
            return super().load(index)
        return self.decode(self.reader[index])

    def item_from_record(self, record: dict[str, Any]) -> dict[str, Any]:
        return self.make_item(*self.decode(record), str(record["name"]))
