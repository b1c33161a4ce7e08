"""Geometry shared by data, tasks and writers: mapping outputs back to the original image.

The data presets record what they did to an image (detection: ``scale``/``pad`` in the target;
segmentation: ``content_size``/``orig_size`` in ``meta``); tasks and prediction writers undo it with the
functions here. They live outside ``data/`` so that tasks never import the data layer.

"The original image" is the one :func:`~lit_vision.data.checks.load_rgb` decoded: for a photo with an EXIF
orientation, the image as viewers show it (rotated), unless its annotation was made on the stored pixels;
boxes and masks of predictions refer to that image (docs/images.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as nnf
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

NEAREST = F.InterpolationMode.NEAREST_EXACT  # class-index resizes: same pixel grid as bilinear, no new values


def size_hw(value: Any) -> tuple[int, int] | None:
    """``(height, width)`` of an ``image_size`` as recipes give it: one number (a square), ``[s]`` or ``[h, w]``."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value), int(value)
    values = [int(v) for v in value]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def boxes_to_original(boxes: torch.Tensor, target: dict[str, Any], clamp: bool = True) -> torch.Tensor:
    """Map XYXY ``boxes`` from the transformed image back to the original image's pixels.

    Uses ``target["scale"]``/``target["pad"]`` recorded by :class:`DetectionTransform` (identity when absent),
    and clamps to ``target["orig_size"]`` when given and ``clamp``.
    """
    sx, sy = target.get("scale", (1.0, 1.0))
    left, top = target.get("pad", (0, 0, 0, 0))[:2]
    boxes = boxes.to(torch.float64 if boxes.dtype == torch.float64 else torch.float32)
    offset = boxes.new_tensor([left, top, left, top])
    factor = boxes.new_tensor([sx, sy, sx, sy])
    out = (boxes - offset) / factor
    if clamp and "orig_size" in target:
        h, w = target["orig_size"]
        out = torch.stack(
            [out[:, 0].clamp(0, w), out[:, 1].clamp(0, h), out[:, 2].clamp(0, w), out[:, 3].clamp(0, h)], dim=1
        ) if out.numel() else out
    return out


def restore_size(output: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """Map a model output back to the original image: crop the content, resize to ``meta["orig_size"]``.

    ``output`` is ``[..., H, W]``: class indices (integer dtype, resized with ``NEAREST_EXACT``) or
    logits/probabilities (float ``[C, H, W]`` or ``[B, C, H, W]``, resized bilinearly; take the argmax after).
    """
    h2, w2 = meta["content_size"]
    oh, ow = meta["orig_size"]
    cropped = output[..., :h2, :w2]
    if tuple(cropped.shape[-2:]) == (oh, ow):
        return cropped
    if output.is_floating_point():
        x = cropped if cropped.ndim == 4 else cropped.unsqueeze(0)
        out = nnf.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
        return out if cropped.ndim == 4 else out.squeeze(0)
    return F.resize(tv_tensors.Mask(cropped), [oh, ow], interpolation=NEAREST).as_subclass(torch.Tensor)
