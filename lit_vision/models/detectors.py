"""Faster R-CNN, RetinaNet and FCOS from ``torchvision.models.detection``, and our YOLO, on any registry backbone.

:func:`build_detector` injects a registry backbone + :class:`~lit_vision.necks.BackboneWithFPN` into the
torchvision model and wraps it in :class:`Detector`, which hides two torchvision conventions:

* **Labels.** Faster R-CNN reserves class 0 for background (its box predictor has ``K + 1`` outputs);
  RetinaNet and FCOS do not. :class:`Detector` shifts labels by +1 on the way in and -1 on the way out for
  Faster R-CNN only, so callers always see ``0..K-1``.
* **Resizing.** torchvision's ``GeneralizedRCNNTransform`` normalises (ImageNet mean/std, kept) and resizes
  the shorter side to ``min_size`` (capped so the longer side is at most ``max_size``). Our DataModules
  already resize (longer side = ``image_size``), so ``image_size=`` sets ``min_size = max_size =
  image_size``, which makes the evaluation resize the identity for any aspect ratio, and skips the
  training resize (torchvision's ``_skip_resize``) so the DataModule's scale jitter survives. Predictions
  always come back in the coordinates of the images given to ``forward``.

No Lightning here: plain ``nn.Module`` compositions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetHead
from torchvision.ops import MultiScaleRoIAlign, sigmoid_focal_loss

from lit_vision.backbones import create_backbone
from lit_vision.necks import BackboneWithFPN

Architecture = Literal["faster_rcnn", "retinanet", "fcos", "yolo"]
ARCHITECTURES: tuple[str, ...] = ("faster_rcnn", "retinanet", "fcos", "yolo")


class FocalRetinaNetClassificationHead(RetinaNetClassificationHead):
    """RetinaNet's classification head with configurable focal-loss ``alpha`` and ``gamma``.

    torchvision's ``compute_loss`` calls ``sigmoid_focal_loss`` with its defaults (alpha 0.25, gamma 2)
    and offers no argument to change them, so this subclass repeats that method (same matching, ignore
    band and normalisation by the number of foreground anchors) with the two values passed through.
    """

    def __init__(self, *args: Any, focal_alpha: float = 0.25, focal_gamma: float = 2.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor],
                     matched_idxs: list[Tensor]) -> Tensor:
        losses = []
        for target, logits, matched in zip(targets, head_outputs["cls_logits"], matched_idxs):
            foreground = matched >= 0
            gt = torch.zeros_like(logits)
            gt[foreground, target["labels"][matched[foreground]]] = 1.0
            valid = matched != self.BETWEEN_THRESHOLDS
            loss = sigmoid_focal_loss(logits[valid], gt[valid], alpha=self.focal_alpha, gamma=self.focal_gamma,
                                      reduction="sum")
            losses.append(loss / max(1, int(foreground.sum())))
        return torch.stack(losses).sum() / len(targets)


class Detector(nn.Module):
    """A torchvision detector with labels ``0..K-1`` on both sides (see the module docstring).

    ``forward(images, targets)`` in training mode returns the loss dict; in eval mode a list of
    ``{"boxes", "labels", "scores"}`` per image (``targets`` ignored).
    """

    def __init__(self, model: nn.Module, architecture: str, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.architecture = architecture
        self.num_classes = num_classes
        self.label_offset = 1 if architecture == "faster_rcnn" else 0

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        if self.training:
            if targets is None:
                raise ValueError("a detector in training mode needs targets")
            targets = [{"boxes": t["boxes"].float().reshape(-1, 4),
                        "labels": t["labels"].long() + self.label_offset} for t in targets]
            return self.model(images, targets)
        outputs = self.model(images)
        return [dict(o, labels=o["labels"] - self.label_offset) for o in outputs]


def _anchor_sizes(strides: Sequence[int], anchor_sizes: Sequence[Any] | None,
                  scales_per_octave: int) -> tuple[tuple[float, ...], ...]:
    """Per-level anchor sizes: a base size per level (default 4 x stride) times ``2**(k / scales_per_octave)``.

    ``anchor_sizes`` may give the base sizes (one number per level) or the full per-level tuples.
    """
    if anchor_sizes is None:
        anchor_sizes = [4 * s for s in strides]
    if len(anchor_sizes) != len(strides):
        raise ValueError(f"anchor_sizes has {len(anchor_sizes)} entries but the pyramid has {len(strides)} levels")
    out = []
    for size in anchor_sizes:
        if isinstance(size, (int, float)):
            out.append(tuple(float(size) * 2 ** (k / scales_per_octave) for k in range(scales_per_octave)))
        else:
            out.append(tuple(float(s) for s in size))
    return tuple(out)


def build_detector(
    architecture: Architecture,
    backbone: str,
    num_classes: int,
    pretrained: bool | str = False,
    backbone_kwargs: dict[str, Any] | None = None,
    backbone_out_indices: Sequence[int] = (-3, -2, -1),
    fpn_channels: int = 256,
    image_size: int | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    anchor_sizes: Sequence[Any] | None = None,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    scales_per_octave: int = 3,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
    **kwargs: Any,
) -> Detector:
    """Build a detector on a registry backbone: torchvision's with an FPN, or our YOLO with a PAN neck.

    Args:
        architecture: ``"faster_rcnn"`` (FPN + max-pooled extra level, RPN, RoIAlign box head),
            ``"retinanet"`` or ``"fcos"`` (FPN + P6/P7), or ``"yolo"`` (PAN over three stages, decoupled
            head, DFL + CIoU loss with task-aligned assignment; :class:`~lit_vision.models.yolo.YOLODetector`).
        backbone: registry name, e.g. ``"tv/resnet50"``, ``"timm/efficientnet_b0"``.
        num_classes: object classes, without background (labels ``0..K-1``).
        pretrained, backbone_kwargs: see :func:`~lit_vision.backbones.create_backbone`.
        backbone_out_indices: backbone stages feeding the FPN (default the last three, strides 8/16/32 on
            most CNNs).
        fpn_channels: width of the pyramid (YOLO: of the PAN neck; FCOS: a multiple of 32, for its ``GroupNorm(32, ...)`` head; with
            exactly 32, a lone image whose coarsest level is 1x1 cannot be normalised, so prefer >= 64).
        image_size: the DataModule's ``image_size``. YOLO never resizes (it only pads) and uses it for its
            classification-bias prior. torchvision detectors: sets ``min_size = max_size = image_size`` and skips
            the internal training resize (see the module docstring). ``None``: use ``min_size``/``max_size``.
        min_size, max_size: torchvision's internal resize when ``image_size`` is not given.
        anchor_sizes: per-level base sizes (one number per level, expanded by ``scales_per_octave``) or
            per-level size tuples; default ``4 x stride``. FCOS ignores it (one stride-sized point per
            location, as torchvision's FCOS expects).
        aspect_ratios: anchor ratios per location (Faster R-CNN, RetinaNet). Anchor arguments, ``min_size``,
            ``max_size`` and the focal-loss ones do not apply to YOLO, which is anchor-free.
        scales_per_octave: anchor scales per level: default 3 scales x 3 ratios for both anchor-based models.
        focal_alpha, focal_gamma: RetinaNet's focal loss (FCOS keeps torchvision's 0.25 / 2).
        score_thresh, nms_thresh, detections_per_img: inference post-processing.
        **kwargs: passed to the torchvision constructor (e.g. ``rpn_batch_size_per_image``) or to
            :class:`~lit_vision.models.yolo.YOLODetector` (``neck_depth``, ``reg_max``, ``pre_nms_top_n``, the
            loss gains ``box_gain``/``cls_gain``/``dfl_gain`` and the assigner's ``top_k``/``alpha``/``beta``).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if architecture == "fcos" and fpn_channels % 32:
        raise ValueError(f"FCOS's head uses GroupNorm(32, fpn_channels): fpn_channels must be a multiple of 32, got {fpn_channels}")
    body = create_backbone(backbone, pretrained=pretrained, out_indices=list(backbone_out_indices),
                           **(backbone_kwargs or {}))
    if architecture == "yolo":
        from lit_vision.models.yolo import YOLODetector

        yolo = YOLODetector(body, num_classes, neck_channels=fpn_channels, image_size=image_size or 640,
                            score_thresh=score_thresh, nms_thresh=nms_thresh,
                            detections_per_img=detections_per_img, **kwargs)
        return Detector(yolo, architecture, num_classes)
    extra = "maxpool" if architecture == "faster_rcnn" else "p6p7"
    neck = BackboneWithFPN(body, out_channels=fpn_channels, extra=extra)
    levels = len(neck.level_names)
    if image_size is not None:
        min_size = max_size = image_size
        kwargs.setdefault("_skip_resize", True)
    common = {"min_size": min_size, "max_size": max_size} | kwargs

    if architecture == "fcos":
        anchors = AnchorGenerator(tuple((float(s),) for s in neck.strides), ((1.0,),) * levels)
        model: nn.Module = FCOS(neck, num_classes, anchor_generator=anchors, score_thresh=score_thresh,
                                nms_thresh=nms_thresh, detections_per_img=detections_per_img, **common)
        return Detector(model, architecture, num_classes)

    sizes = _anchor_sizes(neck.strides, anchor_sizes, scales_per_octave)
    anchors = AnchorGenerator(sizes, (tuple(float(r) for r in aspect_ratios),) * levels)
    per_location = anchors.num_anchors_per_location()[0]
    if architecture == "retinanet":
        head = RetinaNetHead(fpn_channels, per_location, num_classes)
        head.classification_head = FocalRetinaNetClassificationHead(
            fpn_channels, per_location, num_classes, focal_alpha=focal_alpha, focal_gamma=focal_gamma)
        model = RetinaNet(neck, num_classes, anchor_generator=anchors, head=head, score_thresh=score_thresh,
                          nms_thresh=nms_thresh, detections_per_img=detections_per_img, **common)
    else:
        from torchvision.models.detection.rpn import RPNHead

        roi_pool = MultiScaleRoIAlign(featmap_names=neck.feature_names, output_size=7, sampling_ratio=2)
        model = FasterRCNN(neck, num_classes + 1, rpn_anchor_generator=anchors,
                           rpn_head=RPNHead(fpn_channels, per_location), box_roi_pool=roi_pool,
                           box_score_thresh=score_thresh, box_nms_thresh=nms_thresh,
                           box_detections_per_img=detections_per_img, **common)
    return Detector(model, architecture, num_classes)


def anchors_per_level(detector: Detector) -> list[int]:
    """Anchors per location on each level (for tests and docs)."""
    model = detector.model
    generator = model.rpn.anchor_generator if hasattr(model, "rpn") else model.anchor_generator
    return list(generator.num_anchors_per_location())


__all__ = ["ARCHITECTURES", "Detector", "FocalRetinaNetClassificationHead", "anchors_per_level", "build_detector"]
