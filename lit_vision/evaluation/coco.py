"""COCO evaluation with results identical to pycocotools, through faster_coco_eval.

One function serves ``lit-vision eval-coco`` (any framework's results file) and, in the detection task,
the validation metrics, so the numbers we report are the numbers we prove against pycocotools
(``tests/evaluation/test_coco.py``: all 12 statistics to 1e-4 on the standard reference pair).
faster_coco_eval is a C++ reimplementation of ``COCOeval`` with the same matching rules (crowd regions,
area ranges, max detections); we only add input checks with readable messages and named outputs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The 12 numbers of ``COCOeval.summarize()``, in its order, named as torchmetrics' MeanAveragePrecision does.
COCO_STAT_NAMES: tuple[str, ...] = (
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)
COCO_STAT_LABELS: tuple[str, ...] = (
    "AP @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "AP @[IoU=0.50      | area=all | maxDets=100]",
    "AP @[IoU=0.75      | area=all | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AP @[IoU=0.50:0.95 | area=large | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=1]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=10]",
    "AR @[IoU=0.50:0.95 | area=all | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=small | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
    "AR @[IoU=0.50:0.95 | area=large | maxDets=100]",
)
IOU_TYPES = ("bbox", "segm")


class CocoEvaluationError(ValueError):
    """Ground truth or results that cannot be evaluated; the message names the file and the problem."""


def _load_json(source: str | Path | Any, what: str) -> tuple[Any, str]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file {path} does not exist")
        try:
            return json.loads(path.read_text()), str(path)
        except json.JSONDecodeError as err:
            raise CocoEvaluationError(f"{what} file {path} is not valid JSON: {err}") from err
    return source, f"<in-memory {what}>"


def _check_results(results: Any, gt: dict[str, Any], iou_type: str, name: str) -> list[dict[str, Any]]:
    """Reject results that pycocotools would mis-evaluate silently or fail on with an opaque assertion."""
    if not isinstance(results, list):
        raise CocoEvaluationError(f"{name}: a COCO results file is a JSON list of detections, got {type(results).__name__}")
    image_ids = {img["id"] for img in gt.get("images", [])}
    category_ids = {cat["id"] for cat in gt.get("categories", [])}
    key = "bbox" if iou_type == "bbox" else "segmentation"
    for i, det in enumerate(results):
        missing = [k for k in ("image_id", "category_id", "score", key) if k not in det]
        if missing:
            raise CocoEvaluationError(f"{name}: detection #{i} lacks {missing} (needed for iou_type={iou_type!r})")
        if det["image_id"] not in image_ids:
            raise CocoEvaluationError(f"{name}: detection #{i} has image_id {det['image_id']} not in the ground truth")
        if det["category_id"] not in category_ids:
            raise CocoEvaluationError(
                f"{name}: detection #{i} has category_id {det['category_id']} not in the ground truth categories"
            )
    return results


def evaluate_coco(
    ground_truth: str | Path | dict[str, Any],
    results: str | Path | Sequence[dict[str, Any]],
    iou_type: str = "bbox",
    per_class: bool = False,
) -> dict[str, Any]:
    """COCO AP/AR of ``results`` against ``ground_truth`` (paths to JSON files or loaded objects).

    Returns the 12 standard statistics under :data:`COCO_STAT_NAMES` (``-1`` where a statistic is
    undefined, e.g. no small objects, as pycocotools reports it) and, with ``per_class``, ``"per_class"``:
    ``{category name: AP@[.5:.95]}`` (``nan`` for categories without ground truth).
    """
    from faster_coco_eval import COCO, COCOeval_faster

    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    gt_data, gt_name = _load_json(ground_truth, "ground truth")
    if not isinstance(gt_data, dict) or not {"images", "annotations", "categories"} <= set(gt_data):
        raise CocoEvaluationError(f"{gt_name}: not a COCO instances file (needs images, annotations, categories)")
    res_data, res_name = _load_json(results, "results")
    res_data = _check_results(list(res_data) if isinstance(res_data, tuple) else res_data, gt_data, iou_type, res_name)
    if not res_data:
        return {name: 0.0 for name in COCO_STAT_NAMES} | ({"per_class": {}} if per_class else {})

    coco_gt = COCO(gt_data)
    coco_dt = coco_gt.loadRes(res_data)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType=iou_type, print_function=lambda *a, **k: None)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    out: dict[str, Any] = {name: float(v) for name, v in zip(COCO_STAT_NAMES, evaluator.stats[:12])}
    if per_class:
        # precision: [T iou thresholds, R recall points, K categories, A area ranges, M max dets]
        precision = np.asarray(evaluator.eval["precision"])[:, :, :, 0, -1]
        names = {c["id"]: c["name"] for c in gt_data["categories"]}
        out["per_class"] = {}
        for k, cat_id in enumerate(evaluator.params.catIds):
            valid = precision[:, :, k][precision[:, :, k] > -1]
            out["per_class"][names[cat_id]] = float(valid.mean()) if valid.size else float("nan")
    return out


def format_stats(stats: dict[str, Any]) -> str:
    """The 12 numbers in pycocotools' summary layout."""
    return "\n".join(f" Average {'Precision' if label.startswith('AP') else 'Recall   '} (A{label[1:]}) = {stats[name]:.3f}"
                     for name, label in zip(COCO_STAT_NAMES, COCO_STAT_LABELS))
