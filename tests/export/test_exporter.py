"""From a checkpoint to a checked file: only the checkpoint is read, its settings are used, bad input fails early."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lit_vision.cli.checkpoints import CheckpointError
from lit_vision.export import (
    ExportError,
    ExportFormatError,
    export_checkpoint,
    export_task,
    load_task,
)
from lit_vision.export.exporter import default_output
from tests.export.helpers import (
    classifier,
    detector,
    normalize,
    run_file,
    save_checkpoint,
)


@pytest.fixture(scope="module")
def classifier_ckpt(module_tmp: Callable[[str], Path]) -> Path:
    """Trained (as the CLI stores it) with pretrained=True and a weights file that is not on this machine, on data
    normalised with its own mean/std at 48 px."""
    path = module_tmp("ckpt") / "best.ckpt"
    data = {"image_size": 48, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "crop_pct": 1.0}
    return save_checkpoint(classifier(), path, hparams={"pretrained": True, "weights": "/nowhere/weights.pth"},
                           data=data)


def test_checkpoint_alone_is_enough_and_nothing_else_is_read(classifier_ckpt: Path) -> None:
    task, data = load_task(classifier_ckpt)  # pretrained=True would download, weights would fail: both turned off
    assert task.hparams.pretrained is False and task.hparams.weights is None and not task.training
    reference = classifier()
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(task.state_dict()[name], tensor)
    assert data["image_size"] == 48


def test_export_checkpoint_uses_the_data_size_and_normalisation(classifier_ckpt: Path) -> None:
    result = export_checkpoint(classifier_ckpt, "torchscript")
    assert result.path == default_output(classifier_ckpt, "torchscript") == classifier_ckpt.with_name(
        "best.torchscript.pt")
    meta = result.metadata
    assert meta["input_size"] == [48, 48] and meta["input_size_source"] == "the DataModule's image_size"
    assert meta["mean"] == [0.5] * 3 and meta["std"] == [0.25] * 3
    assert meta["normalization_source"] == "the DataModule's mean/std" and meta["checkpoint"] == "best.ckpt"
    assert "centre-crop 48x48" in meta["preprocessing"] and result.check is not None and result.check.passed
    # The check normalised with the data's statistics, not ImageNet's: so does this.
    images = torch.rand(2, 3, 48, 48)
    got, _ = run_file(result.path, "torchscript", (images - 0.5) / 0.25)
    task, _ = load_task(classifier_ckpt)
    with torch.no_grad():
        torch.testing.assert_close(got[0], task((images - 0.5) / 0.25), atol=1e-4, rtol=1e-3)
        assert not torch.allclose(got[0], task(normalize(images)), atol=1e-3)


def test_a_foreign_file_is_one_checkpoint_error(tmp_path: Path) -> None:
    bogus = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(CheckpointError, match="not a lit_vision checkpoint"):
        load_task(bogus)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_task(tmp_path / "missing.ckpt")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fmt": "tflite"}, "unknown format 'tflite'"),
    ({"fmt": "exported-program", "output": "m.pt"}, "exported program is a .pt2 file"),
    ({"image_size": [16]}, "too small"),
    ({"normalize_inside": True, "task": "detector"}, "detectors always normalise inside"),
    ({"opset": 9, "task": "detector"}, "needs opset 11 or later"),
    ({"onnx_exporter": "tensorrt"}, "unknown ONNX exporter"),
])
def test_bad_input_fails_before_exporting(kwargs: dict, message: str, tmp_path: Path) -> None:
    task = detector("retinanet") if kwargs.pop("task", None) == "detector" else classifier()
    fmt = kwargs.pop("fmt", "onnx")
    output = tmp_path / kwargs.pop("output", "m.onnx")
    with pytest.raises((ExportError, RuntimeError), match=message):
        export_task(task, fmt, output, **kwargs)
    assert not output.exists()


def test_a_model_without_other_sizes_is_exported_with_a_fixed_size(tmp_path: Path) -> None:
    """A backbone that asserts its input size (a ViT's patch grid) gets fixed height and width, still checked."""
    task = classifier()
    forward = task.model.forward

    def fixed(x: torch.Tensor) -> torch.Tensor:
        assert tuple(x.shape[-2:]) == (64, 64), "fixed input size"
        return forward(x)

    task.model.forward = fixed  # type: ignore[method-assign]
    result = export_task(task, "onnx", tmp_path / "m.onnx", image_size=[64])
    assert result.metadata["dynamic"] == {"batch": True, "height": False, "width": False}
    assert result.metadata["input_shape"] == ["batch", 3, 64, 64]
    assert result.check is not None and result.check.passed and len(result.check.shapes) == 2


def test_a_format_that_cannot_hold_the_model_is_one_line_naming_the_others(tmp_path: Path) -> None:
    """A model that branches on its input's values (torch.export cannot trace that) to an exported program."""
    task = classifier()
    forward = task.model.forward
    task.model.forward = lambda x: forward(x) if float(x.mean()) > -10 else -forward(x)  # type: ignore[method-assign]
    with pytest.raises(ExportFormatError) as info:
        export_task(task, "exported-program", tmp_path / "m.pt2", image_size=[64])
    message = str(info.value)
    assert message.startswith("cannot export classifier (tv/resnet18) to exported-program: ")
    assert "also exports to onnx and torchscript: try --format onnx" in message and "\n" not in message
