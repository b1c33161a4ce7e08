"""Per-class analysis of one evaluation: the table, the confusion matrix and the precision-recall curves.

Each task fills an :class:`EvalReport` at the end of its validation/test epoch from the numbers its metrics
already hold (no second pass over the data): classification and segmentation from their torchmetrics
confusion matrices, detection from the COCO evaluation's precision array, the same array ``eval-coco``'s
AP comes from. The pictures callback logs it (``wandb.Table`` and charts on W&B; CSV + PNG on disk).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor


@dataclass
class EvalReport:
    """What one evaluation says per class.

    Attributes:
        stage: ``"val"`` or ``"test"``.
        class_names: names of labels ``0..K-1``.
        table: column -> values, one row per class; the first column is ``"class"``.
        confusion: ``[K, K]`` counts, rows the true class, columns the predicted one (classification:
            images; segmentation: pixels, ignore pixels left out).
        pr_recall: detection: the COCO recall thresholds ``[R]`` (0, 0.01, ..., 1).
        pr_precision: detection: interpolated precision ``[K, R]`` at IoU 0.50, all areas, 100 detections
            (``-1`` for a class without ground truth), straight from ``COCOeval.eval["precision"]``.
    """

    stage: str
    class_names: list[str]
    table: dict[str, list[Any]]
    confusion: Tensor | None = None
    pr_recall: np.ndarray | None = None
    pr_precision: np.ndarray | None = None

    @property
    def columns(self) -> list[str]:
        return list(self.table)

    @property
    def rows(self) -> list[list[Any]]:
        return [list(r) for r in zip(*self.table.values())]

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(self.columns)
            for row in self.rows:
                writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])
        return path

    def metric_columns(self) -> dict[str, list[float]]:
        """The per-class scores in ``[0, 1]`` (for the bar chart): float columns other than counts."""
        return {k: [float(x) for x in v] for k, v in self.table.items()
                if k != "class" and v and all(isinstance(x, float) for x in v)}


def _ratio(num: Tensor, den: Tensor) -> list[float]:
    return [float(n) / float(d) if d > 0 else float("nan") for n, d in zip(num.tolist(), den.tolist())]


def classification_report(confusion: Tensor, class_names: Sequence[str], stage: str) -> EvalReport:
    """Per class: validation images (support), accuracy (recall: right among the class's images) and
    precision (right among the images predicted as it), from the ``[K, K]`` image confusion matrix."""
    cm = confusion.detach().cpu().double()
    diag = cm.diagonal()
    table = {"class": list(class_names), "images": [int(x) for x in cm.sum(1).tolist()],
             "accuracy": _ratio(diag, cm.sum(1)), "precision": _ratio(diag, cm.sum(0))}
    return EvalReport(stage, list(class_names), table, confusion=confusion.detach().cpu().long())


def segmentation_report(confusion: Tensor, class_names: Sequence[str], stage: str) -> EvalReport:
    """Per class: ground-truth pixels, IoU and accuracy (recall), from the ``[K, K]`` pixel confusion matrix."""
    cm = confusion.detach().cpu().double()
    diag = cm.diagonal()
    table = {"class": list(class_names), "pixels": [int(x) for x in cm.sum(1).tolist()],
             "iou": _ratio(diag, cm.sum(1) + cm.sum(0) - diag), "accuracy": _ratio(diag, cm.sum(1))}
    return EvalReport(stage, list(class_names), table, confusion=confusion.detach().cpu().long())


def detection_report(details: dict[str, Any], ground_truth: dict[str, Any], class_names: Sequence[str],
                     label_to_category_id: dict[int, int], stage: str) -> EvalReport:
    """Per class: ground-truth instances (not crowd), AP@[.5:.95], AP50, AP75, from ``evaluate_coco(...,
    details=True)["details"]`` (the ``[T, R, K, A, M]`` precision array of ``COCOeval``)."""
    precision = np.asarray(details["precision"])  # [T, R, K, A, M]
    iou = np.asarray(details["iou_thresholds"])
    column = {int(c): k for k, c in enumerate(details["category_ids"])}
    instances: dict[int, int] = {}
    for a in ground_truth["annotations"]:
        if not a.get("iscrowd", 0):
            instances[int(a["category_id"])] = instances.get(int(a["category_id"]), 0) + 1

    def ap(p: np.ndarray) -> float:
        valid = p[p > -1]
        return float(valid.mean()) if valid.size else float("nan")

    t50, t75 = int(np.argmin(np.abs(iou - 0.5))), int(np.argmin(np.abs(iou - 0.75)))
    r = precision.shape[1]
    table: dict[str, list[Any]] = {"class": [], "instances": [], "ap": [], "ap50": [], "ap75": []}
    curves = np.full((len(class_names), r), -1.0)
    for label, name in enumerate(class_names):
        k = column.get(int(label_to_category_id.get(label, label + 1)))
        p = precision[:, :, k, 0, -1] if k is not None else np.full((len(iou), r), -1.0)
        table["class"].append(name)
        table["instances"].append(instances.get(int(label_to_category_id.get(label, label + 1)), 0))
        table["ap"].append(ap(p))
        table["ap50"].append(ap(p[t50]))
        table["ap75"].append(ap(p[t75]))
        curves[label] = p[t50]
    return EvalReport(stage, list(class_names), table, pr_recall=np.asarray(details["recall_thresholds"]),
                      pr_precision=curves)


def write_report_files(report: EvalReport, directory: str | Path, prefix: str | None = None) -> list[Path]:
    """``<prefix>_per_class.csv`` and the figures (per-class bars, confusion matrix, PR curves) as PNGs."""
    from lit_vision.visualize import plots

    directory = Path(directory)
    prefix = prefix or report.stage
    written = [report.write_csv(directory / f"{prefix}_per_class.csv")]
    metrics = report.metric_columns()
    if metrics:
        fig = plots.per_class_bar_figure(report.class_names, metrics, title=f"{prefix}: per class")
        written.append(plots.save_figure(fig, directory / f"{prefix}_per_class.png"))
    if report.confusion is not None:
        fig = plots.confusion_matrix_figure(report.confusion, report.class_names, normalize=True,
                                            title=f"{prefix}: confusion matrix (rows: truth, normalised)")
        written.append(plots.save_figure(fig, directory / f"{prefix}_confusion_matrix.png"))
    if report.pr_precision is not None and report.pr_recall is not None:
        fig = plots.pr_curves_figure(report.pr_recall, report.pr_precision, report.class_names,
                                     title=f"{prefix}: precision-recall (IoU 0.50)", ap=report.table.get("ap50"))
        written.append(plots.save_figure(fig, directory / f"{prefix}_pr_curves.png"))
    return written

