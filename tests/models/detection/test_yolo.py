"""YOLO-style detector parts against hand-computed values: assigner, DFL, decoding, loss, NMS, PAN shapes."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from lit_vision.backbones import create_backbone
from lit_vision.heads.detection import (
    DecoupledHead,
    TaskAlignedAssigner,
    YOLOLoss,
    bbox_to_distances,
    decode_boxes,
    distribution_focal_loss,
    make_points,
    pad_targets,
)
from lit_vision.models.detection import YOLO, YOLODetector, build_detector
from lit_vision.necks.pan import PAN


def iou(a: list[float], b: list[float]) -> float:
    """Plain-Python IoU of two XYXY boxes: the independent reference."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_assigner_takes_top_k_aligned_points_inside_the_box_with_soft_targets() -> None:
    gt = [0.0, 0.0, 40.0, 10.0]
    points = torch.tensor([[5.0, 5.0], [15.0, 5.0], [25.0, 5.0], [35.0, 5.0], [45.0, 5.0], [95.0, 95.0]])
    pred = [[0, 0, 40, 10], [2, 0, 40, 10], [0, 0, 30, 10], [5, 1, 40, 9], [0, 0, 40, 10], [0, 0, 40, 10]]
    s1 = [0.3, 0.9, 0.8, 0.6, 0.99, 0.99]  # class-1 scores; points 4 and 5 lie outside the box
    scores = torch.tensor([[[0.5, s] for s in s1]])
    alpha, beta, k = 0.5, 6.0, 2
    labels, boxes, soft, fg = TaskAlignedAssigner(top_k=k, alpha=alpha, beta=beta)(
        scores, torch.tensor([pred], dtype=torch.float), points, torch.tensor([[gt]]), torch.tensor([[1]]),
        torch.tensor([[True]]))

    align = [s1[i] ** alpha * iou(pred[i], gt) ** beta for i in range(4)]  # inside points only
    positives = sorted(range(4), key=lambda i: -align[i])[:k]
    assert fg[0].nonzero().flatten().tolist() == sorted(positives)
    max_align = max(align[i] for i in positives)
    max_iou = max(iou(pred[i], gt) for i in positives)
    for i in range(6):
        expected = align[i] * max_iou / max_align if i in positives else 0.0
        assert float(soft[0, i, 1]) == pytest.approx(expected, rel=1e-5)
        assert float(soft[0, i, 0]) == 0.0  # one-hot on the box's class
    for i in positives:
        assert int(labels[0, i]) == 1 and boxes[0, i].tolist() == gt


def test_a_point_claimed_by_two_boxes_keeps_the_one_it_overlaps_most() -> None:
    gts = torch.tensor([[[0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 40.0, 40.0]]])
    points = torch.tensor([[10.0, 10.0]])
    pred = torch.tensor([[[4.0, 4.0, 38.0, 38.0]]])  # overlaps the second box far more
    scores = torch.full((1, 1, 2), 0.5)
    labels, boxes, _, fg = TaskAlignedAssigner(top_k=3)(scores, pred, points, gts, torch.tensor([[0, 1]]),
                                                        torch.tensor([[True, True]]))
    assert bool(fg[0, 0]) and int(labels[0, 0]) == 1 and boxes[0, 0].tolist() == gts[0, 1].tolist()


def test_padded_and_absent_ground_truth_assigns_nothing() -> None:
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 30.0, 30.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    gt_boxes, gt_labels, valid = pad_targets(targets, torch.device("cpu"))
    assert gt_boxes.shape == (2, 1, 4) and valid.tolist() == [[True], [False]]
    points = torch.tensor([[10.0, 10.0], [20.0, 20.0]])
    pred = torch.tensor([[0.0, 0.0, 30.0, 30.0]]).expand(2, 2, 4)
    _, _, soft, fg = TaskAlignedAssigner()(torch.full((2, 2, 3), 0.5), pred, points, gt_boxes, gt_labels, valid)
    assert fg[0].all() and not fg[1].any() and float(soft[1].sum()) == 0.0


def test_distribution_focal_loss_matches_the_two_bin_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 16)
    target = torch.tensor([[2.3, 0.0, 7.0, 14.5]])
    logp = logits.log_softmax(-1)[0]
    expected = [-(0.7 * logp[0, 2] + 0.3 * logp[0, 3]), -logp[1, 0], -logp[2, 7], -(0.5 * logp[3, 14] + 0.5 * logp[3, 15])]
    assert float(distribution_focal_loss(logits, target)[0]) == pytest.approx(float(sum(expected) / 4), rel=1e-5)


def test_minimising_dfl_puts_the_expected_distance_on_the_target() -> None:
    logits = torch.zeros(1, 4, 16, requires_grad=True)
    target = torch.tensor([[2.3, 5.75, 0.4, 12.0]])
    optimizer = torch.optim.SGD([logits], lr=5.0)
    for _ in range(300):
        optimizer.zero_grad()
        distribution_focal_loss(logits, target).sum().backward()
        optimizer.step()
    expectation = (logits.softmax(-1) * torch.arange(16.0)).sum(-1)
    assert torch.allclose(expectation, target, atol=0.05)


def test_decoding_reads_distances_in_stride_units_around_the_cell_centre() -> None:
    points, strides = make_points([(2, 3), (1, 1)], [8, 16], torch.device("cpu"))
    assert points.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12], [8, 8]]
    assert strides.tolist() == [8.0] * 6 + [16.0]
    logits = torch.full((1, 7, 4, 16), -50.0)
    sides = [1, 2, 3, 4]  # left, top, right, bottom in bins
    for j, b in enumerate(sides):
        logits[0, :, j, b] = 50.0
    boxes = decode_boxes(logits, points, strides)
    assert boxes[0, 1].tolist() == pytest.approx([12 - 8, 4 - 16, 12 + 24, 4 + 32])
    assert boxes[0, 6].tolist() == pytest.approx([8 - 16, 8 - 32, 8 + 48, 8 + 64])
    # bbox_to_distances is the inverse (in stride units).
    back = bbox_to_distances(points, boxes[0], strides, 16)
    assert torch.allclose(back, torch.tensor([[1.0, 2.0, 3.0, 4.0]]).expand(7, 4), atol=1e-5)


def test_loss_of_a_perfect_box_prediction_is_zero_for_the_box_term() -> None:
    points = torch.tensor([[12.0, 12.0], [100.0, 100.0]])
    strides = torch.tensor([8.0, 8.0])
    gt = torch.tensor([[4.0, 4.0, 28.0, 36.0]])
    loss = YOLOLoss(num_classes=2, reg_max=16)
    distances = bbox_to_distances(points[:1], gt, strides[:1], 16)  # 1, 1, 2, 3 stride units
    box_logits = torch.full((1, 2, 4, 16), -30.0)
    for j, d in enumerate(distances[0].round().long().tolist()):
        box_logits[0, 0, j, d] = 30.0
    pred_boxes = decode_boxes(box_logits, points, strides)
    cls_logits = torch.tensor([[[-10.0, 10.0], [-10.0, -10.0]]])
    out = loss(cls_logits, box_logits, pred_boxes, points, strides, [{"boxes": gt, "labels": torch.tensor([1])}])
    assert float(out["loss_box"]) == pytest.approx(0.0, abs=1e-5)
    assert float(out["loss_dfl"]) == pytest.approx(0.0, abs=1e-4)
    empty = loss(cls_logits, box_logits, pred_boxes, points, strides,
                 [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    assert float(empty["loss_box"]) == 0.0 and float(empty["loss_dfl"]) == 0.0
    # No objects: every logit is a negative, the BCE normalised by 1.
    assert float(empty["loss_cls"]) == pytest.approx(0.5 * float(F.softplus(cls_logits).sum()), rel=1e-5)


def _yolo(**kw) -> YOLODetector:
    """The YOLO architecture built on a ResNet-18 for 3 classes at 64 px (``kw``: its options)."""
    torch.manual_seed(0)
    body = create_backbone("tv/resnet18", out_indices=[-3, -2, -1])
    return YOLO(neck_channels=32, **kw).build(body, 3, image_size=64)


def test_parts_are_injected_as_built() -> None:
    """YOLODetector takes its parts built, as torchvision's detectors do; YOLO builds them from factories."""
    body = create_backbone("tv/resnet18", out_indices=[-3, -2, -1])
    neck = PAN(body.channels, 16)
    head = DecoupledHead(neck.out_channels, 2, reg_max=8)
    loss = YOLOLoss(2, reg_max=8, assigner=TaskAlignedAssigner(top_k=3))
    model = YOLODetector(body, neck, head, loss)
    assert model.neck is neck and model.head is head and model.loss.assigner.top_k == 3 and model.reg_max == 8
    built = YOLO(neck=functools.partial(PAN, out_channels=16), head=functools.partial(DecoupledHead, reg_max=8),
                 assigner=TaskAlignedAssigner(top_k=3)).build(create_backbone("tv/resnet18", out_indices=[-3, -2, -1]), 2)
    assert built.neck.out_channels == [16, 16, 16] and built.reg_max == 8 and built.loss.reg_max == 8
    assert built.loss.assigner.top_k == 3
    model.train()
    out = model([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]), "labels": torch.tensor([1])}])
    assert set(out) == {"loss_cls", "loss_box", "loss_dfl"} and all(torch.isfinite(v) for v in out.values())


def test_postprocess_nms_is_class_wise_thresholded_and_clipped() -> None:
    model = _yolo(score_thresh=0.1, nms_thresh=0.5).eval()
    points = torch.tensor([[10.0, 10.0], [12.0, 12.0], [50.0, 50.0], [90.0, 10.0]])
    boxes = torch.tensor([[[0.0, 0.0, 20.0, 20.0], [1.0, 1.0, 21.0, 21.0], [40.0, 40.0, 90.0, 60.0],
                           [80.0, 0.0, 95.0, 20.0]]])
    scores = torch.zeros(1, 4, 3)
    scores[0, 0, 0], scores[0, 1, 0] = 0.9, 0.8  # overlapping, same class: one survives
    scores[0, 1, 1] = 0.7                         # the same box in another class survives
    scores[0, 2, 2] = 0.05                        # below the threshold
    scores[0, 3, 2] = 0.95                        # cell centre over the padding (image is 80 wide)
    out = model.postprocess(scores, boxes, points, [(64, 80)])[0]
    got = sorted(zip(out["labels"].tolist(), out["scores"].tolist(), out["boxes"].tolist()))
    assert [(lab, round(s, 3)) for lab, s, _ in got] == [(0, 0.9), (1, 0.7)]
    assert got[0][2] == [0.0, 0.0, 20.0, 20.0]
    # Boxes are clipped to the image.
    scores2 = torch.zeros(1, 4, 3)
    scores2[0, 2, 2] = 0.5
    clipped = model.postprocess(scores2, boxes, points, [(55, 80)])[0]["boxes"].tolist()
    assert clipped == [[40.0, 40.0, 80.0, 55.0]]


@pytest.mark.parametrize("backbone", ["tv/resnet18", "timm/efficientnet_b0"])
def test_pan_keeps_the_backbone_map_sizes_for_odd_inputs(backbone: str) -> None:
    body = create_backbone(backbone, out_indices=[-3, -2, -1])
    neck = PAN(body.channels, [16, 24, 32])
    feats = body(torch.rand(1, 3, 75, 53))
    outs = neck(feats)
    assert [o.shape[1] for o in outs] == [16, 24, 32]
    assert [o.shape[-2:] for o in outs] == [f.shape[-2:] for f in feats]


def test_detector_pads_odd_images_and_returns_boxes_inside_them() -> None:
    model = _yolo(score_thresh=0.0).eval()
    images = [torch.rand(3, 75, 53), torch.rand(3, 40, 90)]
    assert model.batch_images(images).shape[-2:] == (96, 96)
    with torch.no_grad():
        out = model(images)
    for o, im in zip(out, images):
        assert 0 < len(o["boxes"]) <= 100
        assert float(o["boxes"][:, 2].max()) <= im.shape[2] and float(o["boxes"][:, 3].max()) <= im.shape[1]


def test_backbone_strides_must_double() -> None:
    with pytest.raises(ValueError, match="strides double"):
        build_detector("yolo", "tv/resnet18", 3, backbone_out_indices=(-4, -2, -1), neck_channels=32)
    with pytest.raises(ValueError, match="three"):
        build_detector("yolo", "tv/resnet18", 3, backbone_out_indices=(-4, -3, -2, -1), neck_channels=32)


def test_classification_bias_prior() -> None:
    model = _yolo()
    for cls, stride in zip(model.head.cls, (8, 16, 32)):
        assert torch.allclose(cls[-1].bias, torch.full((3,), math.log(5 / 3 / (64 / stride) ** 2)))


def test_candidates_outrank_outside_points_even_when_their_alignment_is_zero() -> None:
    points = torch.tensor([[50.0 + i, 50.0] for i in range(12)] + [[5.0, 5.0], [10.0, 10.0]])  # last two inside
    pred = torch.tensor([[[200.0, 200.0, 210.0, 210.0]] * 14])  # no overlap with the box anywhere
    _, _, _, fg = TaskAlignedAssigner(top_k=10)(torch.full((1, 14, 1), 0.5), pred, points,
                                                torch.tensor([[[0.0, 0.0, 20.0, 20.0]]]), torch.tensor([[0]]),
                                                torch.tensor([[True]]))
    assert fg[0].nonzero().flatten().tolist() == [12, 13]


@pytest.mark.parametrize("top_n,per_img", [(1000, 100), (40, 7)])
def test_batched_postprocess_equals_the_per_image_loop(top_n: int, per_img: int) -> None:
    """One topk / NMS for the batch returns what the previous per-image loop returned (``reference_yolo.py``),
    including the pre-NMS cap and the per-image cap, on images of different sizes in one padded batch."""
    from tests.heads.detection import reference_yolo as ref

    model = _yolo(score_thresh=0.3, nms_thresh=0.5, pre_nms_top_n=top_n, detections_per_img=per_img).eval()
    points, strides = make_points([(12, 16), (6, 8), (3, 4)], [8, 16, 32], torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(3, len(points), 3, generator=g)
    boxes = decode_boxes(torch.randn(3, len(points), 4, 16, generator=g), points, strides)
    sizes = [(96, 128), (70, 101), (96, 40)]
    new = model.postprocess(scores, boxes, points, sizes)
    old = ref.postprocess(scores, boxes, points, sizes, 0.3, 0.5, per_img, top_n)
    assert all(len(o["scores"]) for o in old)
    assert any(len(o["scores"]) == per_img for o in old) == (per_img == 7)  # the small cap is reached, 100 is not
    for n, o in zip(new, old):
        assert torch.equal(n["labels"], o["labels"]) and torch.equal(n["scores"], o["scores"])
        assert torch.equal(n["boxes"], o["boxes"])


def test_decoding_stays_float32_under_bf16_autocast() -> None:
    """Under bf16-mixed the expectation over the bins ran in bf16: distances quantised to 2^-8 of their value."""
    points, strides = make_points([(8, 8), (4, 4), (2, 2)], [8, 16, 32], torch.device("cpu"))
    logits = torch.randn(2, len(points), 4, 16, generator=torch.Generator().manual_seed(0)) * 3
    exact = decode_boxes(logits, points, strides)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = decode_boxes(logits, points, strides)
        in_bf16 = logits.softmax(-1).matmul(torch.arange(16.0)) * strides.view(1, -1, 1)  # what autocast does
    assert mixed.dtype == torch.float32 and torch.equal(mixed, exact)
    assert (in_bf16.float()[..., 2:] - (exact[..., 2:] - points)).abs().max() > 0.1  # the error avoided (px)


def test_nms_treats_small_boxes_alike_in_every_image_of_a_large_batch() -> None:
    """32 images x 80 classes: one offset (image * K + class) reached 1.6 M px, where float32 steps by 0.125 px,
    so the IoU NMS saw for two 4-px boxes (0.6327) depended on the image: 0.6332 in the first, 0.6410 in the last."""
    from lit_vision.models.detection.yolo import select_detections

    b, k = 32, 80
    points = torch.tensor([[102.0, 102.0], [102.9, 102.0], [600.0, 600.0]])
    boxes = torch.tensor([[100.0, 100.0, 104.0, 104.0], [100.9, 100.0, 104.9, 104.0], [560.0, 560.0, 640.0, 640.0]])
    scores = torch.zeros(b, 3, k)
    scores[:, 0, 79], scores[:, 1, 79], scores[:, 2, 0] = 0.9, 0.8, 0.5  # the large box makes the span 641 px
    _, _, labels, image = select_detections(scores, boxes.expand(b, 3, 4), points, 640, 640, pre_nms_top_n=10,
                                            score_thresh=0.1, nms_thresh=0.635, detections_per_img=10)
    assert torch.bincount(image[labels == 79], minlength=b).tolist() == [2] * b  # IoU 0.6327 < 0.635 everywhere
