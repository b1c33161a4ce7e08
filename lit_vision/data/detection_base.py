"""What the COCO and VOC detection DataModules share: class maps, ground truth, setup and loaders.

Subclasses only build ``self.sources`` (split -> checked dataset) in ``__init__``; a source provides
``class_names``, ``label_to_category_id``, ``category_id_to_label``, ``image_paths``, ``describe``
(its file, for messages), ``with_transforms``, ``ground_truth()`` and ``check_sizes()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import copy

import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from lit_vision.data.base import SplitDataModule
from lit_vision.data.checks import load_rgb, resolve_image_paths, should_verify, verify_images
from lit_vision.data.detection_transforms import (
    detection_collate,
    detection_eval_transforms,
    detection_train_transforms,
)


def detection_item(
    image: Image.Image, target: dict[str, Any], transforms: Callable | None, image_id: int, path: str
) -> dict[str, Any]:
    """Apply ``transforms`` and return the item contract: float image in [0, 1], plain-tensor target.

    Without transforms the image keeps its size (``scale=(1, 1)``, no padding), so ``boxes_to_original``
    works on every item.
    """
    w, h = image.size
    if transforms is not None:
        tensor, target = transforms(image, target)
    else:
        tensor = F.to_image(image)
        target = target | {"scale": (1.0, 1.0), "pad": (0, 0, 0, 0)}
    if tensor.dtype == torch.uint8:
        tensor = F.to_dtype(tensor, torch.float32, scale=True)
    target = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in target.items()}
    target |= {"image_id": image_id, "orig_size": (h, w)}
    return {"image": tensor.as_subclass(torch.Tensor), "target": target, "path": path}


class ImagePathsDataset(Dataset):
    """Unlabelled images for prediction, in the detection item format (targets without boxes)."""

    def __init__(self, paths: list[str], transforms: Callable | None = None) -> None:
        self.paths = paths
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        image = load_rgb(path)
        w, h = image.size
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(torch.zeros((0, 4)), format="XYXY", canvas_size=(h, w)),
            "labels": torch.zeros(0, dtype=torch.int64),
        }
        return detection_item(image, target, self.transforms, -1, path)


class DetectionSource(Dataset):
    """Base of the checked detection datasets: transform swapping and path listing, shared by COCO and VOC."""

    transforms: Callable | None

    def __len__(self) -> int:
        raise NotImplementedError

    def image_path(self, index: int) -> str:
        raise NotImplementedError

    @property
    def image_paths(self) -> list[str]:
        return [self.image_path(i) for i in range(len(self))]

    def with_transforms(self, transforms: Callable | None) -> DetectionSource:
        """A shallow copy with other transforms (the checked annotations are shared, not re-read)."""
        out = copy.copy(self)
        out.transforms = transforms
        return out


class DetectionDataModule(SplitDataModule):
    """Base of :class:`COCODetectionDataModule` and :class:`VOCDetectionDataModule` (see their arguments)."""

    collate_fn = staticmethod(detection_collate)
    sources: dict[str, DetectionSource]  # filled by the subclass's __init__ (SplitDataModule starts it empty)

    # ------------------------------------------------------------------ classes and ground truth
    @property
    def class_names(self) -> list[str]:
        return self.sources["train"].class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label_to_category_id(self) -> dict[int, int]:
        return self.sources["train"].label_to_category_id

    @property
    def category_id_to_label(self) -> dict[int, int]:
        return self.sources["train"].category_id_to_label

    def ground_truth(self, split: str = "val") -> dict[str, Any]:
        """COCO-format ground truth of ``split`` for the evaluator (test falls back to val), crowd kept."""
        return self._split_source(split).ground_truth()

    # ------------------------------------------------------------------ datasets
    def train_transform(self) -> Callable:
        hp = self.hparams
        return detection_train_transforms(hp.image_size, hp.hflip, hp.scale_jitter, True, hp.letterbox)

    def eval_transform(self) -> Callable:
        return detection_eval_transforms(self.hparams.image_size, self.hparams.letterbox)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["predict"]}
        for split in wanted[stage or "fit"]:
            if split in self.datasets:
                continue
            if split == "predict" and self.hparams.predict_paths is not None:
                paths = resolve_image_paths(self.hparams.predict_paths)
                if should_verify(self.hparams.verify_images, len(paths)):
                    verify_images(paths, "predict_paths")
                self.datasets[split] = ImagePathsDataset(paths, self.eval_transform())
                continue
            if split == "test" and "test" not in self.sources:
                rank_zero_warn("no test data configured: testing on the validation split")
            # Predicting without predict_paths reads the val split itself, so its real image ids reach the
            # predictions (and a COCO results file of them scores what validation scores).
            source = self._split_source("val" if split == "predict" else split)
            if should_verify(self.hparams.verify_images, len(source.image_paths)):
                verify_images(source.image_paths, f"the {split} split ({source.describe})")
                source.check_sizes()
            transforms = self.train_transform() if split == "train" else self.eval_transform()
            self.datasets[split] = source.with_transforms(transforms)
