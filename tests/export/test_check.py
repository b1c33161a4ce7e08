"""The check fails when an export does not reproduce the model, and only then (its comparisons, its shapes)."""

from __future__ import annotations

import torch

from lit_vision.export.check import (
    check_shapes,
    compare_detections,
    compare_logits,
    run_check,
    sample_images,
)
from tests.conftest import write_image
from tests.export.helpers import classifier


def _detections() -> list[torch.Tensor]:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 20.0, 20.0], [1.0, 2.0, 3.0, 4.0]])
    return [boxes, torch.tensor([0.9, 0.8, 0.8]), torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1])]


def test_detections_match_in_any_order_within_tolerance() -> None:
    ref = _detections()
    order = torch.tensor([1, 0, 2])
    got = [t[order] for t in ref]
    got[0] = got[0] + 0.005  # within 1e-2 px
    diffs, matched, failure = compare_detections(got, ref, batch=2)
    assert failure == "" and matched == 3 and 0 < diffs["boxes"] <= 0.006


def test_detections_that_differ_fail_naming_the_image() -> None:
    ref = _detections()
    shifted = [t.clone() for t in ref]
    shifted[0][2, 0] += 0.5
    assert "image 1" in compare_detections(shifted, ref, batch=2)[2]
    relabelled = [t.clone() for t in ref]
    relabelled[2][1] = 2
    assert "no match" in compare_detections(relabelled, ref, batch=2)[2]
    fewer = [t[:2] for t in ref]
    assert "image 1: 0 detections, the model finds 1" in compare_detections(fewer, ref, batch=2)[2]
    rescored = [t.clone() for t in ref]
    rescored[1][0] += 1e-3
    assert compare_detections(rescored, ref, batch=2)[2]


def test_logits_tolerance_is_absolute_plus_relative() -> None:
    ref = torch.tensor([[0.0, 100.0]])
    assert compare_logits(ref + torch.tensor([[5e-5, 0.09]]), ref)[1] == ""
    assert "differ by up to" in compare_logits(ref + torch.tensor([[5e-4, 0.0]]), ref)[1]
    assert "shape" in compare_logits(ref[:, :1], ref)[1]
    assert compare_logits(torch.tensor([[float("nan"), 100.0]]), ref)[1]


def test_a_dynamic_dimension_is_checked_at_a_second_size() -> None:
    assert check_shapes((64, 64), {"batch": False, "height": False, "width": False}) == [(1, 64, 64)]
    # odd sizes when any size is allowed: a branch on a shape that tracing froze shows there
    assert check_shapes((128, 128), {"batch": True, "height": True, "width": True}) == [(2, 128, 128), (3, 161, 97)]
    assert check_shapes((64, 64), {"batch": False, "height": True, "width": True}) == [(1, 64, 64), (1, 97, 129)]
    assert check_shapes((96, 96), {"batch": True, "height": True, "width": True}, multiple=48) == \
        [(2, 96, 96), (3, 144, 192)]


def test_run_check_catches_a_wrong_model_and_a_failing_one() -> None:
    task = classifier()
    dynamic = {"batch": True, "height": True, "width": True}
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

    def exact(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (task(x),)

    def unnormalised(x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # a model given the wrong statistics
        return (task(x * 2),)

    def fixed_size(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.shape[-1] != 64:
            raise RuntimeError("Got invalid dimensions for input: images\nindex: 3 Got: 128 Expected: 64")
        return (task(x),)

    with torch.no_grad():
        ok = run_check(exact, task, "classification", (64, 64), dynamic, False, mean, std)
        assert ok.passed and ok.shapes == [[2, 3, 64, 64], [3, 3, 97, 129]] and ok.max_abs_diff["logits"] == 0
        wrong = run_check(unnormalised, task, "classification", (64, 64), dynamic, False, mean, std)
        assert not wrong.passed and "logits differ" in wrong.failure and wrong.as_dict()["failure"]
        broken = run_check(fixed_size, task, "classification", (64, 64), dynamic, False, mean, std)
        assert not broken.passed and broken.failure.startswith("input [3, 3, 97, 129]: RuntimeError: Got invalid")


def test_sample_images_from_files_or_a_seed(tmp_path) -> None:
    write_image(tmp_path / "a.png", (250, 0, 0), size=40)
    images = sample_images(3, (32, 48), [tmp_path / "a.png"])
    assert images.shape == (3, 3, 32, 48) and float(images[:, 0].mean()) > 0.8 and float(images.max()) <= 1
    assert torch.equal(sample_images(2, (8, 8)), sample_images(2, (8, 8)))


def test_a_detection_mismatch_among_tied_scores_says_so() -> None:
    ref = _detections()
    fewer = [t[[0, 2]] for t in ref]
    message = compare_detections(fewer, ref, batch=2)[2]
    assert message.startswith("image 0: 1 detections, the model finds 2") and "tied" not in message
    ref[1][1] = ref[1][0]  # two equal scores in image 0
    assert "1 of the model's 2 scores there equal another" in compare_detections(fewer, ref, batch=2)[2]
