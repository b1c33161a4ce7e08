"""Transform presets for classification, built on ``torchvision.transforms.v2``.

The presets follow the classic ImageNet recipe (RandomResizedCrop + flip + colour jitter for training,
Resize + CenterCrop for evaluation). Everything that matters for small or unusual data (image size, crop
scale, flipping, jitter strength, crop ratio, mean/std) is a parameter, because digits must not be
flipped and 32-px images must not be cropped like 224-px photos.

With ``fast_decode=True`` the first step (crop, or resize + centre crop) also accepts the image's *path* and
decodes only what it keeps (:mod:`lit_vision.data.classification.fast_decode`). Every op before the
normalisation runs on 8-bit pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from lit_vision.constants import IMAGENET_MEAN, IMAGENET_STD
from lit_vision.data.classification.fast_decode import (
    RandomResizedCropDecode,
    ResizeCenterCropDecode,
    ToCHW,
)


def classification_train_transforms(
    image_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale_range: Sequence[float] = (0.08, 1.0),
    hflip: bool = True,
    color_jitter: float = 0.4,
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    fast_decode: bool = False,
) -> v2.Compose:
    """Training preset: RandomResizedCrop, optional horizontal flip and colour jitter, normalize.

    Images are converted to uint8 tensors first so every op runs on tensors (faster than PIL for the
    small images tests and the demo use, and identical in meaning).

    ``fast_decode``: the crop also takes a path and decodes only what it keeps
    (:class:`~lit_vision.data.classification.fast_decode.RandomResizedCropDecode`: the same crops for the same
    seed). It returns the small crop as a PIL image, so the colour jitter runs on PIL pixels, ~1.5x cheaper than
    on a tensor (what torchvision's classic pipeline and timm do), and the flip follows the conversion to a
    tensor: flip and jitter commute, so the augmentation is the same, and the flip stays last before the
    normalisation, where ``normalize_on_device`` can move both to the device.
    """
    flip = [v2.RandomHorizontalFlip()] if hflip else []
    jitter = ([v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter)]
              if color_jitter > 0 else [])
    if fast_decode:
        ops = [RandomResizedCropDecode(image_size, scale_range, ratio), *jitter, ToCHW(), *flip]
    else:
        crop = v2.RandomResizedCrop(image_size, scale=tuple(scale_range), ratio=tuple(ratio), antialias=True)
        ops = [v2.ToImage(), crop, *flip, *jitter]
    return v2.Compose(ops + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))])


def classification_eval_transforms(
    image_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_pct: float = 0.875,
    fast_decode: bool = False,
) -> v2.Compose:
    """Evaluation preset: resize the short side to ``image_size / crop_pct``, then centre-crop.

    ``crop_pct=0.875`` is the classic 256 -> 224 ratio; ``1.0`` keeps the whole image (small images).
    ``fast_decode``: the first step also takes a path
    (:class:`~lit_vision.data.classification.fast_decode.ResizeCenterCropDecode`).
    """
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    resize = int(round(image_size / crop_pct))
    ops: list = (
        [ResizeCenterCropDecode(resize, image_size)] if fast_decode else
        [v2.ToImage(), v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)]
    )
    return v2.Compose(ops + [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))])
