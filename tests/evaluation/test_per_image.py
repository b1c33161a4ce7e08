"""Per-image detection error (what the worst-k pictures rank by), computed by hand."""

from __future__ import annotations

import pytest
import torch

from lit_vision.evaluation.per_image import detection_errors


def pred(boxes: list[list[float]], labels: list[int], scores: list[float]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.long),
            "scores": torch.tensor(scores)}


def target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.long)}


def test_errors_are_one_minus_f1_of_confident_class_aware_matches() -> None:
    gt = target([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])
    cases = [
        (pred([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1], [0.9, 0.8]), 0.0),          # both found
        (pred([[0, 0, 10, 10]], [0, ], [0.9]), 1 - 2 * 1 / 3),                          # one of two
        (pred([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 0], [0.9, 0.8]), 1.0),          # right boxes, wrong classes
        (pred([[0, 0, 10, 10], [0, 0, 10, 10]], [0, 0], [0.9, 0.8]), 1 - 2 * 1 / 4),  # a duplicate is a false positive
        (pred([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1], [0.9, 0.1]), 1 - 2 * 1 / 3),  # 0.1 < score threshold
        (pred([[0, 0, 10, 16]], [0], [0.9]), 1 - 2 * 1 / 3),                            # IoU 0.625 >= 0.5 matches
        (pred([[0, 0, 10, 25]], [0], [0.9]), 1.0),                                       # IoU 0.4 does not
    ]
    got = detection_errors([c[0] for c in cases], [gt] * len(cases))
    assert got.tolist() == pytest.approx([c[1] for c in cases])


def test_empty_images() -> None:
    none = target([], [])
    got = detection_errors([pred([], [], []), pred([[0, 0, 5, 5]], [0], [0.9]), pred([], [], [])],
                           [none, none, target([[0, 0, 5, 5]], [0])])
    assert got.tolist() == [0.0, 1.0, 1.0]
