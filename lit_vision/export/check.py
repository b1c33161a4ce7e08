"""The check after every export: the exported file, loaded back, must reproduce the Lightning model's outputs.

The reference is the task's own inference path, not the export wrapper: ``task(x)`` for classifiers and detectors
(the detector's per-image post-processing in Python), ``task.model(x)["out"]`` for segmenters. The exported file
runs through onnxruntime, ``torch.jit.load`` or ``torch.export.load``. Inputs: images of the export size (a fixed
seed, or image files), then - where the file says a dimension is dynamic - one more batch size and image size, so
a "dynamic" in the metadata is a tested claim.

Tolerances (:data:`TOLERANCE`): logits ``|a - b| <= 1e-4 + 1e-3 |b|``; detections per image: the same number, and
each reference detection matched to one exported detection of the same label with ``|score diff| <= 1e-4`` and
every box coordinate within ``1e-2 px + 1e-4 |x|`` (matching, not order: equal scores may come out in either order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

TOLERANCE: dict[str, float] = {"logits_atol": 1e-4, "logits_rtol": 1e-3, "score_atol": 1e-4, "box_atol": 1e-2,
                               "box_rtol": 1e-4}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class CheckResult:
    """What the check compared and found (written into the sidecar JSON as ``check``)."""

    passed: bool = True
    shapes: list[list[int]] = field(default_factory=list)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    max_abs_value: dict[str, float] = field(default_factory=dict)  # the model's largest |output|: the diffs' scale
    detections: int | None = None  # detection: how many of the model's detections were matched
    images: str = "random"
    failure: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = {"passed": self.passed, "tolerance": dict(TOLERANCE), "images": self.images, "shapes": self.shapes,
               "max_abs_diff": self.max_abs_diff, "max_abs_value": self.max_abs_value}
        if self.detections is not None:
            out["detections_compared"] = self.detections
        return out | ({"failure": self.failure} if self.failure else {})


# ---------------------------------------------------------------------------------------------- inputs
def image_files(paths: Sequence[str]) -> list[Path]:
    """Image files named by ``paths`` (files, or folders searched recursively), sorted; ``ValueError`` if none."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{raw} does not exist")
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return files


def sample_images(batch: int, size: tuple[int, int], files: Sequence[Path] = (), seed: int = 0) -> Tensor:
    """``[batch, 3, H, W]`` RGB in ``[0, 1]``: the files (cycled, resized) or uniform noise from ``seed``."""
    if not files:
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(batch, 3, *size, generator=generator)
    from PIL import Image
    from torchvision.transforms.v2 import functional as TF

    images = []
    for i in range(batch):
        with Image.open(files[i % len(files)]) as image:
            tensor = TF.pil_to_tensor(image.convert("RGB"))
        images.append(TF.resize(tensor, list(size), antialias=True).float() / 255)
    return torch.stack(images)


def model_input(images: Tensor, task: str, normalization_inside: bool, mean: Sequence[float],
                std: Sequence[float]) -> Tensor:
    """What the exported model takes: ``[0, 1]`` images, normalised unless the model does it."""
    if task == "detection" or normalization_inside:
        return images
    return (images - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


# ---------------------------------------------------------------------------------------------- reference
@torch.no_grad()
def reference(task_module: Any, kind: str, images01: Tensor, normalized: Tensor) -> tuple[Tensor, ...]:
    """The Lightning model's own outputs, in the export's output layout."""
    if kind == "classification":
        return (task_module(normalized),)
    if kind == "segmentation":
        return (task_module.model(normalized)["out"],)
    predictions = task_module(list(images01.unbind(0)))
    index = [torch.full((len(p["boxes"]),), i, dtype=torch.long) for i, p in enumerate(predictions)]
    return (torch.cat([p["boxes"] for p in predictions]), torch.cat([p["scores"] for p in predictions]),
            torch.cat([p["labels"] for p in predictions]), torch.cat(index))


def compare_logits(got: Tensor, ref: Tensor) -> tuple[float, str]:
    """``(max |difference|, failure or "")``."""
    if tuple(got.shape) != tuple(ref.shape):
        return float("inf"), f"logits of shape {list(got.shape)}, expected {list(ref.shape)}"
    diff = (got.float() - ref.float()).abs()
    limit = TOLERANCE["logits_atol"] + TOLERANCE["logits_rtol"] * ref.float().abs()
    worst = float(diff.max()) if diff.numel() else 0.0
    if bool((diff > limit).any()) or not torch.isfinite(got).all():
        return worst, f"logits differ by up to {worst:.3g} (tolerance {TOLERANCE['logits_atol']:g} + " \
                      f"{TOLERANCE['logits_rtol']:g} x |logit|)"
    return worst, ""


def _ties(scores: Tensor) -> str:
    """A hint when the model's scores tie: NMS keeps the first of equal scores, and runtimes order ties (and round
    scores in the last bits) differently, so a barely trained detector's export can keep other boxes."""
    ordered = scores.float().sort().values
    tied = int((ordered.diff() <= TOLERANCE["score_atol"]).sum()) if len(ordered) > 1 else 0
    if not tied:
        return ""
    return (f" ({tied} of the model's {len(ordered)} scores there equal another within {TOLERANCE['score_atol']:g}: "
            f"which of tied boxes NMS keeps depends on order and rounding, as with an untrained or barely trained "
            f"detector; check with a trained one or --images of real objects)")


def compare_detections(got: Sequence[Tensor], ref: Sequence[Tensor], batch: int) -> tuple[dict[str, float], int, str]:
    """``({"boxes": max diff, "scores": ...}, matched count, failure or "")``, image by image."""
    worst = {"boxes": 0.0, "scores": 0.0}
    matched = 0
    for image in range(batch):
        g = [t[got[3] == image] for t in got[:3]]
        r = [t[ref[3] == image] for t in ref[:3]]
        if len(g[0]) != len(r[0]):
            return worst, matched, f"image {image}: {len(g[0])} detections, the model finds {len(r[0])}" + _ties(r[1])
        free = torch.ones(len(g[0]), dtype=torch.bool)
        for box, score, label in zip(*r):
            box_diff = (g[0].float() - box.float()).abs()
            box_ok = (box_diff <= TOLERANCE["box_atol"] + TOLERANCE["box_rtol"] * box.float().abs()).all(1)
            score_diff = (g[1].float() - score.float()).abs()
            ok = free & box_ok & (score_diff <= TOLERANCE["score_atol"]) & (g[2].long() == label.long())
            if not ok.any():
                return worst, matched, (f"image {image}: the model's detection (label {int(label)}, score {float(score):.4f}, "
                                        f"box {[round(v, 2) for v in box.tolist()]}) has no match within tolerance"
                                        + _ties(r[1]))
            j = int(torch.where(ok, box_diff.max(1).values, torch.inf).argmin())
            free[j] = False
            worst = {"boxes": max(worst["boxes"], float(box_diff[j].max())),
                     "scores": max(worst["scores"], float(score_diff[j]))}
            matched += 1
    return worst, matched, ""


def check_shapes(size: tuple[int, int], dynamic: dict[str, bool], multiple: int = 1,
                 odd: bool = True) -> list[tuple[int, int, int]]:
    """``(batch, height, width)`` to check: the export size, then one more where a dimension is dynamic (height one
    step taller, width one step narrower - or two wider when small; a step is 32 px, or a multiple of ``multiple``,
    plus one pixel when any size is allowed and ``odd``: a shape branch that tracing froze shows at an odd size,
    which a 32-px step alone keeps even, as the U-Net's skipped resize did)."""
    first = (2 if dynamic.get("batch") else 1, *size)
    if not any(dynamic.values()):
        return [first]
    h, w = size
    step = multiple * -(-32 // multiple)
    odd = 1 if multiple == 1 and odd else 0
    second = (first[0] + 1 if dynamic.get("batch") else first[0], h + step + odd if dynamic.get("height") else h,
              (w - step + odd if w > 2 * step else w + 2 * step + odd) if dynamic.get("width") else w)
    return [first, second]


def run_check(run: Callable[[Tensor], tuple[Tensor, ...]], task_module: Any, kind: str, size: tuple[int, int],
              dynamic: dict[str, bool], normalization_inside: bool, mean: Sequence[float], std: Sequence[float],
              files: Sequence[Path] = (), multiple: int = 1, odd: bool = True) -> CheckResult:
    """Compare ``run`` (the loaded export) with the task on every shape of :func:`check_shapes`."""
    result = CheckResult(images=f"{len(files)} image files" if files else "random, seed 0",
                         detections=0 if kind == "detection" else None)
    for batch, h, w in check_shapes(size, dynamic, multiple, odd):
        images = sample_images(batch, (h, w), files)
        x = model_input(images, kind, normalization_inside, mean, std)
        result.shapes.append([batch, 3, h, w])
        ref = reference(task_module, kind, images, model_input(images, kind, False, mean, std))
        try:
            got = run(x)
        except Exception as err:  # noqa: BLE001 - onnxruntime/TorchScript errors: reported, not raised
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            result.passed, result.failure = False, f"input {[batch, 3, h, w]}: {type(err).__name__}: {first[:300]}"
            return result
        for name, value in zip(("boxes", "scores") if kind == "detection" else ("logits",), ref):
            if value.numel():
                result.max_abs_value[name] = max(result.max_abs_value.get(name, 0.0), float(value.abs().max()))
        if kind == "detection":
            diffs, matched, failure = compare_detections(got, ref, batch)
            result.detections = (result.detections or 0) + matched
            for key, value in diffs.items():
                result.max_abs_diff[key] = max(result.max_abs_diff.get(key, 0.0), value)
        else:
            worst, failure = compare_logits(got[0], ref[0])
            result.max_abs_diff["logits"] = max(result.max_abs_diff.get("logits", 0.0), worst)
        if failure:
            result.passed, result.failure = False, f"input {[batch, 3, h, w]}: {failure}"
            return result
    return result


__all__ = ["CheckResult", "TOLERANCE", "image_files", "model_input", "reference", "run_check", "sample_images"]
