"""Training samples as the model sees them (after augmentation), drawn with their labels, boxes or masks.

``lit-vision browse-data`` puts these tiles in a grid so a researcher sees, in a minute, what a broken
augmentation or a wrong box format does to the data. Each item is read the way the training loader reads
it: under its own seed, ``(seed, epoch 0, index)`` (:class:`~lit_vision.data.resumable.SeededDataset`), so
the same seed draws the same samples with the same augmentation, and the global random state is untouched.

While drawing, the tiles also check what is easy to get wrong: boxes reaching outside the (transformed)
image, boxes under a pixel wide or high, labels outside the class list, mask values that are neither a
class nor ignore. The counts come back with the picture (:class:`SampleFindings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_vision.constants import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD
from lit_vision.data.resumable import SeededDataset
from lit_vision.visualize.draw import (
    RED,
    WHITE,
    Color,
    caption,
    class_colors,
    downscale,
    draw_boxes,
    draw_mask,
    grid,
    side_by_side,
    to_uint8,
    upscale,
    upscale_factor,
)

GREY: Color = (170, 170, 170)
BOX_TOLERANCE = 0.5  # pixels a transformed box may pass the image border (rounding) before it counts as outside


@dataclass
class SampleFindings:
    """What drawing the samples found: which items, and the problems counted in them."""

    indices: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    boxes: int = 0
    boxes_outside_image: int = 0
    degenerate_boxes: int = 0
    unknown_labels: int = 0
    unknown_mask_pixels: int = 0
    problem_paths: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pick_indices(length: int, num: int, seed: int) -> list[int]:
    """``num`` distinct indices of ``length`` items (all of them when fewer), the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(length, generator=generator)[:max(0, num)].tolist()


def input_normalisation(dataset: Any, kind: str) -> tuple[Sequence[float] | None, Sequence[float] | None]:
    """The mean/std an item's image was normalised with, read from the dataset's transform; detection images
    are never normalised, the others default to ImageNet's (the item contracts' default)."""
    if kind == "detection":
        return None, None
    transform = getattr(dataset, "transforms", None) or getattr(dataset, "transform", None)
    if hasattr(transform, "mean") and hasattr(transform, "std"):
        return list(transform.mean), list(transform.std)
    for op in getattr(transform, "transforms", []) or []:  # a v2.Compose
        if hasattr(op, "mean") and hasattr(op, "std"):
            return list(op.mean), list(op.std)
    return IMAGENET_MEAN, IMAGENET_STD


def item_kind(item: dict[str, Any]) -> str:
    if "target" in item:
        return "detection"
    if "mask" in item:
        return "segmentation"
    if "label" in item:
        return "classification"
    raise TypeError(f"cannot draw an item with keys {sorted(item)}: expected a classification, detection or "
                    "segmentation item (see the data item contracts)")


def _name(class_names: Sequence[str], k: int) -> str:
    return str(class_names[k]) if 0 <= k < len(class_names) else f"?{k}"


def draw_sample(item: dict[str, Any], class_names: Sequence[str], findings: SampleFindings,
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                palette: Sequence[int] | None = None, min_side: int = 96, max_side: int = 384) -> Tensor:
    """One item as a captioned ``uint8 [3, H, W]`` tile; problems are counted into ``findings`` and captioned in red."""
    kind = item_kind(item)
    image = to_uint8(item["image"], mean, std)
    name = Path(str(item.get("path", ""))).name
    if kind == "classification":
        label = int(item["label"])
        bad = not 0 <= label < len(class_names)
        findings.unknown_labels += int(bad)
        tile, _ = downscale(upscale(image, min_side), max_side)
        return caption(tile, [(_name(class_names, label), RED if bad else WHITE), (name, GREY)], font_size=11)
    if kind == "detection":
        return _detection_tile(image, item["target"], name, class_names, findings, min_side, max_side)
    return _segmentation_tile(image, item["mask"], name, class_names, findings, palette, min_side, max_side)


def _detection_tile(image: Tensor, target: dict[str, Any], name: str, class_names: Sequence[str],
                    findings: SampleFindings, min_side: int, max_side: int) -> Tensor:
    boxes = torch.as_tensor(target["boxes"]).detach().cpu().float().reshape(-1, 4)
    labels = [int(k) for k in torch.as_tensor(target["labels"]).reshape(-1).tolist()]
    h, w = image.shape[-2:]
    t = BOX_TOLERANCE
    outside = (boxes[:, 0] < -t) | (boxes[:, 1] < -t) | (boxes[:, 2] > w + t) | (boxes[:, 3] > h + t)
    degenerate = ((boxes[:, 2] - boxes[:, 0]) < 1) | ((boxes[:, 3] - boxes[:, 1]) < 1)
    unknown = sum(not 0 <= k < len(class_names) for k in labels)
    findings.boxes += len(labels)
    findings.boxes_outside_image += int(outside.sum())
    findings.degenerate_boxes += int(degenerate.sum())
    findings.unknown_labels += unknown
    f = upscale_factor(image, min_side)
    tile, s = downscale(upscale(image, min_side), max_side)
    colors = class_colors(len(class_names))
    box_colors = [colors[k] if 0 <= k < len(colors) else RED for k in labels]
    tile = draw_boxes(tile, boxes * f * s, [_name(class_names, k) for k in labels], box_colors)
    problems = [f"{n} {what}" for n, what in ((int(outside.sum()), "outside"), (int(degenerate.sum()), "degenerate"),
                                              (unknown, "unknown label")) if n]
    text = f"{len(labels)} boxes" + (": " + ", ".join(problems) if problems else "")
    return caption(tile, [(text, RED if problems else WHITE), (name, GREY)], font_size=11)


def _segmentation_tile(image: Tensor, mask: Tensor, name: str, class_names: Sequence[str], findings: SampleFindings,
                       palette: Sequence[int] | None, min_side: int, max_side: int) -> Tensor:
    mask = torch.as_tensor(mask).detach().cpu().long()
    values = [int(v) for v in mask.unique().tolist()]
    unknown = [v for v in values if v >= len(class_names) and v != IGNORE_INDEX]
    if unknown:
        findings.unknown_mask_pixels += int(torch.isin(mask, torch.tensor(unknown)).sum())
    overlay = draw_mask(image, mask, class_colors(len(class_names), palette), alpha=0.6, ignore_index=IGNORE_INDEX)
    tile, _ = downscale(upscale(side_by_side([image, overlay]), min_side), max_side)
    present = ", ".join(_name(class_names, v) for v in values if v < len(class_names)) or "(no class)"
    lines = [(present, WHITE)]
    if unknown:
        lines.append((f"unknown mask values {unknown}", RED))
    return caption(tile, [*lines, (name, GREY)], font_size=11)


def draw_samples(dataset: Any, class_names: Sequence[str], num: int = 16, seed: int = 0,
                 palette: Sequence[int] | None = None, ncol: int | None = None) -> tuple[Tensor, SampleFindings]:
    """A grid of ``num`` items of ``dataset`` (transforms applied, as training reads them) and what they showed.

    ``dataset`` is a split's dataset *with* its transforms (``datamodule.datasets["train"]`` after ``setup``).
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: nothing to draw")
    findings = SampleFindings(indices=pick_indices(len(dataset), num, seed))
    seeded = SeededDataset(dataset)
    tiles = []
    mean = std = None
    for position, index in enumerate(findings.indices):
        item = seeded[(seed, 0, index)]
        if position == 0:
            mean, std = input_normalisation(dataset, item_kind(item))
        before = (findings.boxes_outside_image, findings.degenerate_boxes, findings.unknown_labels,
                  findings.unknown_mask_pixels)
        tiles.append(draw_sample(item, class_names, findings, mean, std, palette))
        path = str(item.get("path", index))
        findings.paths.append(path)
        after = (findings.boxes_outside_image, findings.degenerate_boxes, findings.unknown_labels,
                 findings.unknown_mask_pixels)
        if after != before:
            findings.problem_paths.append(path)
    return grid(tiles, ncol), findings
