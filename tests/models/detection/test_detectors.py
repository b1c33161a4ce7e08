"""build_detector: every architecture on several registry backbones, label convention, anchors, focal loss."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from lit_vision.backbones import create_backbone
from lit_vision.models.detection import anchors_per_level, build_detector
from lit_vision.necks import BackboneWithFPN

SIZE = 64
NUM_CLASSES = 3
LOSS_KEYS = {
    "faster_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
    "retinanet": {"classification", "bbox_regression"},
    "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
    "yolo": {"loss_cls", "loss_box", "loss_dfl"},
}


def tiny(architecture: str, backbone: str = "tv/resnet18", **kw):
    """A 32-wide detector for 64-px images (``kw``: the architecture's options)."""
    torch.manual_seed(0)
    width = {"neck_channels": 32} if architecture == "yolo" else {"fpn_channels": 32}
    return build_detector(architecture, backbone, NUM_CLASSES, image_size=SIZE, **(width | kw))


def batch():
    images = [torch.rand(3, SIZE, SIZE), torch.rand(3, 48, SIZE)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 34.0], [30.0, 30.0, 60.0, 62.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # no objects is valid
    ]
    return images, targets


@pytest.mark.parametrize("architecture", ["faster_rcnn", "retinanet", "fcos", "yolo"])
@pytest.mark.parametrize("backbone", ["tv/resnet18", "tv/mobilenet_v3_small", "timm/efficientnet_b0"])
def test_detector_trains_and_predicts_labels_in_range(architecture: str, backbone: str) -> None:
    model = tiny(architecture, backbone, score_thresh=0.0)
    images, targets = batch()
    model.train()
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS[architecture]
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, img in zip(out, images):
        assert set(o) == {"boxes", "labels", "scores"}
        assert o["boxes"].shape[1] == 4 and len(o["boxes"]) == len(o["labels"]) == len(o["scores"])
        if len(o["labels"]):
            assert 0 <= int(o["labels"].min()) and int(o["labels"].max()) < NUM_CLASSES
            # Outputs are in the coordinates of the input image (no internal resize leaks out).
            assert float(o["boxes"][:, 2].max()) <= img.shape[2] + 1e-3
            assert float(o["boxes"][:, 3].max()) <= img.shape[1] + 1e-3


def test_faster_rcnn_reserves_background_inside_the_wrapper() -> None:
    model = tiny("faster_rcnn")
    assert model.model.roi_heads.box_predictor.cls_score.out_features == NUM_CLASSES + 1
    for arch in ("retinanet", "fcos"):
        head = tiny(arch).model.head.classification_head
        assert head.num_classes == NUM_CLASSES


def test_internal_transform_does_not_resize_when_image_size_given() -> None:
    model = tiny("retinanet")
    transform = model.model.transform
    assert transform.min_size == (SIZE,) and transform.max_size == SIZE and transform._skip_resize
    transform.eval()
    images, _ = batch()
    image_list, _ = transform(images)
    assert image_list.image_sizes == [(SIZE, SIZE), (48, SIZE)]
    assert transform.image_mean == [0.485, 0.456, 0.406]  # ImageNet normalisation kept


def test_anchor_defaults_are_torchvisions() -> None:
    """torchvision's fasterrcnn_resnet50_fpn: one size per level (32 .. 512 on P2-P6) x 3 ratios; its
    retinanet_resnet50_fpn: 3 scales per level, truncated to integers (32, 40, 50 on P3) x 3 ratios."""
    from torchvision.models.detection.faster_rcnn import (
        _default_anchorgen as rpn_default_anchorgen,
    )
    from torchvision.models.detection.retinanet import _default_anchorgen

    model = tiny("faster_rcnn", backbone_out_indices=(-4, -3, -2, -1))
    generator = model.model.rpn.anchor_generator
    assert anchors_per_level(model) == [3] * 5  # strides 4/8/16/32 + max-pooled 64
    assert generator.sizes == rpn_default_anchorgen().sizes == ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    assert generator.aspect_ratios == ((0.5, 1.0, 2.0),) * 5
    retina = tiny("retinanet").model.anchor_generator
    assert retina.sizes == tuple(tuple(float(s) for s in level) for level in _default_anchorgen().sizes)
    assert tiny("faster_rcnn", scales_per_octave=3).model.rpn.anchor_generator.sizes[0] == (32.0, 40.0, 50.0)


def test_fpn_neck_levels_and_strides() -> None:
    body = create_backbone("tv/resnet18", out_indices=[-3, -2, -1])
    neck = BackboneWithFPN(body, out_channels=16, extra="p6p7")
    out = neck(torch.rand(1, 3, 128, 128))
    assert list(out) == ["0", "1", "2", "p6", "p7"] and neck.strides == [8, 16, 32, 64, 128]
    assert all(v.shape[1] == 16 for v in out.values())
    assert [v.shape[-1] for v in out.values()] == [128 // s for s in neck.strides]


def _retinanet_cls_loss(alpha: float, gamma: float):
    model = tiny("retinanet", focal_alpha=alpha, focal_gamma=gamma).train()
    images, targets = batch()
    captured = {}
    head = model.model.head.classification_head
    original = head.compute_loss

    def spy(t, outputs, matched):
        captured.update(targets=t, logits=outputs["cls_logits"].detach(), matched=matched)
        return original(t, outputs, matched)

    head.compute_loss = spy
    with torch.no_grad():
        losses = model(images, targets)
    return losses["classification"], captured, head


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.75, 0.5)])
def test_retinanet_focal_loss_uses_configured_alpha_gamma(alpha: float, gamma: float) -> None:
    loss, cap, head = _retinanet_cls_loss(alpha, gamma)
    per_image = []
    for t, logits, matched in zip(cap["targets"], cap["logits"], cap["matched"]):
        fg = matched >= 0
        gt = torch.zeros_like(logits)
        gt[fg, t["labels"][matched[fg]]] = 1.0
        valid = matched != head.BETWEEN_THRESHOLDS
        per_image.append(sigmoid_focal_loss(logits[valid], gt[valid], alpha=alpha, gamma=gamma,
                                            reduction="sum") / max(1, int(fg.sum())))
    assert float(loss) == pytest.approx(float(sum(per_image) / len(per_image)), rel=1e-5)
    default, *_ = _retinanet_cls_loss(0.25, 2.0)
    if (alpha, gamma) != (0.25, 2.0):
        assert abs(float(loss) - float(default)) > 1e-4  # the configuration reaches the loss


def test_unknown_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown detector architecture 'yolov3'.*Did you mean 'yolo'"):
        build_detector("yolov3", "tv/resnet18", 3)


def test_fcos_needs_fpn_channels_divisible_by_32() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        build_detector("fcos", "tv/resnet18", 3, fpn_channels=16)


@pytest.mark.parametrize("architecture", ["faster_rcnn", "retinanet", "fcos"])
def test_torchvision_detectors_decode_boxes_in_float32_under_bf16_autocast(architecture: str) -> None:
    """Under bf16-mixed the heads return bf16 and torchvision decodes in the regression's dtype: boxes came back
    as bf16, every coordinate on bf16's grid (2 px steps at 256-512 px), and the losses were bf16 sums."""
    torch.manual_seed(0)
    model = build_detector(architecture, "tv/resnet18", NUM_CLASSES, image_size=512, fpn_channels=32, score_thresh=0.0)
    images = [torch.rand(3, 384, 512)]
    targets = [{"boxes": torch.tensor([[300.5, 200.25, 410.75, 330.5]]), "labels": torch.tensor([1])}]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.train()(images, targets)
        with torch.no_grad():
            boxes = model.eval()(images)[0]["boxes"]
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert boxes.dtype == torch.float32 and len(boxes)
    inside = boxes[(boxes > 256) & (boxes < 512)]  # not clipped to an edge, where bf16's step is 2 px
    assert len(inside) and (inside != inside.bfloat16().float()).any()
