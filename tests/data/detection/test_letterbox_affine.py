"""The letterbox's random affine outside mosaics (``translate``): YOLOv8's zoom about the centre and shift, checked
against torchvision's own resize/pad/crop of the same image and against boxes moved by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from lit_vision.data.detection import transforms as T
from lit_vision.data.detection.transforms import LETTERBOX_FILL, DetectionTransform, detection_train_transforms
from lit_vision.data.embedded.shapes import shapes_paths, write_shapes


def _sample() -> tuple[tv_tensors.Image, dict]:
    g = torch.Generator().manual_seed(0)
    image = tv_tensors.Image(torch.randint(0, 256, (3, 40, 80), dtype=torch.uint8, generator=g))
    boxes = torch.tensor([[10, 5, 30, 25], [0, 0, 10, 10], [70, 20, 80, 40], [50, 10, 75, 30]], dtype=torch.float32)
    masks = torch.zeros((4, 40, 80), dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        masks[k, y0:y1, x0:x1] = 1
    target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(40, 80)),
              "labels": torch.tensor([1, 2, 3, 4]), "masks": tv_tensors.Mask(masks)}
    return image, target


def test_zoom_and_shift_equal_torchvision_resize_pad_crop_and_boxes_by_hand(monkeypatch) -> None:
    # Draws in order: gain 1.5, shift x +0.1, shift y -0.1 of a 64-px square.
    draws = iter([1.5, 0.1, -0.1])
    monkeypatch.setattr(T.random, "uniform", lambda lo, hi: next(draws))
    image, target = _sample()
    out, got = DetectionTransform(64, (0.5, 1.5), letterbox=True, translate=0.1)(image, target)

    # By hand: 80x40 -> long side 64 * 1.5 = 96, i.e. 96x48 (factor 1.2); centred at ((64-96)/2, (64-48)/2) =
    # (-16, 8), shifted by (+6.4, -6.4) -> top-left (-10, 2) after rounding.
    resized = F.resize(image, [48, 96], antialias=True)
    expected = F.crop(F.pad(resized, [100, 100, 100, 100], fill=LETTERBOX_FILL), 100 - 2, 100 + 10, 64, 64)
    assert out.shape == (3, 64, 64) and torch.equal(out, expected)
    # Box 0 -> [12, 6, 36, 30] + (-10, 2): inside, whole. Box 1 -> [-10, 2, 2, 14]: 2 px left, dropped. Box 2 ->
    # [74, 26, 86, 50]: off the canvas, dropped. Box 3 -> [50, 14, 80, 38], clipped to [50, 14, 64, 38]: 47 % kept.
    torch.testing.assert_close(got["boxes"].as_subclass(torch.Tensor),
                               torch.tensor([[2.0, 8.0, 26.0, 32.0], [50.0, 14.0, 64.0, 38.0]]))
    assert got["boxes"].canvas_size == (64, 64) and got["labels"].tolist() == [1, 4]
    expected_masks = F.crop(F.pad(F.resize(target["masks"], [48, 96]), [100] * 4, fill=0), 98, 110, 64, 64)[[0, 3]]
    assert torch.equal(got["masks"], expected_masks)
    assert got["scale"] == (1.2, 1.2) and got["pad"] == (-10, 2, 64 - 96 + 10, 64 - 48 - 2)


def test_shrinking_pads_with_grey_and_keeps_every_box(monkeypatch) -> None:
    draws = iter([0.5, -0.05, 0.05])  # 32x16 content (factor 0.4), top-left (16 - 3.2, 24 + 3.2) -> (13, 27)
    monkeypatch.setattr(T.random, "uniform", lambda lo, hi: next(draws))
    image, target = _sample()
    out, got = DetectionTransform(64, (0.5, 1.5), letterbox=True, translate=0.1)(image, target)
    expected = F.pad(F.resize(image, [16, 32], antialias=True), [13, 27, 64 - 32 - 13, 64 - 16 - 27],
                     fill=LETTERBOX_FILL)
    assert torch.equal(out, expected)
    assert got["labels"].tolist() == [1, 2, 3, 4]  # all on the canvas; the smallest is 4 px wide now
    torch.testing.assert_close(got["boxes"].as_subclass(torch.Tensor),
                               target["boxes"].as_subclass(torch.Tensor) * 0.4 + torch.tensor([13.0, 27.0, 13.0, 27.0]))


def test_training_preset_sees_zoomed_in_and_shifted_samples_without_translate_never() -> None:
    """Over 200 draws of the training preset: with translate some samples are zoomed in past the canvas (cropped)
    and some sit off centre; without it every sample is whole and centred (the capped preset)."""
    image = tv_tensors.Image(torch.full((3, 30, 60), 7, dtype=torch.uint8))
    target = {"boxes": tv_tensors.BoundingBoxes(torch.tensor([[20.0, 10.0, 40.0, 20.0]]), format="XYXY",
                                                canvas_size=(30, 60)), "labels": torch.tensor([0])}
    for translate, moved in ((0.1, True), (0.0, False)):
        T.random.seed(0)
        transform = detection_train_transforms(64, hflip=False, photometric="none", letterbox=True,
                                               translate=translate)
        zoomed_in = off_centre = 0
        for _ in range(200):
            out, got = transform(image, target)
            assert out.shape == (3, 64, 64)
            left, top, right, bottom = got["pad"]
            zoomed_in += int(left < 0 or right < 0)
            off_centre += int(abs(left - right) > 1 or abs(top - bottom) > 1)
        assert (zoomed_in > 0) == moved and (off_centre > 0) == moved


def test_translate_needs_letterbox_and_a_sane_fraction(tmp_path: Path) -> None:
    from lit_vision.data.detection import COCODetectionDataModule

    with pytest.raises(ValueError, match="needs letterbox"):
        DetectionTransform(64, (0.5, 1.5), letterbox=False, translate=0.1)
    with pytest.raises(ValueError, match="0 <= translate < 0.5"):
        DetectionTransform(64, (0.5, 1.5), letterbox=True, translate=0.7)
    p = shapes_paths(write_shapes(tmp_path))
    with pytest.raises(ValueError, match="set letterbox: true"):
        COCODetectionDataModule(p["coco_train_images"], p["coco_train_json"], p["coco_val_images"], p["coco_val_json"],
                                translate=0.1)
