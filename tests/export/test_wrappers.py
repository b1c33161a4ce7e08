"""The export wrappers compute what the task's models compute, in eager mode (no export involved)."""

from __future__ import annotations

import pytest
import torch

from lit_vision.export.wrappers import (
    SegmenterExport,
    TorchvisionDetectorExport,
    YOLOExport,
    export_spec,
)
from tests.export.helpers import (
    assert_same_detections,
    classifier,
    detector,
    segmenter,
    task_outputs,
)


@pytest.mark.parametrize(("options", "size"), [
    ({"score_thresh": 0.3, "pre_nms_top_n": 200, "detections_per_img": 100}, (128, 128)),
    # Not a multiple of 32 (the padding's cells masked), and a per-image cap that binds.
    ({"score_thresh": 0.3, "pre_nms_top_n": 200, "detections_per_img": 4}, (100, 140)),
])
def test_yolo_batched_postprocessing_equals_the_per_image_one(options: dict, size: tuple[int, int]) -> None:
    task = detector("yolo", **options)
    images = torch.rand(3, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = list(YOLOExport(task.model).eval()(images))
    ref = task_outputs(task, images)
    assert assert_same_detections(got, ref) >= 3 * min(options["detections_per_img"], 20)  # NMS kept many
    assert torch.equal(got[3], got[3].sort().values)  # sorted by image
    for image in range(3):
        scores = got[1][got[3] == image]
        assert torch.equal(scores, scores.sort(descending=True).values)
        assert len(scores) <= options["detections_per_img"] and float(scores.min()) > options["score_thresh"]


@pytest.mark.parametrize("architecture", ["faster_rcnn", "fcos"])
def test_torchvision_detector_wrapper_shifts_labels_back(architecture: str) -> None:
    task = detector(architecture)
    images = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        got = list(TorchvisionDetectorExport(task.model).eval()(images))
    ref = task_outputs(task, images)
    for g, r in zip(got, ref):
        assert torch.equal(g, r)
    assert int(got[2].max()) < task.num_classes and int(got[3].abs().sum()) == 0


def test_segmenter_wrapper_returns_the_out_logits_only() -> None:
    task = segmenter("fcn", aux_loss=True)
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = SegmenterExport(task.model).eval()(images)
        assert torch.equal(out, task.model(images)["out"]) and out.shape == (2, 3, 64, 96)


def test_spec_states_what_goes_in_and_out() -> None:
    clf = export_spec(classifier().model, "classification", (0.5,) * 3, (0.25,) * 3, normalize_inside=True)
    assert clf.output_names == ("logits",) and clf.normalization_inside and clf.mean == (0.5,) * 3
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(clf.module(images), clf.module.model((images - 0.5) / 0.25))
    retina = export_spec(detector("retinanet").model, "detection", (0,) * 3, (1,) * 3)
    assert retina.architecture == "retinanet" and not retina.dynamic_batch and retina.normalization_inside
    assert retina.extra["score_thresh"] == 0.0 and retina.extra["detections_per_img"] == 10
    assert retina.mean == (0.485, 0.456, 0.406)  # the detector's own normalisation
    yolo = export_spec(detector("yolo").model, "detection", (0,) * 3, (1,) * 3)
    assert yolo.dynamic_batch and yolo.size_multiple == 32 and yolo.extra["pre_nms_top_n"] == 1000
    rcnn = export_spec(detector("faster_rcnn").model, "detection", (0,) * 3, (1,) * 3)
    assert rcnn.extra["detections_per_img"] == 10  # Faster R-CNN keeps it in roi_heads


def test_yolo_tied_scores_keep_the_modules_boxes() -> None:
    """Saturated scores (all 1.0, as a barely trained model gives): NMS keeps the first of equal scores, so the
    wrapper hands NMS its candidates in the module's order and keeps the very same boxes."""
    task = detector("yolo", score_thresh=0.05, pre_nms_top_n=5000, detections_per_img=100)
    with torch.no_grad():
        for cls in task.model.head.cls:
            cls[-1].bias.add_(50.0)
    images = torch.rand(2, 3, 128, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got = list(YOLOExport(task.model).eval()(images))
    ref = task_outputs(task, images)
    assert float(ref[1].min()) == 1.0 and len(ref[1]) > 20
    for image in range(2):  # the same boxes (their order among equal scores may differ)
        g, r = got[0][got[3] == image], ref[0][ref[3] == image]
        assert sorted(map(tuple, g.tolist())) == sorted(map(tuple, r.tolist()))
