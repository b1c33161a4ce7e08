"""``lit-vision export``: a checkpoint to a checked file; bad input one line and exit 2, a failed check exit 1."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lit_vision.cli import main
from lit_vision.cli.export import export
from tests.conftest import write_image
from tests.export.helpers import classifier, save_checkpoint


@pytest.fixture(scope="module")
def ckpt(module_tmp: Callable[[str], Path]) -> Path:
    return save_checkpoint(classifier(), module_tmp("cli") / "best.ckpt")


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("lit-vision export: error: "), err
    return lines[0]


def test_export_through_the_console_entry_point(ckpt: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    photos = tmp_path / "photos"
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        write_image(photos / f"{i}.png", colour, size=50)
    out = tmp_path / "model.pt"
    monkeypatch.setattr(sys, "argv", ["lit-vision"])
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", str(ckpt), "--format", "torchscript", "--output", str(out),
              "--image_size", "64", "96", "--images", str(photos)])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert f"to {out}" in printed and "check:   passed on 2x3x64x96 and 3x3x97x65 (2 image files)" in printed
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert sidecar["input_size"] == [64, 96] and sidecar["check"]["images"] == "2 image files"
    assert sidecar["checkpoint"] == "best.ckpt" and sidecar["class_names"] == ["cat", "dog", "eel"]


def test_no_check_and_default_output(ckpt: Path, capsys) -> None:
    assert export(["--ckpt_path", str(ckpt), "--format", "torchscript", "--image_size", "32", "--no-check"]) == 0
    assert ckpt.with_name("best.torchscript.pt").is_file()
    assert "check:   skipped (--no-check)" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--ckpt_path", "missing.ckpt", "--format", "onnx"], "checkpoint missing.ckpt does not exist"),
    (["--format", "onnx", "--image_size", "1", "2", "3"], "--image_size takes N or H W, got 3 numbers"),
    (["--format", "torchscript", "--opset", "17"], "--opset is for --format onnx, not torchscript"),
    (["--format", "exported-program", "--output", "m.onnx"], "an exported program is a .pt2 file"),
    (["--format", "onnx", "--images", "nowhere/"], "nowhere/ does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, ckpt: Path, capsys, tmp_path: Path,
                                          monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    if "--ckpt_path" not in args:
        args = ["--ckpt_path", str(ckpt), *args]
    assert export(args) == 2
    assert message in _one_line(capsys.readouterr().err)


def test_not_a_checkpoint_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert export(["--ckpt_path", str(bad), "--format", "onnx"]) == 2
    assert "not a lit_vision checkpoint" in _one_line(capsys.readouterr().err)


def test_a_failed_check_keeps_the_file_and_exits_1(ckpt: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from lit_vision.export import check

    monkeypatch.setitem(check.TOLERANCE, "logits_atol", -1.0)  # nothing can pass
    out = tmp_path / "m.pt"
    assert export(["--ckpt_path", str(ckpt), "--format", "torchscript", "--output", str(out), "--image_size", "32"]) == 1
    captured = capsys.readouterr()
    assert "the export does not reproduce the model: input [2, 3, 32, 32]: logits differ" in _one_line(captured.err)
    assert "check:   FAILED" in captured.out and out.is_file()
    assert json.loads(Path(f"{out}.json").read_text())["check"]["passed"] is False
