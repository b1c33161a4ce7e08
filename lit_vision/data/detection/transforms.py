"""Transform presets for detection, built on ``torchvision.transforms.v2`` with ``tv_tensors``.

A sample is ``(image, target)``: ``image`` a PIL image or ``tv_tensors.Image``, ``target`` a dict with
``"boxes"`` (``tv_tensors.BoundingBoxes``, XYXY, ``canvas_size`` = image size), ``"labels"`` and optionally
``"masks"`` (``tv_tensors.Mask``). v2 moves boxes and masks with the pixels, so flips and resizes can never
disagree with the image.

The geometric step (resize or letterbox) is done by :class:`DetectionTransform` itself rather than by a v2
op, because it must *record* what it did: ``target["scale"] = (sx, sy)`` and ``target["pad"] =
(left, top, right, bottom)``, so predictions map back to original pixels exactly with
:func:`~lit_vision.geometry.boxes_to_original` (``x = (x' - left) / sx``). ``sx``/``sy`` are the per-axis
factors v2 applies to the boxes (new size / old size, after rounding the image size), hence the inverse is exact.
Random flips (training only) are not recorded: nothing maps training outputs back.

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


def box_candidates(before: torch.Tensor, after: torch.Tensor, min_size: float = 2.0,
                   min_area_fraction: float = 0.1, max_aspect: float = 100.0) -> torch.Tensor:
    """Which boxes survive a crop (YOLOv8's candidate rule): ``after`` (clipped) wider and taller than ``min_size``,
    keeping more than ``min_area_fraction`` of the area of ``before`` (the same boxes, unclipped), aspect
    ratio under ``max_aspect``. Both ``[N, 4]`` XYXY in output pixels."""
    eps = 1e-16
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = torch.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > min_size) & (h2 > min_size) & (w2 * h2 / (w1 * h1 + eps) > min_area_fraction) & (aspect < max_aspect)


class DetectionTransform:
    """``(image, target) -> (image, target)``: resize/letterbox (recorded), then the v2 ``ops``.

    Args:
        image_size: longer side after resizing (``letterbox``: side of the square canvas).
        scale_range: ``(lo, hi)``: multiply ``image_size`` by ``U(lo, hi)`` per sample (training). With
            ``letterbox`` and no ``translate`` the content is never larger than the canvas (the factor is capped
            at 1) and stays centred, so every object stays whole.
        letterbox: pad the resized image, centred, to ``image_size x image_size`` with :data:`LETTERBOX_FILL`.
        ops: v2 transforms applied after the geometric step (flip, photometric, dtype, sanitize).
        translate: letterbox training only; ``> 0`` (YOLOv8: 0.1) gives YOLOv8's random affine outside a mosaic:
            the letterboxed square zoomed by the whole ``U(lo, hi)`` about its centre (a gain above 1 crops the
            edges), then shifted by ``U(-translate, translate) * image_size`` per axis. Boxes are clipped and kept
            by :func:`box_candidates` (more than 10 % of a box left, wider and taller than 2 px), as in a mosaic.
            Without it, the last ``close_mosaic`` epochs of a small dataset see every image centred and never
            zoomed in, and overfit (``benchmarks/README.md``, YOLO on real photos).
    """

    def __init__(
        self,
        image_size: int,
        scale_range: Sequence[float] | None = None,
        letterbox: bool = False,
        ops: Sequence[v2.Transform] = (),
        translate: float = 0.0,
    ) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if scale_range is not None and not (len(scale_range) == 2 and 0 < scale_range[0] <= scale_range[1]):
            raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        if not 0 <= translate < 0.5:
            raise ValueError(f"translate is a fraction of image_size: 0 <= translate < 0.5, got {translate} "
                             "(YOLOv8 uses 0.1)")
        if translate and not letterbox:
            raise ValueError("translate shifts the letterboxed square: it needs letterbox=True")
        self.image_size = image_size
        self.scale_range = tuple(scale_range) if scale_range is not None else None
        self.letterbox = letterbox
        self.translate = translate
        self.ops = v2.Compose(list(ops) or [v2.Identity()])  # v2.Compose refuses an empty list

    def _target_long_side(self) -> float:
        factor = random.uniform(*self.scale_range) if self.scale_range is not None else 1.0
        if self.letterbox:
            factor = min(factor, 1.0)
        return self.image_size * factor

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        image = F.to_image(image) if not isinstance(image, tv_tensors.Image) else image
        target = dict(target)
        if self.translate:
            return self.ops(*self._affine(image, target))
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

    def _affine(self, image: tv_tensors.Image, target: dict[str, Any]) -> tuple[tv_tensors.Image, dict[str, Any]]:
        """YOLOv8's scale-and-shift of the letterboxed square, as one resize and one paste (no rotation or shear:
        the affine is a zoom about the centre plus a shift, so only the visible part is composed, in uint8)."""
        s = self.image_size
        h, w = image.shape[-2:]
        gain = random.uniform(*self.scale_range) if self.scale_range is not None else 1.0
        tx, ty = random.uniform(-self.translate, self.translate), random.uniform(-self.translate, self.translate)
        new_h, new_w = max(1, round(h * s * gain / max(h, w))), max(1, round(w * s * gain / max(h, w)))
        left, top = round((s - new_w) / 2 + tx * s), round((s - new_h) / 2 + ty * s)  # resized image in the output
        x0, x1, y0, y1 = max(left, 0), min(left + new_w, s), max(top, 0), min(top + new_h, s)
        resized = F.resize(image, [new_h, new_w], antialias=True)
        canvas = torch.full((image.shape[0], s, s), LETTERBOX_FILL, dtype=image.dtype)
        if x1 > x0 and y1 > y0:
            canvas[:, y0:y1, x0:x1] = resized[:, y0 - top:y1 - top, x0 - left:x1 - left]
        factors = torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h])
        before = target["boxes"].as_subclass(torch.Tensor).float() * factors + torch.tensor([left, top, left, top])
        after = before.clamp(0, s)
        keep = box_candidates(before, after)
        target["boxes"] = tv_tensors.BoundingBoxes(after[keep], format="XYXY", canvas_size=(s, s))
        target["labels"] = target["labels"][keep]
        if "masks" in target:
            masks = F.resize(tv_tensors.Mask(target["masks"][keep]), [new_h, new_w])  # only the kept objects
            pasted = torch.zeros((masks.shape[0], s, s), dtype=masks.dtype)
            if x1 > x0 and y1 > y0:
                pasted[:, y0:y1, x0:x1] = masks[:, y0 - top:y1 - top, x0 - left:x1 - left]
            target["masks"] = tv_tensors.Mask(pasted)
        # Recorded like the resize it is (nothing maps training outputs back; a negative pad is a crop).
        target["scale"] = (new_w / w, new_h / h)
        target["pad"] = (left, top, s - new_w - left, s - new_h - top)
        return tv_tensors.Image(canvas), target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(image_size={self.image_size}, scale_range={self.scale_range}, "
                f"letterbox={self.letterbox}, translate={self.translate}, ops={self.ops})")


def detection_train_transforms(
    image_size: int = 640,
    hflip: bool = True,
    scale_range: Sequence[float] | None = (0.5, 1.5),
    photometric: bool | str = True,
    letterbox: bool = False,
    translate: float = 0.0,
) -> DetectionTransform:
    """Training preset: (jittered) aspect-preserving resize or letterbox, flip, photometric distortion.

    ``photometric``: ``True``/``"distort"`` torchvision's ``RandomPhotometricDistort`` (SSD's: brightness, contrast,
    saturation, hue, channel order); ``"yolo"`` YOLOv8's gains as a ``ColorJitter`` (value/brightness 0.4, saturation
    0.7; its +-0.015 hue dropped: on the CPU the hue step alone costs 3-4x the rest of the jitter, for +-5 degrees);
    ``False``/``"none"`` no colour change.

    ``translate`` (letterbox only): YOLOv8's random zoom and shift of the letterboxed square (see
    :class:`DetectionTransform`).

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
    return DetectionTransform(image_size, scale_range, letterbox, ops, translate)


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
