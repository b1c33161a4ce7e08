"""Round trips: every family exported to each format, loaded with the runtime itself, compared with the task.

Each export is also checked by :func:`~lit_vision.export.export_task` (what the command does); the test then runs
the file once more, with other images, through onnxruntime / ``torch.jit.load`` / ``torch.export.load`` directly.
Models are tiny (ResNet-18 with 64-wide necks) at 64 px (classification, segmentation) and 128 px (detection).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lit_vision.export import export_task, read_metadata
from lit_vision.export.formats import SUFFIXES
from tests.export.helpers import (
    CLASS_NAMES,
    assert_same_detections,
    classifier,
    detector,
    normalize,
    open_file,
    run_file,
    segmenter,
    task_outputs,
)

CASES: dict[str, Any] = {
    "classifier-tv": lambda: classifier("tv/resnet18"),
    "classifier-timm": lambda: classifier("timm/efficientnet_b0"),
    "faster_rcnn": lambda: detector("faster_rcnn"),
    "retinanet": lambda: detector("retinanet"),
    "fcos": lambda: detector("fcos"),
    "yolo": lambda: detector("yolo", score_thresh=0.3, detections_per_img=100),  # ~80 an image
    "fcn": lambda: segmenter("fcn"),
    "unet": lambda: segmenter("unet"),
    "deeplabv3": lambda: segmenter("deeplabv3"),
    "deeplabv3plus": lambda: segmenter("deeplabv3plus", aux_loss=True),  # the aux head must not be exported
}
# Exported programs take longest to write and load (10-40 s a detector): the plain case, and the two detectors
# that needed work (YOLO's data-dependent post-processing, Faster R-CNN's patched RoIAlign).
PROGRAM_CASES = ("classifier-tv", "faster_rcnn", "yolo")
ROUND_TRIPS = [(case, fmt) for case in CASES for fmt in ("onnx", "torchscript")] + \
              [(case, "exported-program") for case in PROGRAM_CASES]


@pytest.fixture(scope="module")
def tasks() -> dict[str, Any]:
    return {}


def _task(tasks: dict[str, Any], case: str) -> Any:
    if case not in tasks:
        tasks[case] = CASES[case]()
    return tasks[case]


def _size(case: str) -> list[int] | None:
    return None if case in ("faster_rcnn", "retinanet", "fcos", "yolo") else [64]  # detectors: their image_size


@pytest.mark.parametrize(("case", "fmt"), ROUND_TRIPS, ids=[f"{c}-{f}" for c, f in ROUND_TRIPS])
def test_round_trip_reproduces_the_task(case: str, fmt: str, tasks: dict[str, Any], tmp_path: Path) -> None:
    task = _task(tasks, case)
    path = tmp_path / f"model{SUFFIXES[fmt]}"
    # The export's own check (what the command runs) on all but exported programs, whose second load costs 5-15 s;
    # this test compares every format itself below.
    checked = fmt != "exported-program"
    result = export_task(task, fmt, path, image_size=_size(case), check=checked)
    if checked:
        assert result.check is not None and result.check.passed, result.check.failure
        assert len(result.check.shapes) == 2
    meta = result.metadata
    torchvision_detector = case in ("faster_rcnn", "retinanet", "fcos")
    # What each format keeps dynamic (docs/export.md): torchvision's detectors take one image, and a fixed size in
    # an exported program; everything else any batch and size.
    dynamic = meta["dynamic"]
    assert dynamic["batch"] is not torchvision_detector
    assert dynamic["height"] is dynamic["width"] is not (torchvision_detector and fmt == "exported-program")
    assert meta["size_multiple"] == (32 if case == "yolo" and fmt == "exported-program" else 1)

    # Independently: the runtime itself, other images (seed 1), at the export size and at another batch size and
    # image size where the file says they are dynamic, compared with the task's own outputs.
    h, w = meta["input_size"]
    batch = 2 if dynamic["batch"] else 1
    # (Larger, not smaller: an exported program rejects sizes whose deepest map is 1 px, see docs/export.md.)
    shapes = [(batch, h, w), (batch + dynamic["batch"], h + 32 * dynamic["height"], w + 64 * dynamic["width"])]
    run, embedded = open_file(path, fmt)
    for b, sh, sw in shapes[: 2 if any(dynamic.values()) else 1]:
        images = torch.rand(b, 3, sh, sw, generator=torch.Generator().manual_seed(1))
        got = run(images if meta["task"] == "detection" else normalize(images))
        ref = task_outputs(task, images)
        if meta["task"] == "detection":
            assert assert_same_detections(got, ref) > 0  # score_thresh 0 (YOLO: spread): detections to compare
        else:
            assert len(got) == 1
            torch.testing.assert_close(got[0], ref[0], atol=1e-4, rtol=1e-3)
    if torchvision_detector and fmt == "torchscript":  # its trace checks no shape: the wrapper refuses a batch
        with pytest.raises(Exception, match="is invalid for input of size"):  # not a silently dropped image
            run(torch.rand(2, 3, h, w))
    if meta["task"] == "detection":
        assert meta["output_names"] == ["boxes", "scores", "labels", "batch_index"]
        assert meta["box_format"].startswith("xyxy") and meta["normalization_inside"]
    else:
        assert meta["output_names"] == ["logits"] and not meta["normalization_inside"]
    assert embedded == meta and embedded["class_names"] == CLASS_NAMES and embedded["format"] == fmt
    assert read_metadata(path) == meta
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar.pop("check", {"passed": True})["passed"] and sidecar == meta


def test_onnx_dynamo_exporter_and_normalisation_inside(tasks: dict[str, Any], tmp_path: Path) -> None:
    """torch.export-based ONNX (needs onnxscript), with the mean/std in the model: it takes [0, 1] images."""
    task = _task(tasks, "classifier-tv")
    result = export_task(task, "onnx", tmp_path / "m.onnx", image_size=[64, 96], onnx_exporter="dynamo",
                         normalize_inside=True)
    assert result.check is not None and result.check.passed, result.check.failure
    meta = result.metadata
    assert meta["exporter"] == "torch.onnx (dynamo)" and meta["opset"] >= 18
    assert meta["normalization_inside"] and meta["input_range"] == "[0, 1]" and meta["input_size"] == [64, 96]
    images = torch.rand(3, 3, 80, 112, generator=torch.Generator().manual_seed(1))
    got, _ = run_file(tmp_path / "m.onnx", "onnx", images)  # raw [0, 1] images in
    torch.testing.assert_close(got[0], task_outputs(task, images)[0], atol=1e-4, rtol=1e-3)
