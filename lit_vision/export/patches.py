"""Two torchvision functions restated so that ``torch.export`` can trace its detectors (exported program, dynamo ONNX).

``torch.export`` traces with symbolic sizes; the number of boxes after a score threshold is data-dependent (an
"unbacked" size), and Python code that branches on it or turns it into an ``int`` stops the export:

* ``torchvision.ops.boxes.batched_nms`` branches on ``boxes.numel()`` (two strategies, and an early return
  for no boxes). The replacement always takes the coordinate-offset strategy (torchvision's own for small inputs
  and whenever it traces for ONNX), with a ``max()`` that is defined for no boxes.
* ``torchvision.ops.poolers._multiscale_roi_align`` (Faster R-CNN) sizes its result with ``len(rois)``; the
  replacement uses ``rois.shape[0]`` and ``index_put``.

Both compute the same values; they are swapped in only inside :func:`export_friendly_torchvision`, and the
export's check compares the exported program with the unpatched model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-wise NMS by shifting each class's boxes apart (``torchvision.ops.batched_nms``, one strategy)."""
    from torchvision.ops import nms

    max_coordinate = torch.cat([boxes.flatten(), boxes.new_zeros(1)]).max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def multiscale_roi_align(x_filtered: list[Tensor], boxes: list[Tensor], output_size: list[int], sampling_ratio: int,
                         scales: list[float] | None, mapper: object | None) -> Tensor:
    """``torchvision.ops.poolers._multiscale_roi_align`` without ``len()`` of a data-dependent tensor."""
    from torchvision.ops import roi_align
    from torchvision.ops.poolers import _convert_to_roi_format

    if scales is None or mapper is None:
        raise ValueError("scales and mapper should not be None")
    rois = _convert_to_roi_format(boxes)
    if len(x_filtered) == 1:
        return roi_align(x_filtered[0], rois, output_size=output_size, spatial_scale=scales[0],
                         sampling_ratio=sampling_ratio)
    levels = mapper(boxes)  # type: ignore[operator]
    result = x_filtered[0].new_zeros((rois.shape[0], x_filtered[0].shape[1], *output_size))
    for level, (feature, scale) in enumerate(zip(x_filtered, scales)):
        index = torch.where(levels == level)[0]
        pooled = roi_align(feature, rois[index], output_size=output_size, spatial_scale=scale,
                           sampling_ratio=sampling_ratio)
        result = result.index_put((index,), pooled.to(result.dtype))
    return result


@contextlib.contextmanager
def export_friendly_torchvision() -> Iterator[None]:
    """Swap in the two functions above while ``torch.export`` traces (torchvision looks both up at call time)."""
    import torchvision.ops.boxes as boxes_module
    import torchvision.ops.poolers as poolers_module

    saved = boxes_module.batched_nms, poolers_module._multiscale_roi_align
    boxes_module.batched_nms, poolers_module._multiscale_roi_align = batched_nms, multiscale_roi_align
    try:
        yield
    finally:
        boxes_module.batched_nms, poolers_module._multiscale_roi_align = saved


__all__ = ["batched_nms", "export_friendly_torchvision", "multiscale_roi_align"]
