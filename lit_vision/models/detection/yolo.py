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
        """Top-k (point, class) pairs above the threshold, clipped to each image, class-wise NMS, best kept.

        The whole batch at once: one ``topk``, one ``gather`` and one NMS whose groups are (image, class) pairs, so
        NMS never compares boxes of different images; only the final split into per-image dicts is a loop.
        """
        b, a, k = scores.shape
        hw = torch.tensor(sizes, device=scores.device, dtype=boxes.dtype)  # [B, 2] (h, w)
        # Cells over the padding see no image.
        inside = (points[None, :, 0] < hw[:, 1:2]) & (points[None, :, 1] < hw[:, 0:1])  # [B, A]
        flat = (scores * inside.unsqueeze(-1)).flatten(1)  # [B, A*K]
        top_scores, top = flat.topk(min(self.pre_nms_top_n, flat.shape[1]), dim=1)
        # Candidates in (point, class) order, as a per-image scan gives them: NMS keeps the first of equal scores
        # (a stable sort), so saturated scores of a barely trained model keep the same boxes as before, and as the
        # exported model (lit_vision/export/wrappers.py) keeps.
        top, order = top.sort(dim=1)
        top_scores = top_scores.gather(1, order)
        point_idx, labels = top // k, top % k
        cand = boxes.gather(1, point_idx.unsqueeze(-1).expand(-1, -1, 4))  # [B, n, 4]
        w, h = hw[:, 1].view(b, 1, 1), hw[:, 0].view(b, 1, 1)
        cand = torch.cat([cand[..., 0::2].clamp(min=0).minimum(w), cand[..., 1::2].clamp(min=0).minimum(h)], -1)
        cand = cand[..., [0, 2, 1, 3]]  # back to x0, y0, x1, y1
        valid = (top_scores > self.score_thresh) & (cand[..., 2] > cand[..., 0]) & (cand[..., 3] > cand[..., 1])
        image, slot = valid.nonzero(as_tuple=True)
        cand, cand_scores, labels = cand[image, slot], top_scores[image, slot], labels[image, slot]
        # Class-wise NMS of every image in one call: each (image, class) group shifted apart (the offset trick of
        # torchvision's batched_nms, used always: its per-group loop for many boxes re-sorts equal scores unstably).
        groups = (image * k + labels).to(cand)
        offsets = groups * (torch.cat([cand.flatten(), cand.new_zeros(1)]).max() + 1)
        kept = nms(cand + offsets[:, None], cand_scores, self.nms_thresh)  # by decreasing score, ties in input order
        kept = kept[torch.sort(image[kept], stable=True).indices]  # grouped by image, still by score within
        counts = torch.bincount(image[kept], minlength=b)
        rank = torch.arange(len(kept), device=kept.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        kept = kept[rank < self.detections_per_img]
        per_image = torch.bincount(image[kept], minlength=b).tolist()
        return [{"boxes": bx, "labels": lb, "scores": sc} for bx, lb, sc in
                zip(cand[kept].split(per_image), labels[kept].split(per_image), cand_scores[kept].split(per_image))]


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
