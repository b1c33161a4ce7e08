"""A YOLOv8-style anchor-free detector: the module that wires its parts, and the ``yolo`` architecture.

After the published YOLOv8 design, in our own code (no library provides one):

* **Neck**: :class:`~lit_vision.necks.pan.PAN` over the backbone's stride-8/16/32 maps.
* **Head**: :class:`~lit_vision.heads.detection.DecoupledHead` (box distributions + class logits per cell).
* **Loss**: :class:`~lit_vision.heads.detection.YOLOLoss` (task-aligned assignment, BCE + CIoU + DFL).
* **Post-processing**: sigmoid scores, the top ``pre_nms_top_n`` (point, class) pairs above a score threshold,
  class-wise NMS (``torchvision.ops.nms`` over (image, class) groups, one call for the whole batch),
  ``detections_per_img`` kept.

:class:`YOLODetector` takes its parts built, as torchvision's detectors do; :class:`YOLO` (the
architecture a task names) builds the defaults and lets a YAML inject any of them: ``neck``, ``head`` and
``loss`` are factories (``class_path`` + ``init_args``; the channel counts and ``num_classes`` are filled in
when the model is built), ``assigner`` an object.

Same contract as the torchvision detectors: a list of float images in [0, 1] (any sizes; padded
bottom-right to a multiple of the coarsest stride, normalised inside with the backbone's pretrained mean/std), training
returns a loss dict, evaluation a list of ``{"boxes", "labels", "scores"}`` in the coordinates of the
given images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import nms

from lit_vision.backbones import Backbone, input_normalization
from lit_vision.constants import IMAGENET_MEAN, IMAGENET_STD
from lit_vision.heads.detection import (
    DecoupledHead,
    YOLOLoss,
    decode_boxes,
    make_points,
)
from lit_vision.models.detection.base import DetectorArchitecture
from lit_vision.necks.pan import PAN


class YOLODetector(nn.Module):
    """Backbone (strides s, 2s, 4s) -> neck -> head; the loss in training, decoding + NMS in evaluation.

    Args:
        backbone: registry backbone returning three maps whose reductions double (e.g. 8, 16, 32).
        neck: maps the three backbone maps to three maps (``.out_channels``); e.g. :class:`PAN`.
        head: returns per-level box logits ``[B, 4 * reg_max, H, W]`` and class logits ``[B, K, H, W]``
            (``.num_classes``, ``.reg_max``); e.g. :class:`~lit_vision.heads.detection.DecoupledHead`.
        loss: ``(cls_logits, box_logits, pred_boxes, points, strides, targets) -> dict of loss terms``.
        score_thresh, nms_thresh, detections_per_img, pre_nms_top_n: post-processing (YOLOv8 evaluates
            with ``score_thresh=0.001``, ``nms_thresh=0.7``, 300 detections).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, loss: nn.Module,
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                 pre_nms_top_n: int = 1000) -> None:
        super().__init__()
        reductions = [int(r) for r in backbone.reductions]
        if len(reductions) != 3 or reductions[1] != 2 * reductions[0] or reductions[2] != 2 * reductions[1]:
            raise ValueError(
                f"the YOLO detector needs three backbone maps whose strides double (e.g. 8, 16, 32), got strides "
                f"{reductions}: pass backbone_out_indices selecting three such stages")
        self.backbone, self.neck, self.head, self.loss = backbone, neck, head, loss
        self.class_dependent = ("head.cls",)  # the class branch's widths grow with K: re-initialised on a new K
        self.strides = reductions
        self.num_classes, self.reg_max = head.num_classes, head.reg_max
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.pre_nms_top_n = detections_per_img, pre_nms_top_n
        # What the backbone's pretrained weights expect (ImageNet's for tv/ backbones; 0.5/0.5 for many timm ViTs).
        mean, std = input_normalization(backbone) or (IMAGENET_MEAN, IMAGENET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def batch_images(self, images: list[Tensor]) -> Tensor:
        """Normalise and pad (bottom/right, zeros after normalisation) to a multiple of the coarsest stride."""
        div = self.strides[-1]
        h = math.ceil(max(im.shape[-2] for im in images) / div) * div
        w = math.ceil(max(im.shape[-1] for im in images) / div) * div
        batch = images[0].new_zeros(len(images), 3, h, w)
        for i, im in enumerate(images):
            batch[i, :, : im.shape[-2], : im.shape[-1]] = (im - self.mean[0]) / self.std[0]
        return batch

    def raw_outputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``cls_logits [B, A, K]``, ``box_logits [B, A, 4, R]``, ``points [A, 2]``, ``strides [A]``."""
        feats = self.neck(self.backbone(x))
        box_maps, cls_maps = self.head(feats)
        b = x.shape[0]
        box_logits = torch.cat([m.flatten(2) for m in box_maps], -1).transpose(1, 2).reshape(b, -1, 4, self.reg_max)
        cls_logits = torch.cat([m.flatten(2) for m in cls_maps], -1).transpose(1, 2)
        points, strides = make_points([m.shape[-2:] for m in box_maps], self.strides, x.device)
        return cls_logits, box_logits, points, strides

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        cls_logits, box_logits, points, strides = self.raw_outputs(self.batch_images(images))
        boxes = decode_boxes(box_logits.float(), points, strides)
        if self.training:
            if targets is None:
                raise ValueError("a detector in training mode needs targets")
            return self.loss(cls_logits, box_logits, boxes, points, strides, targets)
        sizes = [tuple(im.shape[-2:]) for im in images]
        return self.postprocess(cls_logits.float().sigmoid(), boxes, points, sizes)

    @torch.no_grad()
    def postprocess(self, scores: Tensor, boxes: Tensor, points: Tensor,
                    sizes: Sequence[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """:func:`select_detections` for the batch, split into one dict per image."""
        hw = torch.tensor(sizes, device=scores.device, dtype=boxes.dtype)  # [B, 2] (h, w)
        det_boxes, det_scores, labels, image = select_detections(
            scores, boxes, points, hw[:, 0], hw[:, 1], self.pre_nms_top_n, self.score_thresh, self.nms_thresh,
            self.detections_per_img)
        per_image = torch.bincount(image, minlength=scores.shape[0]).tolist()
        return [{"boxes": bx, "labels": lb, "scores": sc} for bx, lb, sc in
                zip(det_boxes.split(per_image), labels.split(per_image), det_scores.split(per_image))]


def positions(values: Tensor) -> Tensor:
    """The index along the first dimension, shaped like ``values`` (an ``arange`` whose length every exporter
    keeps as symbolic as ``values``' own)."""
    return torch.ones_like(values, dtype=torch.long).cumsum(0) - 1


def clip(values: Tensor, high: int | Tensor) -> Tensor:
    """``values`` clipped to ``[0, high]``; ``high`` a number or a tensor (per image; or a size being traced)."""
    values = values.clamp(min=0)
    return torch.minimum(values, high.to(values)) if isinstance(high, Tensor) else values.clamp(max=high)


def select_detections(scores: Tensor, boxes: Tensor, points: Tensor, height: int | Tensor, width: int | Tensor,
                      pre_nms_top_n: int, score_thresh: float, nms_thresh: float,
                      detections_per_img: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """YOLO's post-processing for a batch: ``(boxes [N, 4], scores [N], labels [N], image [N])``, grouped by image,
    by decreasing score within each.

    ``scores [B, A, K]`` (probabilities), ``boxes [B, A, 4]`` (decoded, in the padded batch), ``points [A, 2]``;
    ``height``/``width``: each image's size (``[B]`` tensors), or one size for all (a number, or a size being
    traced). Cells over the padding are masked; the top ``pre_nms_top_n`` (point, class) pairs per image, taken
    in (point, class) order, as a scan of the cells gives them: NMS keeps the first of equal scores, so saturated
    scores of a barely trained model keep the same boxes whatever the batch; boxes clipped to their image; score
    threshold; class-wise NMS of the whole batch in one call; the best ``detections_per_img`` of each image.

    The one implementation behind :meth:`YOLODetector.postprocess` and the exported model
    (:class:`~lit_vision.export.wrappers.YOLOExport`), so it is written to trace: no Python loops over images or
    detections, no ``.item()``, shapes from the tensors (``_topk_min``: ``min`` of a size that stays symbolic).
    """
    from torchvision.models.detection._utils import _topk_min

    k = scores.shape[-1]
    per_image = isinstance(height, Tensor) and height.ndim == 1
    h, w = (height[:, None], width[:, None]) if per_image else (height, width)
    inside = (points[None, :, 0] < w) & (points[None, :, 1] < h)  # [B or 1, A]
    flat = (scores * inside.unsqueeze(-1).to(scores)).flatten(1)  # [B, A*K]
    top_scores, index = flat.topk(_topk_min(flat, pre_nms_top_n, 1), dim=1)
    index, order = index.sort(dim=1)  # (point, class) order
    top_scores = top_scores.gather(1, order)
    labels, point = index % k, index // k
    cand = boxes.gather(1, point.unsqueeze(-1).expand(-1, -1, 4))  # [B, n, 4]
    cand = torch.stack([clip(cand[..., 0], w), clip(cand[..., 1], h), clip(cand[..., 2], w), clip(cand[..., 3], h)],
                       -1)
    image = positions(index)  # [B, n]: the image of each candidate
    keep = ((top_scores > score_thresh) & (cand[..., 2] > cand[..., 0]) & (cand[..., 3] > cand[..., 1])).flatten()
    keep = keep.nonzero().squeeze(1)
    cand, top_scores = cand.reshape(-1, 4)[keep], top_scores.flatten()[keep]
    labels, image = labels.flatten()[keep], image.flatten()[keep]
    # Class-wise NMS of every image in one call: each (image, class) group shifted apart (the offset trick of
    # torchvision's batched_nms, used always: its per-group loop for many boxes re-sorts equal scores unstably;
    # its max() over no boxes is an error, hence the appended zero). Classes apart along x, images along y: one
    # offset (image * K + class) would reach ~1.6 M px for 32 images of 80 classes, where float32 steps by
    # 0.125 px and small boxes' IoUs would depend on the image's place in the batch.
    span = torch.cat([cand.flatten(), cand.new_zeros(1)]).max() + 1
    shift = torch.stack([labels.to(cand), image.to(cand)], -1).repeat(1, 2) * span  # (x, y, x, y)
    kept = nms(cand + shift, top_scores, nms_thresh)  # by decreasing score, ties in input order
    # Grouped by image, NMS's order within each: the keys (image, place in kept) are unique, so any sort agrees.
    kept = kept[(image[kept] * kept.shape[0] + positions(kept)).argsort()]
    # The best detections_per_img of each image: its rank = how many kept ones of the same image come first.
    onehot = (image[kept][:, None] == positions(flat[:, 0])[None, :]).long()  # [N, B]
    rank = ((onehot.cumsum(0) - 1) * onehot).sum(1)
    kept = kept[rank < detections_per_img]
    return cand[kept], top_scores[kept], labels[kept], image[kept]


class YOLO(DetectorArchitecture):
    """The YOLO-style architecture: PAN neck, decoupled head, task-aligned DFL + CIoU loss (module docstring).

    Args:
        neck_channels: PAN width per level (one int, or three fine to coarse; YOLOv8-s: 128, 256, 512). ``None``:
            the backbone's own YOLOv8 neck when it states one (``lv/csp_c2f_*``: n 64/128/256 ... so
            ``backbone: lv/csp_c2f_n`` builds YOLOv8n), else 256.
        neck_depth: bottlenecks per C2f block; ``None``: the backbone's YOLOv8 neck depth when it states one, else 1.
        reg_max: bins of each side's distance distribution.
        box_gain, cls_gain, dfl_gain: weights of the loss terms (YOLOv8: 7.5, 0.5, 1.5).
        assigner: which points learn which box (default the task-aligned assigner, YOLOv8's ``top_k=10``,
            ``alpha=0.5``, ``beta=6.0``).
        pre_nms_top_n: candidates kept before NMS.
        neck: ``(in_channels) -> module`` (default :class:`PAN` with ``neck_channels``, ``neck_depth``).
        head: ``(in_channels, num_classes) -> module`` (default ``DecoupledHead`` with ``reg_max``).
        loss: ``(num_classes, reg_max) -> module`` (default ``YOLOLoss`` with the gains and ``assigner``).
        **kwargs: ``backbone_out_indices`` (three stages whose strides double), ``score_thresh``,
            ``nms_thresh``, ``detections_per_img``: see :class:`~lit_vision.models.detection.base.DetectorArchitecture`.
    """

    name = "yolo"

    def __init__(
        self,
        neck_channels: int | list[int] | None = None,
        neck_depth: int | None = None,
        reg_max: int = 16,
        box_gain: float = 7.5,
        cls_gain: float = 0.5,
        dfl_gain: float = 1.5,
        assigner: nn.Module | None = None,
        pre_nms_top_n: int = 1000,
        neck: Callable[[Sequence[int]], nn.Module] | None = None,
        head: Callable[[Sequence[int], int], nn.Module] | None = None,
        loss: Callable[[int, int], nn.Module] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.neck_channels, self.neck_depth, self.reg_max = neck_channels, neck_depth, reg_max
        self.box_gain, self.cls_gain, self.dfl_gain, self.assigner = box_gain, cls_gain, dfl_gain, assigner
        self.pre_nms_top_n = pre_nms_top_n
        self.neck, self.head, self.loss = neck, head, loss

    def build(self, backbone: Backbone, num_classes: int, image_size: int | None = None) -> YOLODetector:
        channels = self.neck_channels if self.neck_channels is not None else getattr(backbone, "neck_channels", 256)
        depth = self.neck_depth if self.neck_depth is not None else getattr(backbone, "neck_depth", 1)
        neck = self.neck(backbone.channels) if self.neck else PAN(backbone.channels, channels, depth)
        head = self.head(neck.out_channels, num_classes) if self.head else DecoupledHead(neck.out_channels, num_classes,
                                                                                        self.reg_max)
        if hasattr(head, "init_bias"):
            head.init_bias([int(r) for r in backbone.reductions], image_size or 640)
        loss = (self.loss(num_classes, head.reg_max) if self.loss else
                YOLOLoss(num_classes, head.reg_max, self.box_gain, self.cls_gain, self.dfl_gain, self.assigner))
        return YOLODetector(backbone, neck, head, loss, self.score_thresh, self.nms_thresh, self.detections_per_img,
                            self.pre_nms_top_n)


__all__ = ["YOLO", "YOLODetector"]
