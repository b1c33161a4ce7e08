"""The batched target padding, IoU and task-aligned assignment reproduce the per-image implementation they replaced
(``reference_yolo.py``) exactly, on seeded fixtures with empty images, crowded images and overlapping boxes."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from lit_vision.heads.detection import TaskAlignedAssigner, decode_boxes, make_points, pad_targets
from lit_vision.heads.detection.assigner import batched_box_iou
from tests.heads.detection import reference_yolo as ref


def random_targets(counts: list[int], size: tuple[int, int], classes: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    h, w = size
    out = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        wh = 4 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5])
        boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([w, h]))], 1)
        out.append({"boxes": boxes, "labels": torch.randint(0, classes, (n,), generator=g)})
    return out


@pytest.mark.parametrize("counts", [[3, 0, 7, 1], [0, 0], [12], [1, 25, 2]])
def test_pad_targets_equals_the_per_image_loop(counts: list[int]) -> None:
    targets = random_targets(counts, (64, 96), 5, seed=len(counts))
    for new, old in zip(pad_targets(targets, torch.device("cpu")), ref.pad_targets(targets, torch.device("cpu"))):
        assert torch.equal(new, old)


def test_batched_iou_equals_torchvision_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 5, 4, generator=g) * 50
    b = torch.rand(3, 40, 4, generator=g) * 50
    a[..., 2:] += a[..., :2]
    b[..., 2:] += b[..., :2]
    expected = torch.stack([box_iou(x, y) for x, y in zip(a, b)])
    torch.testing.assert_close(batched_box_iou(a, b), expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("seed,counts", [(0, [3, 0, 7, 1]), (1, [1, 30, 2, 5]), (2, [0, 0, 0, 4]), (3, [9])])
def test_assignments_equal_the_previous_assigner(seed: int, counts: list[int]) -> None:
    size, classes, reg_max = (64, 96), 6, 16
    points, strides = make_points([(8, 12), (4, 6), (2, 3)], [8, 16, 32], torch.device("cpu"))
    g = torch.Generator().manual_seed(seed)
    b, a = len(counts), len(points)
    scores = torch.rand(b, a, classes, generator=g)
    pred = decode_boxes(torch.randn(b, a, 4, reg_max, generator=g) * 2, points, strides)
    targets = random_targets(counts, size, classes, seed)
    gt = pad_targets(targets, torch.device("cpu"))
    labels, boxes, soft, fg = TaskAlignedAssigner(top_k=10)(scores, pred, points, *gt)
    r_labels, r_boxes, r_soft, r_fg = ref.assign(scores, pred, points, *ref.pad_targets(targets, torch.device("cpu")))
    assert fg.any() == (sum(counts) > 0)
    assert torch.equal(fg, r_fg) and torch.equal(labels[fg], r_labels[fg]) and torch.equal(boxes[fg], r_boxes[fg])
    torch.testing.assert_close(soft, r_soft, rtol=0, atol=1e-7)


def test_a_padded_slot_against_a_zero_area_prediction_changes_nothing() -> None:
    """A padded ground-truth slot (zeros) and a predicted box of zero width made 0/0 = NaN in the IoU, which the
    per-image amax spread to every anchor of that image (a NaN loss for the batch)."""
    points, strides = make_points([(8, 8), (4, 4), (2, 2)], [8, 16, 32], torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, len(points), 4, 16, generator=g)
    logits[1, 70, [0, 2]] = torch.tensor([30.0] + [0.0] * 15)  # all mass on bin 0, left and right: width 0
    pred = decode_boxes(logits, points, strides)
    assert pred[1, 70, 2] == pred[1, 70, 0]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0], [20.0, 20.0, 60.0, 50.0]]),
                "labels": torch.tensor([0, 1])},
               {"boxes": torch.tensor([[5.0, 5.0, 30.0, 30.0]]), "labels": torch.tensor([2])}]  # 1 padded slot
    scores = torch.rand(2, len(points), 3, generator=g)
    assigner = TaskAlignedAssigner()
    _, _, soft, foreground = assigner(scores, pred, points, *pad_targets(targets, torch.device("cpu")))
    assert torch.isfinite(soft).all() and foreground[1].any()
    _, _, alone, alone_fg = assigner(scores[1:], pred[1:], points, *pad_targets(targets[1:], torch.device("cpu")))
    assert torch.equal(soft[1], alone[0]) and torch.equal(foreground[1], alone_fg[0])  # as if it were not padded
