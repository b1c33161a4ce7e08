"""mIoU from the accumulated confusion matrix against hand-computed values and a per-pixel reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lit_vision.evaluation.segmentation import metrics_from_confusion, segmentation_confusion_matrix


def reference(preds: list[np.ndarray], targets: list[np.ndarray], k: int, ignore: int = 255) -> dict[str, float]:
    """Independent per-pixel computation over the whole set (no confusion matrix)."""
    p = np.concatenate([a.ravel() for a in preds])
    t = np.concatenate([a.ravel() for a in targets])
    valid = t != ignore
    p, t = p[valid], t[valid]
    ious = []
    for c in range(k):
        union = np.sum((p == c) | (t == c))
        if union:
            ious.append(np.sum((p == c) & (t == c)) / union)
    return {"miou": float(np.mean(ious)), "pixel_acc": float(np.mean(p == t))}


def run(preds: list[np.ndarray], targets: list[np.ndarray], k: int) -> dict[str, float]:
    metric = segmentation_confusion_matrix(k)
    for p, t in zip(preds, targets):  # one update per "batch": accumulated, not averaged
        metric.update(torch.as_tensor(p)[None], torch.as_tensor(t)[None])
    return metrics_from_confusion(metric.compute(), [f"c{i}" for i in range(k)])


def test_hand_built_case_with_absent_class_ignore_pixels_and_an_always_wrong_class() -> None:
    # 4 classes. Class 3 appears nowhere (excluded from the mean); class 2 is always predicted as 1.
    target = np.array([[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [2, 2, 255, 255]])
    pred = np.array([[0, 0, 1, 1],
                     [0, 1, 1, 1],
                     [1, 1, 0, 2]])  # the last two pixels are ignored whatever they say
    m = run([pred], [target], 4)
    # class 0: tp 3, gt 4, pred 3 -> 3/4; class 1: tp 4, gt 4, pred 7 -> 4/7; class 2: tp 0 -> 0; class 3: absent
    assert m["iou/c0"] == pytest.approx(3 / 4)
    assert m["iou/c1"] == pytest.approx(4 / 7)
    assert m["iou/c2"] == 0.0
    assert math.isnan(m["iou/c3"])
    assert m["miou"] == pytest.approx((3 / 4 + 4 / 7 + 0) / 3)  # not /4, and class 3 is not counted as 1
    assert m["pixel_acc"] == pytest.approx(7 / 10)
    assert m["mean_acc"] == pytest.approx((3 / 4 + 1 + 0) / 3)


def test_accumulated_over_images_not_averaged_per_image() -> None:
    # Image A: big and right; image B: tiny and wrong. The per-image mean would be far lower.
    a_t = np.zeros((10, 10), dtype=np.int64)
    a_t[:, 5:] = 1
    a_p = a_t.copy()
    b_t = np.array([[1]])
    b_p = np.array([[0]])
    m = run([a_p, b_p], [a_t, b_t], 2)
    ref = reference([a_p, b_p], [a_t, b_t], 2)
    assert m["miou"] == pytest.approx(ref["miou"]) and m["pixel_acc"] == pytest.approx(ref["pixel_acc"])
    per_image = np.mean([reference([a_p], [a_t], 2)["miou"], reference([b_p], [b_t], 2)["miou"]])
    assert abs(m["miou"] - per_image) > 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sets_match_the_per_pixel_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = 6
    targets = [rng.integers(0, k, size=(rng.integers(3, 20), rng.integers(3, 20))) for _ in range(5)]
    for t in targets:
        t[rng.random(t.shape) < 0.1] = 255
    targets[0][targets[0] == 4] = 0  # make class 4 rarer
    preds = [np.where(rng.random(t.shape) < 0.6, np.where(t == 255, 0, t), rng.integers(0, k - 1, size=t.shape))
             for t in targets]  # class 5 is never predicted
    m = run(preds, targets, k)
    ref = reference(preds, targets, k)
    assert m["miou"] == pytest.approx(ref["miou"], abs=1e-12)
    assert m["pixel_acc"] == pytest.approx(ref["pixel_acc"], abs=1e-12)
