"""What every semantic-segmentation DataModule shares: mask reading and checks, the dataset, setup and loaders.

**Item contract** (the task and the models rely on it): ``{"image": float [3, H, W]`` normalised with ImageNet
mean/std, ``"mask": long [H, W]`` with class indices ``0..K-1`` and ``255`` = ignore, ``"path": str``,
``"meta": {"orig_size": (h, w), "content_size": (h2, w2)}}``. The content is at the top-left of the tensor
(padding is bottom/right only), so a prediction maps back with
:func:`~lit_vision.data.segmentation_transforms.restore_size`. Prediction items have no ``"mask"``.

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
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from lit_vision.data.base import SplitDataModule
from lit_vision.data.checks import DataError, check_image, load_rgb, resolve_image_paths, should_verify, verify_images
from lit_vision.data.segmentation_transforms import (
    IGNORE_INDEX,
    SegmentationTransform,
    segmentation_collate,
    segmentation_eval_transforms,
    segmentation_train_transforms,
)
from lit_vision.data.shapes import voc_palette

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
    except (OSError, SyntaxError, ValueError) as err:
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

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 image ``[3, H, W]`` and checked uint8 mask ``[H, W]`` (``None`` without masks)."""
        if self._cache is not None:
            image, mask = self._cache[index]
            return image, (mask if self.with_masks else None)
        path = self.image_paths[index]
        image = F.pil_to_tensor(load_rgb(path))
        if not self.with_masks:
            return image, None
        h, w = image.shape[-2:]
        mask = self.read_mask(index, h, w)
        check_mask(mask, self.mask_source(index), (h, w), self.num_classes, path)
        return image, torch.from_numpy(mask)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.load(index)
        orig_size = (int(image.shape[-2]), int(image.shape[-1]))
        if self.transforms is not None:
            image, mask, content_size = self.transforms(image, mask)
        else:
            image, content_size = F.to_dtype(image, torch.float32, scale=True), orig_size
        item: dict[str, Any] = {"image": image}
        if mask is not None:
            item["mask"] = mask.long()
        item["path"] = self.image_paths[index]
        item["meta"] = {"orig_size": orig_size, "content_size": tuple(content_size)}
        return item

    # ------------------------------------------------------------------ checks, cache, copies
    def _problem(self, index: int) -> str | None:
        path = self.image_paths[index]
        message = check_image(path)
        if message is not None:
            return f"{path}: {message}"
        if not self.with_masks:
            return None
        try:
            with Image.open(path) as im:
                w, h = im.size
            check_mask(self.read_mask(index, h, w), self.mask_source(index), (h, w), self.num_classes, path)
        except DataError as err:
            return str(err)
        return None

    def check(self, num_threads: int = 4) -> None:
        """Decode every image and mask; raise one :class:`DataError` listing every bad file (up to 20)."""
        if self._checked:
            return
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            problems = [p for p in pool.map(self._problem, range(len(self))) if p is not None]
        if problems:
            listing = "\n".join(f"  {p}" for p in problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise DataError(f"{len(problems)} bad image/mask pair(s) in {self.describe or 'the dataset'}:\n"
                            f"{listing}{more}")
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


class SegmentationDataModule(SplitDataModule):
    """Base of the segmentation DataModules: subclasses fill ``self.sources`` (split -> checked dataset) and
    ``self._class_names`` in ``__init__``, so ``num_classes`` is known when the CLI builds the model.

    Reads ``image_size``, ``crop_size``, ``scale_range``, ``hflip``, ``color_jitter``, ``palette``,
    ``cache_images``, ``verify_images`` and ``predict_paths`` (plus the loader options) from the hyper-parameters.
    Without ``predict_paths``, predict serves the val split's images *without* masks, so predict batches
    look the same whatever their source.
    """

    collate_fn = staticmethod(segmentation_collate)
    ignore_index: int = IGNORE_INDEX
    sources: dict[str, SegmentationDataset]  # filled by the subclass's __init__ (SplitDataModule starts it empty)

    def __init__(self) -> None:
        super().__init__()
        self._class_names: list[str] = []

    def _set_class_names(self, class_names: Sequence[str]) -> None:
        names = [str(c) for c in class_names]
        if not names or len(set(names)) != len(names):
            raise DataError(f"class_names must be non-empty and unique, got {names}")
        if len(names) > MAX_CLASSES:
            raise DataError(f"{len(names)} classes: at most {MAX_CLASSES} fit (index {IGNORE_INDEX} means ignore)")
        self._class_names = names

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self._class_names)

    @property
    def palette(self) -> list[int]:
        """Flat ``[r, g, b] * 256`` palette for writing predicted masks as PNGs (VOC's unless configured)."""
        palette = self.hparams.get("palette")
        return list(palette) if palette is not None else voc_palette()

    def train_transform(self) -> SegmentationTransform:
        hp = self.hparams
        return segmentation_train_transforms(hp.image_size, hp.crop_size, hp.scale_range, hp.hflip, hp.color_jitter)

    def eval_transform(self) -> SegmentationTransform:
        return segmentation_eval_transforms(self.hparams.image_size)

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": ["predict"]}
        for split in wanted[stage or "fit"]:
            if split in self.datasets:
                continue
            if split == "predict" and hp.get("predict_paths") is not None:
                paths = resolve_image_paths(hp.predict_paths)
                if should_verify(hp.verify_images, len(paths)):
                    verify_images(paths, "predict_paths")
                self.datasets[split] = SegmentationDataset(paths, None, self.num_classes, self.eval_transform(),
                                                           "predict_paths")
                continue
            if split == "test" and "test" not in self.sources:
                rank_zero_warn("no test data configured: testing on the validation split")
            source = self._split_source("val" if split == "predict" else split)
            if should_verify(hp.verify_images, len(source)):
                source.check()
            if hp.get("cache_images"):
                source.cache()
            transforms = self.train_transform() if split == "train" else self.eval_transform()
            dataset = source.with_transforms(transforms)
            self.datasets[split] = dataset.without_masks() if split == "predict" else dataset
