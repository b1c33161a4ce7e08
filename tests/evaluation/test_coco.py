"""COCO evaluation is identical to pycocotools on the standard reference pair (bbox and segm)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lit_vision.evaluation import COCO_STAT_NAMES, CocoEvaluationError, evaluate_coco

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "coco_eval"
GT = FIXTURE / "instances_val2014_100.json"
RESULTS = {"bbox": FIXTURE / "instances_val2014_fakebbox100_results.json",
           "segm": FIXTURE / "instances_val2014_fakesegm100_results.json"}
EXPECTED = json.loads((FIXTURE / "expected_stats.json").read_text())


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_all_twelve_stats_match_pycocotools_reference(iou_type: str) -> None:
    stats = evaluate_coco(GT, RESULTS[iou_type], iou_type=iou_type)
    for name, expected in zip(COCO_STAT_NAMES, EXPECTED[iou_type]):
        assert stats[name] == pytest.approx(expected, abs=1e-4), name


def test_bbox_stats_match_a_live_pycocotools_run() -> None:
    """Independent of the stored numbers: pycocotools itself, run now."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(GT))
    ev = COCOeval(gt, gt.loadRes(str(RESULTS["bbox"])), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    ours = evaluate_coco(GT, RESULTS["bbox"])
    assert [ours[n] for n in COCO_STAT_NAMES] == pytest.approx(list(ev.stats), abs=1e-4)


def test_per_class_ap_averages_to_the_overall_ap() -> None:
    stats = evaluate_coco(GT, RESULTS["bbox"], per_class=True)
    values = [v for v in stats["per_class"].values() if v == v]  # categories with ground truth
    assert sum(values) / len(values) == pytest.approx(stats["map"], abs=1e-9)
    assert "person" in stats["per_class"]


def test_bad_results_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "res.json"
    bad.write_text(json.dumps([{"image_id": 123456789, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]))
    with pytest.raises(CocoEvaluationError, match=r"res.json: detection #0 has image_id 123456789"):
        evaluate_coco(GT, bad)
    bad.write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 5, 5]}]))
    with pytest.raises(CocoEvaluationError, match="lacks"):
        evaluate_coco(GT, bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        evaluate_coco(GT, tmp_path / "nope.json")


def test_eval_coco_command_prints_and_writes_the_stats(tmp_path: Path) -> None:
    out = tmp_path / "stats.json"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lit-vision"), "eval-coco", "--gt", str(GT), "--results",
         str(RESULTS["segm"]), "--iou-type", "segm", "--output", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("Average Precision") == 6 and proc.stdout.count("Average Recall") == 6
    assert "= 0.320" in proc.stdout  # segm AP, as pycocotools prints it
    written = json.loads(out.read_text())
    assert [written[n] for n in COCO_STAT_NAMES] == pytest.approx(EXPECTED["segm"], abs=1e-4)
