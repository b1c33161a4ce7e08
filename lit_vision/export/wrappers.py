"""What gets exported: one small ``nn.Module`` per model family with a fixed tensor-in, tensors-out signature.

The task modules take what training needs (detectors a list of images and optional targets, segmenters return an
auxiliary head too); an exported model should take one batched tensor and return plain tensors, so any runtime can
call it. :func:`export_spec` picks the wrapper for a task's model and says what it expects and returns.

* classifier: ``images [B, 3, H, W]`` (normalised) -> ``logits [B, K]``.
* segmenter: ``images [B, 3, H, W]`` (normalised) -> ``logits [B, K, H, W]`` (the ``"out"`` head; ``"aux"`` dropped).
* detector: ``images [B, 3, H, W]`` in ``[0, 1]`` (the detectors normalise inside) -> ``boxes [N, 4]`` (XYXY pixels
  of the input image), ``scores [N]``, ``labels [N]`` (``0..K-1``), ``batch_index [N]`` (which image): one flat list
  for the whole batch, sorted by image, so every detector has the same outputs whatever it supports.
  torchvision's detectors loop over images in Python (transform, post-processing), which every exporter unrolls:
  they are exported for one image at a time (``B = 1``). :class:`YOLOExport` re-states our YOLO's post-processing
  with batched tensor ops (top-k per image, one NMS over all images with per-image class offsets), so it keeps a
  dynamic batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_vision.models.detection.base import Detector
from lit_vision.models.detection.yolo import YOLODetector

DETECTION_OUTPUTS = ("boxes", "scores", "labels", "batch_index")


class Normalize(nn.Module):
    """``(x - mean) / std`` in front of a model, for an export that takes ``[0, 1]`` images (``normalize_inside``)."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.model((images - self.mean) / self.std)


class ClassifierExport(nn.Module):
    """``images -> logits``: the classifier as it is (logits, not probabilities: softmax is one call away and
    keeps the exact values the task's metrics saw)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)


class SegmenterExport(nn.Module):
    """``images -> logits [B, K, H, W]``: the ``"out"`` head only (the auxiliary head serves a training loss)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)["out"]


class TorchvisionDetectorExport(nn.Module):
    """One image ``[1, 3, H, W]`` in ``[0, 1]`` -> boxes, scores, labels, batch_index (all zeros)."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # TorchScript's trace checks no input shape and records no Python assert: ``images[0]`` would drop every
        # image of a batch but the first. A reshape to one image is recorded, and fails on a batch.
        torch._assert(images.shape[0] == 1, "this exported detector takes one image at a time: [1, 3, H, W]")
        out = self.detector.model([images.reshape(images.shape[-3], images.shape[-2], images.shape[-1])])[0]
        labels = out["labels"] - self.detector.label_offset
        return out["boxes"], out["scores"], labels, torch.zeros_like(labels)


class YOLOExport(nn.Module):
    """Our YOLO with batched post-processing: ``images [B, 3, H, W]`` in ``[0, 1]``, any B and size.

    The module's own post-processing (:func:`~lit_vision.models.detection.yolo.select_detections`, one
    implementation for both), with one image size for the batch. Sizes are read with ``images.shape``, which
    tracing records as tensors and ``torch.export`` as symbols, so they stay dynamic.
    """

    def __init__(self, detector: YOLODetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        from lit_vision.heads.detection import decode_boxes
        from lit_vision.models.detection.yolo import select_detections

        d = self.detector
        h, w = images.shape[-2], images.shape[-1]
        div = d.strides[-1]
        x = F.pad((images - d.mean) / d.std, (0, (div - w % div) % div, 0, (div - h % div) % div))  # as batch_images
        cls_logits, box_logits, points, strides = d.raw_outputs(x)
        boxes = decode_boxes(box_logits.float(), points, strides)  # [B, A, 4]
        return select_detections(cls_logits.float().sigmoid(), boxes, points, h, w, d.pre_nms_top_n,
                                 d.score_thresh, d.nms_thresh, d.detections_per_img)


@dataclass
class ExportSpec:
    """A model ready to export and what it expects and returns (written into the exported file's metadata).

    Attributes:
        module: the wrapper, in eval mode.
        task: ``"classification"``, ``"detection"`` or ``"segmentation"``.
        architecture: the model family (``"classifier"``, ``"retinanet"``, ``"deeplabv3plus"``, ...).
        output_names: the outputs, in order.
        dynamic_batch, dynamic_size: what the wrapper accepts besides the size it is exported at.
        size_multiple: YOLO pads to its coarsest stride; traced by ``torch.export`` with any size, the padding's
            modular arithmetic makes export and loading minutes long, so there sizes are multiples of it.
        normalization_inside: the model normalises (its input is ``[0, 1]`` RGB).
        mean, std: the normalisation (applied inside when ``normalization_inside``, else by the caller).
    """

    module: nn.Module
    task: str
    architecture: str
    output_names: tuple[str, ...]
    dynamic_batch: bool = True
    dynamic_size: bool = True
    normalization_inside: bool = False
    size_multiple: int = 1  # torch.export: sizes traced as multiples of this (when the export size is one)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific metadata (thresholds, ...)
    # torchvision's detectors rescale the image inside (GeneralizedRCNNTransform); exported, the rescale samples the
    # pixels slightly differently wherever the new size is not an exact multiple (docs/export.md), so their check
    # keeps to sizes where it is.
    exact_at_odd_sizes: bool = True


def export_spec(model: nn.Module, task: str, mean: Sequence[float], std: Sequence[float],
                normalize_inside: bool = False) -> ExportSpec:
    """The wrapper of a task's model (``task.model``) and what it takes and returns.

    ``mean``/``std``: the data's normalisation of classifier and segmenter inputs; ``normalize_inside`` puts it in
    the exported model (detectors always normalise inside, with their own values).
    """
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if task in ("classification", "segmentation"):
        wrapper: nn.Module = ClassifierExport(model) if task == "classification" else SegmenterExport(model)
        if normalize_inside:
            wrapper = Normalize(wrapper, mean, std)
        name = "classifier" if task == "classification" else str(getattr(model, "architecture", "") or "segmenter")
        outputs = ("logits",)
        return ExportSpec(wrapper.eval(), task, name, outputs, normalization_inside=normalize_inside, mean=mean, std=std)
    if task != "detection":
        raise ValueError(f"unknown task {task!r}")
    post = {key: getattr(model, key, None) for key in ("score_thresh", "nms_thresh", "detections_per_img")}
    if isinstance(model, YOLODetector):
        return ExportSpec(YOLOExport(model).eval(), task, "yolo", DETECTION_OUTPUTS, normalization_inside=True,
                          size_multiple=int(model.strides[-1]),
                          mean=tuple(model.mean.flatten().tolist()), std=tuple(model.std.flatten().tolist()),
                          extra=post | {"pre_nms_top_n": model.pre_nms_top_n})
    if isinstance(model, Detector):
        inner = model.model
        holder = getattr(inner, "roi_heads", inner)  # Faster R-CNN keeps its post-processing in roi_heads
        post = {key: getattr(holder, key, None) for key in post}
        transform = inner.transform
        return ExportSpec(TorchvisionDetectorExport(model).eval(), task, str(model.architecture), DETECTION_OUTPUTS,
                          dynamic_batch=False, normalization_inside=True, mean=tuple(transform.image_mean),
                          std=tuple(transform.image_std),
                          extra=post | {"min_size": list(transform.min_size), "max_size": transform.max_size},
                          exact_at_odd_sizes=False)
    raise TypeError(f"cannot export a detector of type {type(model).__name__}: lit_vision exports torchvision "
                    f"detectors (lit_vision.models.detection.Detector) and YOLODetector")


__all__ = ["DETECTION_OUTPUTS", "ClassifierExport", "ExportSpec", "Normalize", "SegmenterExport",
           "TorchvisionDetectorExport", "YOLOExport", "export_spec"]
