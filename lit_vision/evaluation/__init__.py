"""Evaluation shared by tasks and the command line (COCO-style detection and segmentation metrics)."""

from lit_vision.evaluation.coco import (
    COCO_STAT_NAMES,
    CocoEvaluationError,
    evaluate_coco,
)

__all__ = ["COCO_STAT_NAMES", "CocoEvaluationError", "evaluate_coco"]
