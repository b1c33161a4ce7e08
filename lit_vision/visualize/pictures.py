"""One validation image with its ground truth and the model's prediction, per task.

A task turns an evaluated batch into these (``VisionTask.picture``); the
:class:`~lit_vision.callbacks.ValidationPictures` callback renders them as a panel for files and TensorBoard
(:meth:`render`) and hands them to W&B in its own media form (:meth:`to_wandb`: boxes as box groups with
class labels and scores, so the dashboard's score slider and class toggles work; masks as mask layers). A
task of your own returns any object with these two methods.

Images are ``uint8 [3, H, W]`` at the model's input size (what the network saw, normalisation undone);
boxes are XYXY pixels in that image; masks are class indices in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_vision.visualize.draw import (
    GREEN,
    RED,
    WHITE,
    Color,
    caption,
    downscale,
    draw_boxes,
    draw_mask,
    labelled_row,
    upscale,
    upscale_factor,
)

GREY: Color = (170, 170, 170)


class Picture(Protocol):
    """What the pictures callback needs from a task's picture."""

    def render(self, class_names: Sequence[str], colors: Sequence[Color]) -> Tensor: ...

    def to_wandb(self, class_names: Sequence[str], caption: str | None = None) -> Any: ...


def _label_name(class_names: Sequence[str], k: int) -> str:
    return class_names[k] if 0 <= k < len(class_names) else str(k)


@dataclass
class ClassificationPicture:
    """An image, its true class (``None`` if unknown) and the top-k classes with probabilities."""

    image: Tensor
    label: int | None
    top_ids: list[int]
    top_probs: list[float]
    min_side: int = 128  # tiny inputs (32-px digits) are upscaled so they can be seen and captioned

    @property
    def correct(self) -> bool | None:
        return None if self.label is None else bool(self.top_ids and self.top_ids[0] == self.label)

    def lines(self, class_names: Sequence[str]) -> list[tuple[str, Color]]:
        """Caption lines: the truth, then the top-k (the right class green, a wrong top-1 red)."""
        out = [(f"true: {_label_name(class_names, self.label)}" if self.label is not None else "true: ?", WHITE)]
        for rank, (k, p) in enumerate(zip(self.top_ids, self.top_probs)):
            color = GREEN if k == self.label else (RED if rank == 0 and self.label is not None else GREY)
            out.append((f"{_label_name(class_names, k)} {p:.2f}", color))
        return out

    def render(self, class_names: Sequence[str], colors: Sequence[Color]) -> Tensor:
        image = upscale(self.image, self.min_side)
        if self.correct is False:  # a red frame: wrong pictures stand out in a grid
            image = image.clone()
            image[:, :3, :], image[:, -3:, :], image[:, :, :3], image[:, :, -3:] = (
                torch.tensor(RED, dtype=torch.uint8).view(3, 1, 1),) * 4
        return caption(image, self.lines(class_names), font_size=11)

    def to_wandb(self, class_names: Sequence[str], caption: str | None = None) -> Any:
        import wandb

        text = ("WRONG " if self.correct is False else "") + " | ".join(t for t, _ in self.lines(class_names))
        return wandb.Image(self.image.permute(1, 2, 0).numpy(), caption=f"{caption}: {text}" if caption else text)


@dataclass
class DetectionPicture:
    """An image with its ground-truth boxes and the predicted boxes, labels and scores.

    ``score_thresh`` only decides which predictions the rendered panel draws (W&B gets every prediction
    down to ``wandb_min_score`` and filters with its slider).
    """

    image: Tensor
    gt_boxes: Tensor
    gt_labels: Tensor
    boxes: Tensor
    labels: Tensor
    scores: Tensor
    score_thresh: float = 0.3
    wandb_min_score: float = 0.05
    min_side: int = 256

    def __post_init__(self) -> None:
        self.gt_boxes, self.boxes = self.gt_boxes.detach().float().cpu(), self.boxes.detach().float().cpu()
        self.gt_labels, self.labels = self.gt_labels.detach().long().cpu(), self.labels.detach().long().cpu()
        self.scores = self.scores.detach().float().cpu()

    def shrink(self, max_side: int) -> DetectionPicture:
        """At most ``max_side`` pixels on the longer side (big COCO images), boxes scaled along."""
        self.image, s = downscale(self.image, max_side)
        self.gt_boxes, self.boxes = self.gt_boxes * s, self.boxes * s
        return self

    def render(self, class_names: Sequence[str], colors: Sequence[Color]) -> Tensor:
        f = upscale_factor(self.image, self.min_side)
        image = upscale(self.image, self.min_side)
        keep = self.scores >= self.score_thresh
        gt = draw_boxes(image, self.gt_boxes * f, [_label_name(class_names, int(k)) for k in self.gt_labels],
                        [colors[int(k) % len(colors)] for k in self.gt_labels])
        pred = draw_boxes(image, self.boxes[keep] * f,
                          [f"{_label_name(class_names, int(k))} {float(s):.2f}"
                           for k, s in zip(self.labels[keep], self.scores[keep])],
                          [colors[int(k) % len(colors)] for k in self.labels[keep]])
        return labelled_row([gt, pred], [f"ground truth ({len(self.gt_labels)})",
                                         f"prediction ({int(keep.sum())} >= {self.score_thresh:g})"])

    def to_wandb(self, class_names: Sequence[str], caption: str | None = None) -> Any:
        import wandb

        labels = {k: name for k, name in enumerate(class_names)}

        def box(xyxy: list[float], k: int, caption_: str, score: float | None = None) -> dict[str, Any]:
            row: dict[str, Any] = {"position": {"minX": xyxy[0], "minY": xyxy[1], "maxX": xyxy[2], "maxY": xyxy[3]},
                                   "domain": "pixel", "class_id": int(k), "box_caption": caption_}
            if score is not None:
                row["scores"] = {"score": float(score)}
            return row

        keep = self.scores >= self.wandb_min_score
        predictions = [box(b, int(k), f"{_label_name(class_names, int(k))} {float(s):.2f}", float(s))
                       for b, k, s in zip(self.boxes[keep].tolist(), self.labels[keep], self.scores[keep])]
        truth = [box(b, int(k), _label_name(class_names, int(k)))
                 for b, k in zip(self.gt_boxes.tolist(), self.gt_labels)]
        return wandb.Image(self.image.permute(1, 2, 0).numpy(), caption=caption, boxes={
            "predictions": {"box_data": predictions, "class_labels": labels},
            "ground_truth": {"box_data": truth, "class_labels": labels}})


@dataclass
class SegmentationPicture:
    """An image, its ground-truth mask (``ignore_index`` = no class) and the predicted mask."""

    image: Tensor
    gt_mask: Tensor | None
    mask: Tensor
    ignore_index: int | None = 255
    min_side: int = 128
    alpha: float = 0.55
    extra: dict[str, Any] = field(default_factory=dict)

    def shrink(self, max_side: int) -> SegmentationPicture:
        self.image, s = downscale(self.image, max_side)
        if s != 1.0:
            size = tuple(self.image.shape[-2:])
            self.mask = F.interpolate(self.mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
            if self.gt_mask is not None:
                self.gt_mask = F.interpolate(self.gt_mask[None, None].float(), size=size, mode="nearest")[0, 0].long()
        return self

    def render(self, class_names: Sequence[str], colors: Sequence[Color]) -> Tensor:
        f = upscale_factor(self.image, self.min_side)
        image = upscale(self.image, self.min_side)

        def overlay(mask: Tensor) -> Tensor:
            big = mask.repeat_interleave(f, 0).repeat_interleave(f, 1) if f > 1 else mask
            return draw_mask(image, big, colors, alpha=self.alpha, ignore_index=self.ignore_index)

        parts, labels = [image], ["image"]
        if self.gt_mask is not None:
            parts.append(overlay(self.gt_mask))
            labels.append("ground truth")
        parts.append(overlay(self.mask))
        labels.append("prediction")
        return labelled_row(parts, labels)

    def to_wandb(self, class_names: Sequence[str], caption: str | None = None) -> Any:
        import wandb

        labels = {k: name for k, name in enumerate(class_names)}
        if self.ignore_index is not None:
            labels[self.ignore_index] = "ignore"
        masks = {"prediction": {"mask_data": self.mask.to(torch.int32).numpy(), "class_labels": labels}}
        if self.gt_mask is not None:
            masks["ground_truth"] = {"mask_data": self.gt_mask.to(torch.int32).numpy(), "class_labels": labels}
        return wandb.Image(self.image.permute(1, 2, 0).numpy(), caption=caption, masks=masks)
