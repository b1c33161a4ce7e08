"""What every semantic-segmentation DataModule shares: mask reading and checks, the dataset, setup and loaders.

**Item contract** (the task and the models rely on it): ``{"image": float [3, H, W]`` normalised with the
DataModule's mean/std (by default what the backbone's pretrained weights expect: ImageNet's for ``tv/``),
``"mask": long [H, W]`` with class indices ``0..K-1`` and ``255`` = ignore, ``"path": str``,
``"meta": {"orig_size": (h, w), "content_size": (h2, w2)}}``. The content is at the top-left of the tensor
(padding is bottom/right only), so a prediction maps back with
:func:`~lit_vision.geometry.restore_size`. Prediction items have no ``"mask"``.

Masks are uint8 until the item is built (255 is reserved for "ignore", so at most 255 classes fit).
Every mask is checked when it is read (its size against its image's, its values against ``num_classes``),
so a bad file raises :class:`DataError` naming it even mid-epoch; ``setup`` checks them all up front (with
``verify_images``, like the detection DataModules) so that happens before training starts.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from lit_vision.constants import IGNORE_INDEX
from lit_vision.contracts import DataInfo
from lit_vision.data.base import SplitDataModule
from lit_vision.data.checks import (
    IMAGE_READ_ERRORS,
    DataError,
    check_image,
    checked_predict_paths,
    exif_applies,
    load_rgb,
    oriented_size,
    should_verify,
    warn_exif_ignored,
)
from lit_vision.data.segmentation.transforms import (
    SegmentationTransform,
    segmentation_collate,
    segmentation_eval_transforms,
    segmentation_train_transforms,
)
from lit_vision.palette import voc_palette

MAX_CLASSES = 255  # 0..254; 255 is the ignore index


def read_index_mask(path: str | Path) -> np.ndarray:
    """The class indices stored in a palette (``"P"``) or greyscale (``"L"``) image, as uint8 ``[H, W]``.

    A palette PNG's pixels *are* indices (the palette only colours them for viewing), so no colour lookup
    happens. Any other mode (an RGB rendering of a mask, 16-bit, ...) is refused: reading its colours as
    classes would silently train on garbage.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DataError(
                    f"mask {path} has mode {im.mode!r}: expected a palette ('P') or greyscale ('L') image whose "
                    "pixel values are class indices (convert colour masks to index masks first)"
                )
            return np.array(im, dtype=np.uint8)
    except FileNotFoundError as err:
        raise DataError(f"mask file {path} does not exist") from err
    except IMAGE_READ_ERRORS as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"cannot read mask {path}: {err}") from err


def check_mask(mask: np.ndarray, where: str, image_size: tuple[int, int], num_classes: int, image: str) -> None:
    """Raise :class:`DataError` naming ``where`` if ``mask`` is not ``image_size`` or holds unknown classes."""
    if tuple(mask.shape) != tuple(image_size):
        raise DataError(f"mask {where} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {image} is "
                        f"{image_size[1]}x{image_size[0]}")
    counts = np.bincount(mask.ravel(), minlength=256)
    bad = [int(v) for v in np.flatnonzero(counts[num_classes:]) + num_classes if v != IGNORE_INDEX]
    if bad:
        raise DataError(f"mask {where} holds class indices {bad[:10]} outside 0..{num_classes - 1} "
                        f"({num_classes} classes; {IGNORE_INDEX} = ignore)")


class SegmentationDataset(Dataset):
    """Images with class-index masks (or without, for prediction), served in the item contract.

    Args:
        image_paths: image files.
        mask_paths: one index mask per image (see :func:`read_index_mask`), or ``None`` for no masks.
        num_classes: masks may hold ``0..num_classes-1`` and 255.
        transforms: a :class:`SegmentationTransform`; ``None`` serves the original pixels as float in
            ``[0, 1]`` (not normalised) with the original mask (``content_size == orig_size``).
        describe: where the list came from (split file, JSON), for messages.
    """

    def __init__(
        self,
        image_paths: Sequence[str | Path],
        mask_paths: Sequence[str | Path] | None,
        num_classes: int,
        transforms: SegmentationTransform | Callable | None = None,
        describe: str = "",
    ) -> None:
        self.image_paths = [str(p) for p in image_paths]
        self.mask_paths = [str(p) for p in mask_paths] if mask_paths is not None else None
        if self.mask_paths is not None and len(self.mask_paths) != len(self.image_paths):
            raise ValueError("image_paths and mask_paths must have the same length")
        self.num_classes = num_classes
        self.transforms = transforms
        self.describe = describe
        self.with_masks = self.mask_paths is not None
        self._cache: list[tuple[torch.Tensor, torch.Tensor | None]] | None = None
        self._checked = False

    def __len__(self) -> int:
        return len(self.image_paths)

    def mask_source(self, index: int) -> str:
        """What a message about the mask of ``index`` names (the PNG; COCO: the JSON and image id)."""
        return self.mask_paths[index] if self.mask_paths is not None else "(no mask)"

    def read_mask(self, index: int, height: int, width: int) -> np.ndarray:
        """uint8 ``[H, W]`` class indices of item ``index`` (``height``/``width``: its image's size)."""
        return read_index_mask(self.mask_paths[index])

    def annotated_size(self, index: int) -> tuple[int, int] | None:
        """``(w, h)`` the annotation of ``index`` gives its image (here: the mask file's; ``None`` without
        masks): the image's EXIF orientation is applied only if that is its rotated size (masks are index
        maps, never rotated: see :func:`~lit_vision.data.checks.exif_applies`)."""
        if self.mask_paths is None:
            return None
        path = self.mask_paths[index]
        try:
            with Image.open(path) as im:
                return im.size
        except FileNotFoundError as err:
            raise DataError(f"mask file {path} does not exist") from err
        except IMAGE_READ_ERRORS as err:
            raise DataError(f"cannot read mask {path}: {err}") from err

    def annotation_where(self, index: int) -> str:
        """How a size message names the annotation of ``index``."""
        return f"mask {self.mask_source(index)}"

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 image ``[3, H, W]`` and checked uint8 mask ``[H, W]`` (``None`` without masks)."""
        if self._cache is not None:
            image, mask = self._cache[index]
            return image, (mask if self.with_masks else None)
        path = self.image_paths[index]
        # Served without masks too (predicting the val split): the same pixels as validation saw.
        image = F.pil_to_tensor(load_rgb(path, self.annotated_size(index), self.annotation_where(index)))
        if not self.with_masks:
            return image, None
        h, w = image.shape[-2:]
        mask = self.read_mask(index, h, w)
        check_mask(mask, self.mask_source(index), (h, w), self.num_classes, path)
        return image, torch.from_numpy(mask)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.load(index)
        return self.make_item(image, mask, self.image_paths[index])

    def make_item(self, image: torch.Tensor, mask: torch.Tensor | None, path: str) -> dict[str, Any]:
        """The item contract from a decoded uint8 image and mask (``None``: no mask), through the transforms."""
        orig_size = (int(image.shape[-2]), int(image.shape[-1]))
        if self.transforms is not None:
            image, mask, content_size = self.transforms(image, mask)
        else:
            image, content_size = F.to_dtype(image, torch.float32, scale=True), orig_size
        item: dict[str, Any] = {"image": image}
        if mask is not None:
            item["mask"] = mask.long()
        item["path"] = path
        item["meta"] = {"orig_size": orig_size, "content_size": tuple(content_size)}
        return item

    # ------------------------------------------------------------------ checks, cache, copies
    def _problem(self, index: int, exif_ignored: list[str]) -> str | None:
        path = self.image_paths[index]
        message = check_image(path)
        if message is not None:
            return f"{path}: {message}"
        if not self.with_masks:
            return None
        try:
            size = oriented_size(path)
            annotated = self.annotated_size(index)
            applies = annotated is not None and exif_applies(size, annotated, path, self.annotation_where(index))
            if size.orientation != 1 and not applies:
                exif_ignored.append(path)  # list.append is atomic: safe from the pool's threads
            w, h = size.shown if applies else size.stored
            check_mask(self.read_mask(index, h, w), self.mask_source(index), (h, w), self.num_classes, path)
        except DataError as err:
            return str(err)
        return None

    def check(self, num_threads: int = 4) -> None:
        """Decode every image and mask; raise one :class:`DataError` listing every bad file (up to 20)."""
        if self._checked:
            return
        exif_ignored: list[str] = []
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            found = pool.map(lambda i: self._problem(i, exif_ignored), range(len(self)))
            problems = [p for p in found if p is not None]
        if problems:
            listing = "\n".join(f"  {p}" for p in problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise DataError(f"{len(problems)} bad image/mask pair(s) in {self.describe or 'the dataset'}:\n"
                            f"{listing}{more}")
        warn_exif_ignored(sorted(exif_ignored), self.describe or "the dataset")
        self._checked = True

    def cache(self, num_threads: int = 4) -> None:
        """Keep every decoded image and mask in memory (uint8): for small data, decoding dominates the epoch.

        Copies made afterwards (:meth:`with_transforms`) share the cache; DataLoader workers forked after
        ``setup`` read it without copying the tensors.
        """
        if self._cache is None:
            with ThreadPoolExecutor(max_workers=num_threads) as pool:
                self._cache = list(pool.map(self.load, range(len(self))))

    def with_transforms(self, transforms: Callable | None) -> SegmentationDataset:
        """A shallow copy with other transforms (paths, annotations and cache shared)."""
        out = copy.copy(self)
        out.transforms = transforms
        return out

    def without_masks(self) -> SegmentationDataset:
        """A shallow copy that serves prediction items (no ``"mask"``)."""
        out = copy.copy(self)
        out.with_masks = False
        return out


def check_class_names(class_names: Sequence[str]) -> list[str]:
    """The class names as strings; empty, repeated or more than fit a uint8 mask raise :class:`DataError`."""
    names = [str(c) for c in class_names]
    if not names or len(set(names)) != len(names):
        raise DataError(f"class_names must be non-empty and unique, got {names}")
    if len(names) > MAX_CLASSES:
        raise DataError(f"{len(names)} classes: at most {MAX_CLASSES} fit (index {IGNORE_INDEX} means ignore)")
    return names


class SegmentationDataModule(SplitDataModule):
    """Base of the annotated segmentation DataModules: transforms, checks, caching, setup.

    Subclasses call this constructor, then fill ``self.sources`` (split -> checked dataset) and set the
    class names (:meth:`_set_class_names`) in their ``__init__``, so ``num_classes`` is known when the CLI
    builds the model. Without ``predict_paths``, predict serves the val split's images *without* masks, so
    predict batches look the same whatever their source.

    Args:
        image_size: evaluation: longer side, padded to a square; training: the longer side at scale 1.
        crop_size: training crop (default ``image_size``); padded bottom/right with ignore where smaller.
        scale_range: training scale factors of ``image_size`` (``None``: no random scaling).
        hflip, color_jitter: training augmentation (see :func:`segmentation_train_transforms`).
        mean, std: image normalisation; ``None``: what the model's pretrained weights expect
            (:func:`~lit_vision.backbones.pretrained_config`, told by the task in ``setup``: ImageNet's for ``tv/``
            backbones, 0.5/0.5 for many timm ViTs), ImageNet's without a model.
        palette: flat ``[r, g, b] * 256`` list for writing predicted masks; default the VOC palette.
        cache_images: keep decoded images and masks in memory after ``setup`` (small data only).
        verify_images: decode and check every image and mask in ``setup``; ``None`` = up to 20,000 per split.
        predict_paths: folders (searched recursively) or image files; default the val split's images (no masks).
        batch_size, drop_last: loaders (``drop_last`` drops a short last training batch: BatchNorm in ASPP
            pooling fails on 1). Other loader arguments: see :class:`~lit_vision.data.base.SplitDataModule`.
    """

    collate_fn = staticmethod(segmentation_collate)
    ignore_index: int = IGNORE_INDEX
    sources: dict[str, SegmentationDataset]

    def __init__(
        self,
        image_size: int = 512,
        crop_size: int | None = None,
        scale_range: tuple[float, float] | None = (0.5, 2.0),
        hflip: bool = True,
        color_jitter: float = 0.3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        palette: list[int] | None = None,
        cache_images: bool = False,
        verify_images: bool | None = None,
        predict_paths: str | list[str] | None = None,
        batch_size: int = 8,
        drop_last: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, drop_last=drop_last, **kwargs)
        self.save_hyperparameters(ignore=["class_names"])  # the model holds them (the CLI links them)

    def _set_class_names(self, class_names: Sequence[str]) -> None:
        self._class_names = check_class_names(class_names)

    @property
    def palette(self) -> list[int]:
        """Flat ``[r, g, b] * 256`` palette for writing predicted masks as PNGs (VOC's unless configured)."""
        palette = self.hparams.get("palette")
        return list(palette) if palette is not None else voc_palette()

    @property
    def normalization(self) -> tuple[list[float], list[float]]:
        """The ``(mean, std)`` images are normalised with (given, else the model's, else ImageNet's)."""
        return self.resolve_normalization(self.hparams.mean, self.hparams.std)

    def data_info(self) -> DataInfo:
        return DataInfo(class_names=list(self.class_names or []), palette=self.palette, ignore_index=self.ignore_index,
                        extra={"normalize": self.normalization})

    def train_transform(self) -> SegmentationTransform:
        hp = self.hparams
        mean, std = self.normalization
        return segmentation_train_transforms(hp.image_size, hp.crop_size, hp.scale_range, hp.hflip, hp.color_jitter,
                                             mean=mean, std=std)

    def eval_transform(self) -> SegmentationTransform:
        mean, std = self.normalization
        return segmentation_eval_transforms(self.hparams.image_size, mean=mean, std=std)

    def build_dataset(self, split: str) -> SegmentationDataset:
        hp = self.hparams
        if split == "predict" and hp.predict_paths is not None:
            paths = checked_predict_paths(hp.predict_paths, hp.verify_images)
            return SegmentationDataset(paths, None, self.num_classes or 0, self.eval_transform(), "predict_paths")
        source = self._split_source("val" if split == "predict" else split)
        if should_verify(hp.verify_images, len(source)):
            source.check()
        if hp.cache_images:
            source.cache()
        dataset = source.with_transforms(self.train_transform() if split == "train" else self.eval_transform())
        return dataset.without_masks() if split == "predict" else dataset
