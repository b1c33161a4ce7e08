"""What the COCO and VOC detection DataModules share: class maps, ground truth, setup and loaders.

Subclasses only build ``self.sources`` (split -> checked dataset) in ``__init__``; a source provides
``class_names``, ``label_to_category_id``, ``category_id_to_label``, ``image_paths``, ``describe``
(its file, for messages), ``with_transforms``, ``ground_truth()`` and ``check_sizes()``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from lit_vision.contracts import DataInfo
from lit_vision.data.base import SplitDataModule
from lit_vision.data.checks import (
    OnBad,
    checked_predict_paths,
    load_rgb,
    should_verify,
    verify_images,
)
from lit_vision.data.detection.transforms import (
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
    return finish_item(tensor, target, image_id, (h, w), path)


def finish_item(
    tensor: torch.Tensor, target: dict[str, Any], image_id: int, orig_size: tuple[int, int], path: str
) -> dict[str, Any]:
    """The item contract from a transformed image and target: float image in [0, 1], plain tensors, ids."""
    if tensor.dtype == torch.uint8:
        tensor = F.to_dtype(tensor, torch.float32, scale=True)
    target = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in target.items()}
    target |= {"image_id": image_id, "orig_size": orig_size}
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
    """Base of the checked detection datasets: transform swapping and path listing, shared by COCO and VOC.

    Subclasses provide :meth:`raw_item`; items are that image and target through ``transforms``
    (:func:`detection_item`). Mosaic (:mod:`~lit_vision.data.detection.mosaic`) reads :meth:`raw_item` itself.
    """

    transforms: Callable | None

    def __len__(self) -> int:
        raise NotImplementedError

    def raw_item(self, index: int) -> tuple[Image.Image, dict[str, Any], int, str]:
        """``(image, target, image_id, path)`` before any transform; target as tv_tensors in original pixels."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, target, image_id, path = self.raw_item(index)
        return detection_item(image, target, self.transforms, image_id, path)

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
    """Base of the annotated detection DataModules (COCO, VOC, shapes): transforms, ground truth, setup.

    Subclasses fill ``self.sources`` (split -> checked :class:`DetectionSource`) in ``__init__``, after
    calling this constructor, so ``num_classes`` and ``class_names`` are known when the CLI builds the model.

    Args:
        image_size: longer side after resizing (side of the square canvas with ``letterbox``); the CLI links
            it into the detector, which then does not resize a second time.
        hflip, scale_range, letterbox: training augmentation (see :func:`detection_train_transforms`;
            ``scale_range`` multiplies ``image_size`` by ``U(lo, hi)``); evaluation resizes (or letterboxes)
            deterministically to ``image_size``.
        mosaic: probability that a training sample is a 4-image mosaic (the Ultralytics YOLOv8 recipe's
            augmentation, :mod:`~lit_vision.data.detection.mosaic`; YOLOv8: 1.0). A mosaic is an
            ``image_size`` square with its own scale jitter, replacing the resize/letterbox and
            ``scale_range`` of that sample; the other samples use the normal preset, which gives squares too
            with ``letterbox: true`` (recommended with mosaic: one input shape for all samples).
        close_mosaic: train the last ``close_mosaic`` epochs without mosaic (YOLOv8: 10), so the model ends on
            undistorted images; needs the trainer's ``max_epochs``.
        mosaic_cache_mb: MiB of training images, decoded and resized for the mosaic, that each loading process
            keeps between draws (least recently used out first; the same pixels as decoding again). A mosaic
            reads four images, so this saves most of the decoding when the split fits at ``image_size``: the
            112 people photos at 256 px take 15 MiB. 0 (default): none.
        translate: with ``letterbox``, YOLOv8's random affine for the samples that are not mosaics (YOLOv8: 0.1):
            zoom by ``U(scale_range)`` about the centre, zooming in too (crops), and a shift of up to
            ``translate * image_size``; 0 keeps every letterboxed sample centred and whole (see
            :class:`~lit_vision.data.detection.transforms.DetectionTransform`).
        photometric: training colour jitter: ``"distort"`` (torchvision's ``RandomPhotometricDistort``), ``"yolo"``
            (YOLOv8's brightness 0.4 / saturation 0.7 gains, ~4x cheaper on the CPU) or ``"none"``.
        on_bad: ``"error"`` raises on the first bad annotation or missing file; ``"skip"`` drops them with one
            warning giving counts per problem.
        verify_images: decode every image in ``setup``; ``None`` = only up to 20,000 files per split.
        predict_paths: folders (searched recursively) or image files to predict; default: the val split.
        batch_size: per-device batch size. Other loader arguments: see
            :class:`~lit_vision.data.base.SplitDataModule`.
    """

    collate_fn = staticmethod(detection_collate)
    sources: dict[str, DetectionSource]

    def __init__(
        self,
        image_size: int = 640,
        hflip: bool = True,
        scale_range: tuple[float, float] | None = (0.5, 1.5),
        letterbox: bool = False,
        mosaic: float = 0.0,
        close_mosaic: int = 0,
        mosaic_cache_mb: float = 0.0,
        translate: float = 0.0,
        photometric: str = "distort",
        on_bad: OnBad = "error",
        verify_images: bool | None = None,
        predict_paths: str | list[str] | None = None,
        batch_size: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        if not 0 <= mosaic <= 1:
            raise ValueError(f"mosaic is the probability that a training sample is a mosaic: 0 <= mosaic <= 1, "
                             f"got {mosaic} (YOLOv8 uses 1.0)")
        if close_mosaic < 0:
            raise ValueError(f"close_mosaic is a number of final epochs without mosaic: >= 0, got {close_mosaic} "
                             "(YOLOv8 uses 10)")
        if mosaic_cache_mb < 0:
            raise ValueError(f"mosaic_cache_mb is the MiB of resized images kept per loading process: >= 0, got "
                             f"{mosaic_cache_mb} (0: no cache)")
        if photometric not in ("distort", "yolo", "none"):
            raise ValueError(f"photometric must be 'distort', 'yolo' or 'none', got {photometric!r}")
        if translate and not letterbox:
            raise ValueError(f"translate={translate} shifts the letterboxed square: set letterbox: true as well "
                             "(or translate: 0)")
        # Collects the subclass's arguments too; class_names belong to the model (linked by the CLI), and
        # keeping them here as well would make Lightning's hparams merge fail when the data derives them.
        self.save_hyperparameters(ignore=["class_names"])

    def _set_sources(self, sources: dict[str, DetectionSource]) -> None:
        """Keep the checked sources; the class names are the train split's (subclasses check the others agree)."""
        self.sources = dict(sources)
        self._class_names = list(self.sources["train"].class_names)

    # ------------------------------------------------------------------ classes and ground truth
    @property
    def label_to_category_id(self) -> dict[int, int]:
        return self.sources["train"].label_to_category_id

    @property
    def category_id_to_label(self) -> dict[int, int]:
        return self.sources["train"].category_id_to_label

    def ground_truth(self, split: str = "val") -> dict[str, Any]:
        """COCO-format ground truth of ``split`` for the evaluator (test falls back to val), crowd kept."""
        return self._split_source(split).ground_truth()

    def data_info(self) -> DataInfo:
        return DataInfo(class_names=list(self.class_names or []), label_to_category_id=dict(self.label_to_category_id),
                        ground_truth=self.ground_truth)

    # ------------------------------------------------------------------ datasets
    def train_transform(self) -> Callable:
        hp = self.hparams
        return detection_train_transforms(hp.image_size, hp.hflip, hp.scale_range, hp.photometric, hp.letterbox,
                                          hp.translate)

    def eval_transform(self) -> Callable:
        return detection_eval_transforms(self.hparams.image_size, self.hparams.letterbox)

    def build_dataset(self, split: str) -> Dataset:
        if split == "predict" and self.hparams.predict_paths is not None:
            paths = checked_predict_paths(self.hparams.predict_paths, self.hparams.verify_images)
            return ImagePathsDataset(paths, self.eval_transform())
        # Predicting without predict_paths reads the val split itself, so its real image ids reach the
        # predictions (and a COCO results file of them scores what validation scores).
        source = self._split_source("val" if split == "predict" else split)
        if should_verify(self.hparams.verify_images, len(source.image_paths)):
            verify_images(source.image_paths, f"the {split} split ({source.describe})")
            source.check_sizes()
        if split != "train":
            return source.with_transforms(self.eval_transform())
        if self.hparams.mosaic > 0:
            # Imported here: mosaic.py builds on this module's item contract (finish_item, DetectionSource).
            from lit_vision.data.detection.mosaic import MosaicDataset

            return MosaicDataset(source, self.train_transform(), self.hparams.mosaic,
                                 cache_mb=self.hparams.mosaic_cache_mb)
        return source.with_transforms(self.train_transform())

    def mosaic_stop_epoch(self) -> int | None:
        """The first epoch without mosaic, ``max_epochs - close_mosaic``; ``None``: no close-off (or no trainer)."""
        hp = self.hparams
        if hp.mosaic == 0 or hp.close_mosaic == 0 or self.trainer is None:
            return None
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            raise ValueError(f"close_mosaic={hp.close_mosaic} turns mosaic off for the last {hp.close_mosaic} "
                             f"epochs, which needs the trainer's max_epochs, but it is {max_epochs} (training "
                             "bounded by max_steps or max_time?): set trainer.max_epochs, or close_mosaic: 0")
        if hp.close_mosaic >= max_epochs:
            rank_zero_warn(f"close_mosaic={hp.close_mosaic} >= max_epochs={max_epochs}: no epoch uses mosaic")
        return max_epochs - hp.close_mosaic

    def train_dataloader(self) -> DataLoader:
        # The stop epoch reaches the workers with the dataset when they start; each sample key carries its
        # epoch, so the switch itself happens per sample in the workers (see data/detection/mosaic.py).
        dataset = self.datasets["train"]
        if hasattr(dataset, "stop_epoch"):
            dataset.stop_epoch = self.mosaic_stop_epoch()
        return super().train_dataloader()
