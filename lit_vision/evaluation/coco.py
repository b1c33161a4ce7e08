"""COCO evaluation with results identical to pycocotools, through faster_coco_eval.

One function serves ``lit-vision eval-coco`` (any framework's results file) and, in the detection task,
the validation metrics, so the numbers we report are the numbers we prove against pycocotools
(``tests/evaluation/test_coco.py``: all 12 statistics to 1e-4 on the standard reference pair).
faster_coco_eval is a C++ reimplementation of ``COCOeval`` with the same matching rules (crowd regions,
area ranges, max detections); we only add input checks with readable messages and named outputs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
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
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CocoEvaluationError(f"{what} file {path} is not valid JSON: {err}") from err
    return source, f"<in-memory {what}>"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _known(value: Any, ids: set[Any]) -> bool:
    try:
        return value in ids
    except TypeError:  # a list or dict as id: unhashable, and certainly no id of the ground truth
        return False


def _detection_problem(det: Any, image_ids: set[Any], category_ids: set[Any], iou_type: str) -> str | None:
    """What is wrong with one detection (``None``: nothing), phrased to follow "detection #i"."""
    if not isinstance(det, dict):
        return f"is a JSON {type(det).__name__}, not an object with image_id, category_id, score and bbox"
    key = "bbox" if iou_type == "bbox" else "segmentation"
    missing = [k for k in ("image_id", "category_id", "score", key) if k not in det]
    if missing:
        return f"lacks {missing} (needed for iou_type={iou_type!r})"
    if not _known(det["image_id"], image_ids):
        return f"has image_id {det['image_id']!r} not in the ground truth"
    if not _known(det["category_id"], category_ids):
        return f"has category_id {det['category_id']!r} not in the ground truth categories"
    score = det["score"]
    if not _is_number(score) or not math.isfinite(score):
        return f"has score {score!r}: scores must be finite numbers (NaN and infinity cannot be ranked)"
    if iou_type == "bbox":  # for segm, loadRes computes the box from the mask
        box = det["bbox"]
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_is_number(v) for v in box)):
            return f"has bbox {box!r}: expected [x, y, width, height], 4 numbers"
        if not all(math.isfinite(v) for v in box):
            return f"has bbox {list(box)} with a NaN or infinite value"
        if box[2] < 0 or box[3] < 0:
            return f"has bbox {list(box)} with a negative width or height (COCO boxes are [x, y, width, height])"
    elif not (isinstance(det["segmentation"], list)
              or isinstance(det["segmentation"], dict) and {"counts", "size"} <= set(det["segmentation"])):
        return "has a segmentation that is neither RLE ({'counts', 'size'}) nor a polygon list"
    return None


def _check_results(
    results: Any, gt: dict[str, Any], iou_type: str, name: str, allow_empty: bool = True
) -> list[dict[str, Any]]:
    """Reject results that pycocotools would mis-evaluate silently (NaN scores and boxes are ranked and
    matched without a word) or fail on with an opaque assertion; the message names the detection's index."""
    if not isinstance(results, list):
        raise CocoEvaluationError(f"{name}: a COCO results file is a JSON list of detections, got {type(results).__name__}")
    if not results and not allow_empty:
        raise CocoEvaluationError(f"{name}: the results list is empty: there are no detections to evaluate")
    image_ids = {img.get("id") for img in gt.get("images", []) if isinstance(img, dict)}
    category_ids = {cat.get("id") for cat in gt.get("categories", []) if isinstance(cat, dict)}
    for i, det in enumerate(results):
        problem = _detection_problem(det, image_ids, category_ids, iou_type)
        if problem is not None:
            raise CocoEvaluationError(f"{name}: detection #{i} {problem}")
    return results


def evaluate_coco(
    ground_truth: str | Path | dict[str, Any],
    results: str | Path | Sequence[dict[str, Any]],
    iou_type: str = "bbox",
    per_class: bool = False,
    allow_empty: bool = True,
    details: bool = False,
) -> dict[str, Any]:
    """COCO AP/AR of ``results`` against ``ground_truth`` (paths to JSON files or loaded objects).

    Returns the 12 standard statistics under :data:`COCO_STAT_NAMES` (``-1`` where a statistic is
    undefined, e.g. no small objects, as pycocotools reports it) and, with ``per_class``, ``"per_class"``:
    ``{category name: AP@[.5:.95]}`` (``nan`` for categories without ground truth).

    Every detection is checked first (:class:`CocoEvaluationError` naming the results and the detection's
    index, from 0). An empty list scores all zeros, as an untrained model's validation does; with
    ``allow_empty=False`` (``lit-vision eval-coco``: a results file without detections is a broken export)
    it raises.

    With ``details``, ``"details"`` holds the evaluation's arrays for per-class analysis (PR curves):
    ``precision`` ``[T, R, K, A, M]`` as ``COCOeval.eval["precision"]``, ``iou_thresholds``, ``recall_thresholds``,
    ``category_ids`` (the order of ``K``); ``None`` when there was nothing to evaluate.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    gt_data, gt_name = _load_json(ground_truth, "ground truth")
    if not isinstance(gt_data, dict) or not {"images", "annotations", "categories"} <= set(gt_data):
        raise CocoEvaluationError(f"{gt_name}: not a COCO instances file (needs images, annotations, categories)")
    res_data, res_name = _load_json(results, "results")
    res_data = _check_results(list(res_data) if isinstance(res_data, tuple) else res_data, gt_data, iou_type,
                              res_name, allow_empty)
    if not res_data:
        return ({name: 0.0 for name in COCO_STAT_NAMES} | ({"per_class": {}} if per_class else {})
                | ({"details": None} if details else {}))

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
    if details:
        out["details"] = {"precision": np.asarray(evaluator.eval["precision"]),
                          "iou_thresholds": np.asarray(evaluator.params.iouThrs),
                          "recall_thresholds": np.asarray(evaluator.params.recThrs),
                          "category_ids": list(evaluator.params.catIds)}
    return out


def ground_truth_subset(ground_truth: dict[str, Any], image_ids: Iterable[Any]) -> dict[str, Any]:
    """``ground_truth`` (a loaded COCO dict) limited to the images ``image_ids`` and their annotations.

    What torchvision's reference evaluator scores (``CocoEvaluator`` sets ``params.imgIds`` to the images it was
    given): a validation over part of a split (``limit_val_batches``, the sanity check) is scored on the images
    it saw, not with every unseen image's objects counted as missed. The same dict when nothing is left out.
    """
    keep = set(image_ids)
    images = [img for img in ground_truth["images"] if img["id"] in keep]
    if len(images) == len(ground_truth["images"]):
        return ground_truth
    return {**ground_truth, "images": images,
            "annotations": [a for a in ground_truth["annotations"] if a["image_id"] in keep]}


def format_stats(stats: dict[str, Any]) -> str:
    """The 12 numbers in pycocotools' summary layout."""
    return "\n".join(f" Average {'Precision' if label.startswith('AP') else 'Recall   '} (A{label[1:]}) = {stats[name]:.3f}"
                     for name, label in zip(COCO_STAT_NAMES, COCO_STAT_LABELS))
