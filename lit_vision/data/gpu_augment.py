"""Finish classification batches on the training device: horizontal flips and normalisation of uint8 batches.

Why: a float32 image is 4x the bytes of its uint8 source, and normalising and flipping are cheap elementwise work
that the accelerator does in microseconds while the loader's CPU workers are the bottleneck. With
``normalize_on_device`` (every :class:`~lit_vision.data.base.SplitDataModule` takes it) the CPU part of each preset
stops at uint8 (decode, crop, colour jitter) and the batch is flipped and normalised after it reached the device.

The device half is not a copy of the preset: it is cut off the preset itself (:func:`split_for_device`), so the
mean/std and flip probability are the ones the preset was built with, and the ops it runs are torchvision's own
(``v2.functional.horizontal_flip``, ``to_dtype``, ``normalize``), which give the CPU pipeline's values exactly for the
same flip decisions (tests/data/test_gpu_augment.py).

The DataModule keeps the device half per split (``SplitDataModule.device_transforms``) and runs it in its
``on_before_batch_transfer`` hook: Lightning calls only one owner's ``*_batch_transfer`` hooks (the DataModule's when
it has them), and the data is what knows its presets; the task sees ready float batches, as without the option.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = ["DeviceNormalizeFlip", "DeviceTransform", "NormalizeOnDevice", "split_for_device"]

# Ops a horizontal flip commutes with (each pixel's value depends only on its own colour, or on whole-image
# statistics such as ColorJitter's contrast mean, which a flip does not change): a flip placed before them in a
# preset may move after them, onto the device, without changing a single pixel.
FLIP_COMMUTES = (v2.ColorJitter, v2.RandomGrayscale, v2.Grayscale, v2.ToDtype, v2.Normalize, v2.ToPureTensor)


class DeviceTransform(Protocol):
    """What a DataModule runs per split on each collated CPU batch: returns the batch with ``"image"`` on ``device``,
    ready for the model (called before Lightning's own transfer moves the rest)."""

    def __call__(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]: ...


class DeviceNormalizeFlip(torch.nn.Module):
    """``uint8 [N, C, H, W]`` -> normalised ``float32``, each image flipped horizontally with probability ``hflip``.

    Flip decisions are drawn on the images' device from torch's generator there (seeded by ``seed_everything``),
    or given (``flips``: one bool per image), which is how the tests compare with the CPU pipeline.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], hflip: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"hflip must be a probability in [0, 1], got {hflip}")
        self.mean, self.std, self.hflip = [float(m) for m in mean], [float(s) for s in std], float(hflip)

    def forward(self, images: Tensor, flips: Tensor | None = None) -> Tensor:
        if images.ndim != 4:
            raise ValueError(f"expected a batch [N, C, H, W], got shape {tuple(images.shape)}")
        if flips is None and self.hflip > 0:
            flips = torch.rand(images.shape[0], device=images.device) < self.hflip
        if flips is not None:
            flips = flips.to(images.device).view(-1, 1, 1, 1)
            images = torch.where(flips, F.horizontal_flip(images), images)
        images = F.to_dtype(images.as_subclass(Tensor), torch.float32, scale=True)
        return F.normalize(images, self.mean, self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}, hflip={self.hflip}"


class NormalizeOnDevice:
    """The device stage of ``normalize_on_device``: move the uint8 ``batch["image"]`` (pinned by the loader, so the
    copy is asynchronous), then flip and normalise it there."""

    def __init__(self, op: DeviceNormalizeFlip) -> None:
        self.op = op

    def __call__(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        images = batch["image"]
        if images.dtype != torch.uint8:
            raise TypeError(f"normalize_on_device expects uint8 image batches, got {images.dtype}")
        batch["image"] = self.op(images.to(device, non_blocking=True))
        return batch

    def __repr__(self) -> str:
        return f"NormalizeOnDevice({self.op.extra_repr()})"


def split_for_device(transform: Any, where: str = "the transform") -> tuple[v2.Compose, DeviceNormalizeFlip]:
    """Cut a ``v2.Compose`` preset into its uint8 CPU part and the device part (flip, to float, normalise).

    The preset must end with ``ToDtype(float32, scale=True)`` and ``Normalize``; a ``RandomHorizontalFlip`` is moved
    only if every op after it commutes with a flip (:data:`FLIP_COMMUTES`), so the result is the same image either
    way. Anything else is refused with a message naming ``where`` rather than silently changing the augmentation.
    """
    if not isinstance(transform, v2.Compose):
        raise ValueError(f"normalize_on_device: {where} is {type(transform).__name__}, not a torchvision v2.Compose "
                         "preset; only image-only presets (classification) can be split")
    ops = list(transform.transforms)
    if (len(ops) < 2 or not isinstance(ops[-1], v2.Normalize) or not isinstance(ops[-2], v2.ToDtype)
            or ops[-2].dtype is not torch.float32 or not ops[-2].scale):
        raise ValueError(f"normalize_on_device: {where} does not end with ToDtype(float32, scale=True) + Normalize: "
                         f"{[type(o).__name__ for o in ops]}")
    normalize = ops.pop()
    ops.pop()  # ToDtype
    flip = 0.0
    flips = [i for i, o in enumerate(ops) if isinstance(o, v2.RandomHorizontalFlip)]
    if len(flips) > 1:
        raise ValueError(f"normalize_on_device: {where} flips more than once")
    if flips:
        i = flips[0]
        after = [type(o).__name__ for o in ops[i + 1:] if not isinstance(o, FLIP_COMMUTES)]
        if after:
            raise ValueError(f"normalize_on_device: {where} flips before {after}, which a flip does not commute with")
        flip = float(ops.pop(i).p)
    return v2.Compose(ops), DeviceNormalizeFlip(normalize.mean, normalize.std, hflip=flip)
