"""Bad COCO results are refused with one line naming the file and the detection's index, never scored.

``evaluate_coco`` raises :class:`CocoEvaluationError`; ``lit-vision eval-coco`` prints that line on stderr
and exits with 2, without a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from lit_vision.cli import main
from lit_vision.evaluation import COCO_STAT_NAMES, CocoEvaluationError, evaluate_coco

GT = {
    "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
               {"id": 2, "file_name": "b.jpg", "width": 100, "height": 80}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 20], "area": 600, "iscrowd": 0},
                    {"id": 2, "image_id": 2, "category_id": 3, "bbox": [50, 40, 20, 20], "area": 400, "iscrowd": 0}],
    "categories": [{"id": 3, "name": "cat"}],
}  # fmt: skip
GOOD = [{"image_id": 1, "category_id": 3, "bbox": [10, 10, 30, 20], "score": 0.9},
        {"image_id": 2, "category_id": 3, "bbox": [50, 40, 20, 20], "score": 0.8}]


def with_bad(index: int, **change: Any) -> list[dict[str, Any]]:
    """GOOD plus a third detection (index 2) changed by ``change``; ``index`` is where it goes."""
    rows = [dict(r) for r in GOOD]
    rows.insert(index, {**GOOD[0], **change})
    return rows


@pytest.mark.parametrize(("change", "problem"), [
    ({"score": float("nan")}, "has score nan: scores must be finite numbers"),
    ({"score": float("inf")}, "has score inf: scores must be finite numbers"),
    ({"score": "0.9"}, "has score '0.9': scores must be finite numbers"),
    ({"bbox": [10, float("nan"), 30, 20]}, "has bbox [10, nan, 30, 20] with a NaN or infinite value"),
    ({"bbox": [10, 10, float("-inf"), 20]}, "has bbox [10, 10, -inf, 20] with a NaN or infinite value"),
    ({"bbox": [10, 10, -30, 20]}, "has bbox [10, 10, -30, 20] with a negative width or height"),
    ({"bbox": [10, 10, 30]}, "has bbox [10, 10, 30]: expected [x, y, width, height], 4 numbers"),
    ({"image_id": [1]}, "has image_id [1] not in the ground truth"),
    ({"category_id": 4}, "has category_id 4 not in the ground truth categories"),
])  # fmt: skip
def test_bad_detection_is_named_by_file_and_index(tmp_path: Path, change: dict[str, Any], problem: str) -> None:
    results = tmp_path / "res.json"
    results.write_text(json.dumps(with_bad(1, **change)))  # json writes NaN/Infinity literals, as numpy exports do
    with pytest.raises(CocoEvaluationError) as info:
        evaluate_coco(GT, results)
    message = str(info.value)
    assert message.startswith(f"{results}: detection #1 {problem}") and "\n" not in message, message


def test_in_memory_results_are_checked_too() -> None:
    with pytest.raises(CocoEvaluationError, match=r"^<in-memory results>: detection #2 has score nan"):
        evaluate_coco(GT, with_bad(2, score=float("nan")))
    with pytest.raises(CocoEvaluationError, match=r"^<in-memory results>: detection #0 is a JSON list, not an object"):
        evaluate_coco(GT, [[1, 3, 0.5]])


def test_empty_results_score_zero_in_memory_but_are_an_error_when_asked() -> None:
    """The detection task's validation may have no detections (untrained model); a results file should not."""
    assert evaluate_coco(GT, []) == {name: 0.0 for name in COCO_STAT_NAMES}
    with pytest.raises(CocoEvaluationError, match=r"^<in-memory results>: the results list is empty"):
        evaluate_coco(GT, [], allow_empty=False)


def test_good_results_still_score(tmp_path: Path) -> None:
    assert evaluate_coco(GT, GOOD, allow_empty=False)["map"] == pytest.approx(1.0)


def eval_coco_cli(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["lit-vision", "eval-coco", *args])
    monkeypatch.delenv("LIT_VISION_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code), capsys.readouterr().err


def assert_one_line(err: str, expected: str) -> None:
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err == f"lit-vision eval-coco: error: {expected}\n"


@pytest.mark.parametrize(("content", "expected"), [
    (json.dumps(with_bad(1, score=float("nan"))), "{res}: detection #1 has score nan"),
    (json.dumps(with_bad(2, bbox=[1, 2, float("inf"), 4])), "{res}: detection #2 has bbox [1, 2, inf, 4] with a NaN"),
    ("[]", "{res}: the results list is empty: there are no detections to evaluate"),
    ('[{"image_id": 1,', "results file {res} is not valid JSON: Expecting"),
    (b"\xff\xfe\x00binary", "results file {res} is not valid JSON:"),
    ('{"annotations": []}', "{res}: a COCO results file is a JSON list of detections, got dict"),
])  # fmt: skip
def test_eval_coco_errors_are_one_line_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, content: str | bytes, expected: str
) -> None:
    gt, res = tmp_path / "gt.json", tmp_path / "res.json"
    gt.write_text(json.dumps(GT))
    res.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, err = eval_coco_cli(["--gt", str(gt), "--results", str(res)], capsys, monkeypatch)
    assert code == 2
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"lit-vision eval-coco: error: {expected.format(res=res)}"), err


def test_eval_coco_missing_file_and_unwritable_output(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    gt, res = tmp_path / "gt.json", tmp_path / "res.json"
    gt.write_text(json.dumps(GT))
    code, err = eval_coco_cli(["--gt", str(gt), "--results", str(tmp_path / "nope.json")], capsys, monkeypatch)
    assert code == 2
    assert_one_line(err, f"results file {tmp_path / 'nope.json'} does not exist")
    res.write_text(json.dumps(GOOD))
    out = tmp_path / "no" / "such" / "stats.json"
    code, err = eval_coco_cli(["--gt", str(gt), "--results", str(res), "--output", str(out)], capsys, monkeypatch)
    assert code == 2
    assert err.startswith(f"lit-vision eval-coco: error: cannot write the statistics to {out}:") and err.count("\n") == 1


def test_eval_coco_unforeseen_failure_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ground truth the checks do not cover (an annotation without bbox) still ends in one line."""
    gt, res = tmp_path / "gt.json", tmp_path / "res.json"
    gt.write_text(json.dumps({**GT, "annotations": [{"id": 1, "image_id": 1, "category_id": 3}]}))
    res.write_text(json.dumps(GOOD))
    code, err = eval_coco_cli(["--gt", str(gt), "--results", str(res)], capsys, monkeypatch)
    assert code == 2
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"lit-vision eval-coco: error: evaluating {res} against {gt} failed:"), err
