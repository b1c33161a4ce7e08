"""A YOLOv8-style anchor-free detector on any registry backbone, written here (no library provides one).

After the published YOLOv8 design, in our own code:

* **Neck**: :class:`~lit_vision.necks.pan.PAN` over the backbone's stride-8/16/32 maps.
* **Decoupled head**: per level, a box branch (two 3x3 ConvBNAct + 1x1 conv to ``4 x reg_max`` logits)
  and a separate classification branch (two 3x3 ConvBNAct + 1x1 conv to ``num_classes`` logits).
* **Anchor-free boxes**: each grid cell centre ``(x + 0.5, y + 0.5) * stride`` predicts its distances to
  the four box sides as a distribution over ``0..reg_max-1`` stride units; the distance is the
  distribution's expectation (so 16 bins reach 15 x 32 = 480 px at stride 32).
* **Loss**: :class:`~lit_vision.models.yolo_loss.YOLOLoss` (task-aligned assignment, BCE + CIoU + DFL).
* **Post-processing**: sigmoid scores, a score threshold, the top ``pre_nms_top_n`` (point, class)
  pairs, class-wise NMS (``torchvision.ops.batched_nms``), ``detections_per_img`` kept.

Same contract as the torchvision detectors in :mod:`lit_vision.models.detectors`: a list of float images
in [0, 1] (any sizes; padded bottom-right to a multiple of the coarsest stride, normalised with the
ImageNet mean/std inside), training returns a loss dict, evaluation a list of ``{"boxes", "labels",
"scores"}`` in the coordinates of the given images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from lit_vision.models.yolo_loss import YOLOLoss
from lit_vision.necks.pan import PAN, ConvBNAct

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DecoupledHead(nn.Module):
    """Separate box and classification branches per pyramid level (weights not shared across levels).

    Branch widths follow YOLOv8: ``max(16, C/4, 4 * reg_max)`` for boxes and ``max(C, min(K, 100))`` for
    classes, with ``C`` the finest level's channels.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, reg_max: int = 16,
                 strides: Sequence[int] = (8, 16, 32), image_size: int = 640) -> None:
        super().__init__()
        self.num_classes, self.reg_max = num_classes, reg_max
        c_box = max(16, in_channels[0] // 4, 4 * reg_max)
        c_cls = max(in_channels[0], min(num_classes, 100))
        self.box = nn.ModuleList(
            nn.Sequential(ConvBNAct(c, c_box, 3), ConvBNAct(c_box, c_box, 3), nn.Conv2d(c_box, 4 * reg_max, 1))
            for c in in_channels)
        self.cls = nn.ModuleList(
            nn.Sequential(ConvBNAct(c, c_cls, 3), ConvBNAct(c_cls, c_cls, 3), nn.Conv2d(c_cls, num_classes, 1))
            for c in in_channels)
        # YOLOv8's prior: about 5 objects per image spread over the level's cells, so early losses are sane.
        for box, cls, stride in zip(self.box, self.cls, strides):
            nn.init.constant_(box[-1].bias, 1.0)
            nn.init.constant_(cls[-1].bias, math.log(5 / num_classes / (image_size / stride) ** 2))

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: box logits ``[B, 4 * reg_max, H, W]`` and class logits ``[B, K, H, W]``."""
        return [b(f) for b, f in zip(self.box, feats)], [c(f) for c, f in zip(self.cls, feats)]


def make_points(sizes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    """Cell centres ``[A, 2]`` (x, y pixels) and their strides ``[A]``, levels concatenated fine to coarse."""
    points, point_strides = [], []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        points.append((torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s)
        point_strides.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(points), torch.cat(point_strides)


def decode_boxes(box_logits: Tensor, points: Tensor, strides: Tensor) -> Tensor:
    """Expected side distances of ``box_logits [B, A, 4, R]`` -> XYXY pixel boxes ``[B, A, 4]``."""
    bins = torch.arange(box_logits.shape[-1], device=box_logits.device, dtype=box_logits.dtype)
    dist = box_logits.softmax(-1).matmul(bins) * strides.view(1, -1, 1)  # [B, A, 4]
    return torch.cat([points - dist[..., :2], points + dist[..., 2:]], dim=-1)


class YOLODetector(nn.Module):
    """Backbone (strides 8/16/32) + PAN neck + decoupled head + task-aligned loss (module docstring).

    Args:
        backbone: registry backbone returning three maps (see
            :func:`~lit_vision.backbones.create_backbone`'s ``out_indices``) with reductions ``s, 2s, 4s``.
        num_classes: object classes (labels ``0..K-1``, no background).
        neck_channels: PAN width per level (one int or three).
        neck_depth: bottlenecks per C2f block.
        reg_max: bins of each side's distance distribution.
        image_size: typical input size, only for the classification-bias prior.
        score_thresh, nms_thresh, detections_per_img, pre_nms_top_n: post-processing (YOLOv8 evaluates
            with ``score_thresh=0.001``, ``nms_thresh=0.7``, 300 detections).
        box_gain, cls_gain, dfl_gain, top_k, alpha, beta: see :class:`~lit_vision.models.yolo_loss.YOLOLoss`.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, neck_channels: int | Sequence[int] = 256,
                 neck_depth: int = 1, reg_max: int = 16, image_size: int = 640, score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_img: int = 100, pre_nms_top_n: int = 1000,
                 box_gain: float = 7.5, cls_gain: float = 0.5, dfl_gain: float = 1.5, top_k: int = 10,
                 alpha: float = 0.5, beta: float = 6.0) -> None:
        super().__init__()
        reductions = [int(r) for r in backbone.reductions]
        if len(reductions) != 3 or reductions[1] != 2 * reductions[0] or reductions[2] != 2 * reductions[1]:
            raise ValueError(
                f"the YOLO detector needs three backbone maps whose strides double (e.g. 8, 16, 32), got strides "
                f"{reductions}: pass backbone_out_indices selecting three such stages")
        self.backbone = backbone
        self.neck = PAN(backbone.channels, neck_channels, neck_depth)
        self.strides = reductions
        self.head = DecoupledHead(self.neck.out_channels, num_classes, reg_max, reductions, image_size)
        self.loss = YOLOLoss(num_classes, reg_max, box_gain, cls_gain, dfl_gain, top_k, alpha, beta)
        self.num_classes, self.reg_max = num_classes, reg_max
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.pre_nms_top_n = detections_per_img, pre_nms_top_n
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

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
        """Per image: threshold, top-k (point, class) pairs, class-wise NMS, clip to the image."""
        out = []
        k = scores.shape[-1]
        for s, b, (h, w) in zip(scores, boxes, sizes):
            inside = (points[:, 0] < w) & (points[:, 1] < h)  # cells over the padding see no image
            s = s * inside.unsqueeze(-1)
            flat = s.flatten()
            keep = (flat > self.score_thresh).nonzero().squeeze(1)
            if keep.numel() > self.pre_nms_top_n:
                keep = keep[flat[keep].topk(self.pre_nms_top_n).indices]
            point_idx, labels = keep // k, keep % k
            cand = b[point_idx].clone()
            cand[:, 0::2] = cand[:, 0::2].clamp(0, w)
            cand[:, 1::2] = cand[:, 1::2].clamp(0, h)
            cand_scores = flat[keep]
            valid = (cand[:, 2] > cand[:, 0]) & (cand[:, 3] > cand[:, 1])
            cand, cand_scores, labels = cand[valid], cand_scores[valid], labels[valid]
            kept = batched_nms(cand, cand_scores, labels, self.nms_thresh)[: self.detections_per_img]
            out.append({"boxes": cand[kept], "labels": labels[kept], "scores": cand_scores[kept]})
        return out


__all__ = ["DecoupledHead", "YOLODetector", "decode_boxes", "make_points"]
