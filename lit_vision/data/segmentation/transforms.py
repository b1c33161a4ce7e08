"""Transform presets for semantic segmentation, on ``torchvision.transforms.v2`` kernels and ``tv_tensors``.

A sample is ``(image, mask)``: a PIL image or uint8 ``[3, H, W]`` tensor, and a uint8 ``[H, W]`` class-index
mask (``255`` = ignore) or ``None`` (prediction). The mask is always resized with ``NEAREST_EXACT``, which
samples the source pixel whose centre is nearest, the same pixel grid the bilinear image resize uses (plain
``NEAREST`` is shifted by up to half a pixel), and it never invents class values.

Every geometric step pads at the **bottom/right only** (image with 0 *after* normalisation, i.e. the mean
colour, mask with 255), so the resized content always sits at the top-left of the tensor. The transform
returns that content's size, and a prediction maps back to the original image with
:func:`~lit_vision.geometry.restore_size` (crop ``[:h2, :w2]``, resize to ``orig_size``).

Training (:func:`segmentation_train_transforms`): scale so the longer side is ``base_size * U(lo, hi)``,
horizontal flip, random crop to ``crop_size`` (bottom/right padding where the scaled image is smaller),
colour jitter (image only), float + ImageNet normalisation. Cropping before padding is equivalent to
torchvision's reference (pad to the crop size, then crop at a random offset) but touches fewer pixels.
Evaluation (:func:`segmentation_eval_transforms`): longer side = ``image_size``, pad to a square, so a
batch stacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from lit_vision.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from lit_vision.geometry import NEAREST

TransformOutput = tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"sizes must be positive, got {size}")
    return int(h), int(w)


class SegmentationTransform:
    """``(image, mask) -> (image, mask, content_size)``; see the module docstring for the order of steps.

    Args:
        base_size: the longer side of the image at scale 1.
        crop_size: ``(h, w)`` (or one int) of the output tensor: larger content is cropped (at a random
            offset when ``random_crop``, else at the top-left), smaller content is padded bottom/right.
        scale_range: ``(lo, hi)``: the longer side becomes ``base_size * U(lo, hi)``; ``None``: exactly
            ``base_size``.
        hflip: flip image and mask together with probability 0.5.
        color_jitter: brightness/contrast/saturation strength of ``v2.ColorJitter`` (0 = off); image only.
        random_crop: crop at a random offset (training) rather than at the top-left.
        mean, std: normalisation (ImageNet's by default; the DataModules pass the backbone's).
    """

    def __init__(
        self,
        base_size: int,
        crop_size: int | Sequence[int],
        scale_range: Sequence[float] | None = None,
        hflip: bool = False,
        color_jitter: float = 0.0,
        random_crop: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if base_size < 1:
            raise ValueError(f"base_size must be positive, got {base_size}")
        if scale_range is not None and not (len(scale_range) == 2 and 0 < scale_range[0] <= scale_range[1]):
            raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        if color_jitter < 0:
            raise ValueError(f"color_jitter must be >= 0, got {color_jitter}")
        self.base_size = base_size
        self.crop_size = _pair(crop_size)
        self.scale_range = tuple(scale_range) if scale_range is not None else None
        self.hflip = hflip
        self.color_jitter = float(color_jitter)
        self.random_crop = random_crop
        self.mean, self.std = list(mean), list(std)
        self.jitter = (v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter)
                       if color_jitter > 0 else None)

    def __call__(self, image: Any, mask: torch.Tensor | None = None) -> TransformOutput:
        """Returns ``(float image [3, ch, cw], uint8 mask [ch, cw] or None, content_size (h2, w2))``."""
        image = image if isinstance(image, tv_tensors.Image) else F.to_image(image)
        if mask is not None:
            mask = tv_tensors.Mask(torch.as_tensor(mask, dtype=torch.uint8))
            if mask.shape[-2:] != image.shape[-2:]:
                raise ValueError(f"mask size {tuple(mask.shape[-2:])} differs from image size "
                                 f"{tuple(image.shape[-2:])}")
        h, w = image.shape[-2:]
        factor = float(torch.empty(1).uniform_(*self.scale_range)) if self.scale_range is not None else 1.0
        ratio = self.base_size * factor / max(h, w)
        size = [max(1, round(h * ratio)), max(1, round(w * ratio))]
        if size != [h, w]:
            image = F.resize(image, size, antialias=True)
            mask = F.resize(mask, size, interpolation=NEAREST) if mask is not None else None
        if self.hflip and torch.rand(()) < 0.5:
            image = F.horizontal_flip(image)
            mask = F.horizontal_flip(mask) if mask is not None else None
        (h, w), (ch, cw) = image.shape[-2:], self.crop_size
        if h > ch or w > cw:
            top = int(torch.randint(0, max(h - ch, 0) + 1, ())) if self.random_crop else 0
            left = int(torch.randint(0, max(w - cw, 0) + 1, ())) if self.random_crop else 0
            image = F.crop(image, top, left, min(h, ch), min(w, cw))
            mask = F.crop(mask, top, left, min(h, ch), min(w, cw)) if mask is not None else None
        content = (int(image.shape[-2]), int(image.shape[-1]))
        if self.jitter is not None:
            image = self.jitter(image)
        image = F.normalize(F.to_dtype(image, torch.float32, scale=True), self.mean, self.std)
        padding = [0, 0, cw - content[1], ch - content[0]]  # left, top, right, bottom
        if padding[2] or padding[3]:
            image = F.pad(image, padding, fill=0.0)
            mask = F.pad(mask, padding, fill=IGNORE_INDEX) if mask is not None else None
        return image.as_subclass(torch.Tensor), (mask.as_subclass(torch.Tensor) if mask is not None else None), content

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(base_size={self.base_size}, crop_size={self.crop_size}, "
                f"scale_range={self.scale_range}, hflip={self.hflip}, color_jitter={self.color_jitter}, "
                f"random_crop={self.random_crop})")


def segmentation_train_transforms(
    base_size: int = 512,
    crop_size: int | Sequence[int] | None = None,
    scale_range: Sequence[float] | None = (0.5, 2.0),
    hflip: bool = True,
    color_jitter: float = 0.3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SegmentationTransform:
    """Training preset: random scale of ``base_size``, flip, random ``crop_size`` crop (padded with ignore),
    colour jitter, normalise. ``crop_size=None`` crops ``base_size x base_size``."""
    return SegmentationTransform(base_size, crop_size or base_size, scale_range, hflip, color_jitter,
                                 random_crop=True, mean=mean, std=std)


def segmentation_eval_transforms(
    image_size: int = 512,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> SegmentationTransform:
    """Evaluation preset: longer side = ``image_size`` (aspect kept), pad bottom/right to a square, normalise."""
    return SegmentationTransform(image_size, image_size, None, False, 0.0, random_crop=False, mean=mean, std=std)


def segmentation_collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into ``{"image": [B, 3, H, W], "mask": [B, H, W], "path": [...], "meta": [...]}``.

    ``mask`` is present only when every item has one (prediction items have none). Items must share one
    size, which both presets guarantee (``crop_size`` in training, ``image_size`` squares in evaluation).
    """
    sizes = {tuple(item["image"].shape) for item in items}
    if len(sizes) > 1:
        raise ValueError(f"cannot batch images of different sizes {sorted(sizes)}; use the segmentation presets "
                         "(they pad every image to one size) or batch_size=1")
    batch: dict[str, Any] = {"image": torch.stack([item["image"] for item in items])}
    if all("mask" in item for item in items):
        batch["mask"] = torch.stack([item["mask"] for item in items])
    batch["path"] = [item["path"] for item in items]
    batch["meta"] = [item["meta"] for item in items]
    return batch

