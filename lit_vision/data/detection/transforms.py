"""Transform presets for detection, built on ``torchvision.transforms.v2`` with ``tv_tensors``.

A sample is ``(image, target)``: ``image`` a PIL image or ``tv_tensors.Image``, ``target`` a dict with
``"boxes"`` (``tv_tensors.BoundingBoxes``, XYXY, ``canvas_size`` = image size), ``"labels"`` and optionally
``"masks"`` (``tv_tensors.Mask``). v2 moves boxes and masks with the pixels, so flips and resizes can never
disagree with the image.

The geometric step (resize or letterbox) is done by :class:`DetectionTransform` itself rather than by a v2
op, because it must *record* what it did: ``target["scale"] = (sx, sy)`` and ``target["pad"] =
(left, top, right, bottom)``, so predictions map back to original pixels exactly with
:func:`~lit_vision.geometry.boxes_to_original` (``x = (x' - left) / sx``). ``sx``/``sy`` are the per-axis factors v2 applies to
the boxes (new size / old size, after rounding the image size), hence the inverse is exact. Random flips
(training only) are not recorded: nothing maps training outputs back.

Images leave the presets as float tensors in ``[0, 1]``, not normalized: torchvision detectors normalize
inside the model (``GeneralizedRCNNTransform``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from lit_vision.data.packing import PackedBatch

LETTERBOX_FILL = 114  # grey, as YOLO-style detectors pad (uint8 value, 114/255 after ToDtype)


class DetectionTransform:
    """``(image, target) -> (image, target)``: resize/letterbox (recorded), then the v2 ``ops``.

    Args:
        image_size: longer side after resizing (``letterbox``: side of the square canvas).
        scale_range: ``(lo, hi)``: multiply ``image_size`` by ``U(lo, hi)`` per sample (training). With
            ``letterbox`` the content is never larger than the canvas (the factor is capped at 1), so the
            canvas stays square and fixed-size.
        letterbox: pad the resized image, centred, to ``image_size x image_size`` with :data:`LETTERBOX_FILL`.
        ops: v2 transforms applied after the geometric step (flip, photometric, dtype, sanitize).
    """

    def __init__(
        self,
        image_size: int,
        scale_range: Sequence[float] | None = None,
        letterbox: bool = False,
        ops: Sequence[v2.Transform] = (),
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if scale_range is not None and not (len(scale_range) == 2 and 0 < scale_range[0] <= scale_range[1]):
            raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        self.image_size = image_size
        self.scale_range = tuple(scale_range) if scale_range is not None else None
        self.letterbox = letterbox
        self.ops = v2.Compose(list(ops))

    def _target_long_side(self) -> float:
        factor = random.uniform(*self.scale_range) if self.scale_range is not None else 1.0
        if self.letterbox:
            factor = min(factor, 1.0)
        return self.image_size * factor

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        image = F.to_image(image) if not isinstance(image, tv_tensors.Image) else image
        target = dict(target)
        h, w = image.shape[-2:]
        long_side = self._target_long_side()
        ratio = long_side / max(h, w)
        new_h, new_w = max(1, round(h * ratio)), max(1, round(w * ratio))
        geometric = ("boxes", "masks")
        image = F.resize(image, [new_h, new_w], antialias=True)
        for key in geometric:
            if key in target:
                target[key] = F.resize(target[key], [new_h, new_w])
        pad = (0, 0, 0, 0)
        if self.letterbox:
            left, top = (self.image_size - new_w) // 2, (self.image_size - new_h) // 2
            pad = (left, top, self.image_size - new_w - left, self.image_size - new_h - top)
            image = F.pad(image, list(pad), fill=LETTERBOX_FILL)
            for key in geometric:
                if key in target:
                    target[key] = F.pad(target[key], list(pad), fill=0)
        target["scale"] = (new_w / w, new_h / h)
        target["pad"] = pad
        return self.ops(image, target)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(image_size={self.image_size}, scale_range={self.scale_range}, "
                f"letterbox={self.letterbox}, ops={self.ops})")


def detection_train_transforms(
    image_size: int = 640,
    hflip: bool = True,
    scale_range: Sequence[float] | None = (0.5, 1.5),
    photometric: bool | str = True,
    letterbox: bool = False,
) -> DetectionTransform:
    """Training preset: (jittered) aspect-preserving resize or letterbox, flip, photometric distortion.

    ``photometric``: ``True``/``"distort"`` torchvision's ``RandomPhotometricDistort`` (SSD's: brightness, contrast,
    saturation, hue, channel order); ``"yolo"`` YOLOv8's gains as a ``ColorJitter`` (value/brightness 0.4, saturation
    0.7; its +-0.015 hue dropped: on the CPU the hue step alone costs 3-4x the rest of the jitter, for +-5 degrees);
    ``False``/``"none"`` no colour change.

    ``SanitizeBoundingBoxes`` runs last and drops boxes (with their labels and masks) that became smaller
    than one pixel, so a detector never sees a degenerate box.
    """
    ops: list[v2.Transform] = []
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    if photometric in (True, "distort"):
        ops.append(v2.RandomPhotometricDistort())  # on uint8, before the float conversion
    elif photometric == "yolo":
        ops.append(v2.ColorJitter(brightness=0.4, saturation=0.7))
    elif photometric not in (False, "none"):
        raise ValueError(f"photometric must be 'distort', 'yolo' or 'none' (or a bool), got {photometric!r}")
    ops += [v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes()]
    return DetectionTransform(image_size, scale_range, letterbox, ops)


def detection_eval_transforms(image_size: int = 640, letterbox: bool = False) -> DetectionTransform:
    """Evaluation preset: deterministic resize (longer side = ``image_size``) or letterbox, float in [0, 1].

    No sanitizing: evaluation reads the ground-truth JSON, and predictions must be made on every image.
    """
    return DetectionTransform(image_size, None, letterbox, [v2.ToDtype(torch.float32, scale=True)])


def detection_collate(samples: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Batch dict items into ``{"image": [Tensor], "target": [dict], "path": [str]}``.

    Lists, not stacked tensors: detection images differ in size (torchvision detectors batch them
    themselves) and targets differ in object count. A :class:`~lit_vision.data.packing.PackedBatch`: from a
    loader worker its tensors travel as one buffer per dtype, not one shared-memory handle each.
    """
    return PackedBatch({key: [s[key] for s in samples] for key in ("image", "target", "path")})
