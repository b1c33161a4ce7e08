"""The pure-Python conversions of benchmarks/yolo_vs_ultralytics.py (no Ultralytics needed): COCO boxes to YOLO
label lines and back, Ultralytics' prediction files to COCO results, the split and the equal-time epoch count."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.yolo_vs_ultralytics_data import (
    coco_to_yolo_labels,
    epochs_for_budget,
    one_class,
    split_ids,
    subset,
    yolo_line_to_coco,
    yolo_predictions_to_coco,
)
from lit_vision.evaluation.coco import evaluate_coco

# Sparse category ids listed out of order: YOLO class k must be the k-th smallest id (3 -> 0, 7 -> 1).
COCO = {
    "images": [{"id": 11, "file_name": "a.jpg", "width": 200, "height": 100},
               {"id": 12, "file_name": "b.png", "width": 50, "height": 50}],
    "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    "annotations": [
        {"id": 1, "image_id": 11, "category_id": 7, "bbox": [20, 10, 40, 30], "area": 1200, "iscrowd": 0},
        {"id": 2, "image_id": 11, "category_id": 3, "bbox": [100, 0, 100, 100], "area": 10000, "iscrowd": 0},
        {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0, 50, 10, 10], "area": 100, "iscrowd": 1},
    ],
}


def test_coco_to_yolo_labels_by_hand() -> None:
    # a.jpg: dog box centre (40, 25) of 200x100 -> 0.2, 0.25, size 0.2 x 0.3; cat fills the right half;
    # the crowd region (a VOC "difficult" object) is no training target; b.png has no objects.
    assert coco_to_yolo_labels(COCO) == {
        "a.jpg": ["1 0.200000 0.250000 0.200000 0.300000", "0 0.750000 0.500000 0.500000 1.000000"],
        "b.png": [],
    }


def test_yolo_line_round_trips_to_the_coco_box() -> None:
    ann = {a["id"]: a for a in COCO["annotations"]}
    for line, ann_id in zip(coco_to_yolo_labels(COCO)["a.jpg"], (1, 2)):
        back = yolo_line_to_coco(line, 200, 100, [3, 7])
        assert back["category_id"] == ann[ann_id]["category_id"]
        assert back["bbox"] == pytest.approx(ann[ann_id]["bbox"], abs=200 * 1e-6)
        assert "score" not in back
    assert yolo_line_to_coco("0 0.5 0.5 1 1 0.25", 50, 50, [3, 7]) == {
        "category_id": 3, "bbox": [0.0, 0.0, 50.0, 50.0], "score": 0.25}


def test_predictions_equal_to_the_ground_truth_score_ap_one(tmp_path: Path) -> None:
    """Ultralytics-style prediction files (label lines + confidence) written from the ground truth itself, read
    back through the converter, must be a perfect detector for lit_vision's evaluator (an independent judge)."""
    for file_name, lines in coco_to_yolo_labels(COCO).items():
        if lines:  # b.png has no file at all, as Ultralytics writes none for an image without detections
            (tmp_path / f"{Path(file_name).stem}.txt").write_text("".join(f"{s} 0.9\n" for s in lines))
    results = yolo_predictions_to_coco(tmp_path, COCO)
    assert [(r["image_id"], r["category_id"], r["score"]) for r in results] == [(11, 7, 0.9), (11, 3, 0.9)]
    stats = evaluate_coco(COCO, results)
    assert stats["map"] == pytest.approx(1.0) and stats["map_50"] == pytest.approx(1.0)


def test_split_ids_is_deterministic_disjoint_and_complete() -> None:
    ids = [f"2008_{i:06d}" for i in range(100)]
    train, val = split_ids(list(reversed(ids)), 0.2, seed=0)  # the input order does not matter
    assert (len(train), len(val)) == (80, 20)
    assert set(train) | set(val) == set(ids) and not set(train) & set(val)
    assert (train, val) == split_ids(ids, 0.2, seed=0)
    assert split_ids(ids, 0.2, seed=1)[1] != val


def test_epochs_for_budget() -> None:
    # 100 s process, four 20 s epochs -> 20 s fixed cost; a 70 s budget holds (70 - 20) // 20 = 2 epochs.
    assert epochs_for_budget(70, 100, [20, 20, 20, 20], max_epochs=4) == 2
    assert epochs_for_budget(10, 100, [20, 20, 20, 20], max_epochs=4) == 1  # at least one epoch
    assert epochs_for_budget(1000, 100, [20, 20, 20, 20], max_epochs=4) == 4  # never more than the equal-epoch run


def test_one_class_merges_sources_and_keeps_only_that_class() -> None:
    """Two sources with their own ids: a VOC-like one (person = 15, a difficult person as crowd) and a COCO-like one
    (person = 1, an image with cars only). The result: one category, every image (renumbered by file name, the
    car-only one as background), the person boxes with their crowd flags and areas; the cars are gone."""
    voc = {"images": [{"id": 1, "file_name": "2008_b.jpg", "width": 500, "height": 375}],
           "categories": [{"id": 15, "name": "person"}, {"id": 7, "name": "car"}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 15, "bbox": [1, 2, 3, 4], "area": 12.0, "iscrowd": 0},
               {"id": 2, "image_id": 1, "category_id": 7, "bbox": [5, 5, 5, 5], "area": 25.0, "iscrowd": 0},
               {"id": 3, "image_id": 1, "category_id": 15, "bbox": [9, 9, 2, 2], "area": 4.0, "iscrowd": 1}]}
    coco = {"images": [{"id": 900, "file_name": "000_a.jpg", "width": 640, "height": 480},
                       {"id": 901, "file_name": "000_c.jpg", "width": 640, "height": 427}],
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
            "annotations": [
                {"id": 50, "image_id": 900, "category_id": 1, "bbox": [10, 20, 30, 40], "iscrowd": 0,
                 "segmentation": [[10, 20, 40, 20, 40, 60]]},  # no area given: w * h
                {"id": 51, "image_id": 901, "category_id": 2, "bbox": [0, 0, 9, 9], "area": 81, "iscrowd": 0}]}
    merged = one_class([voc, coco], "person")
    assert merged["categories"] == [{"id": 1, "name": "person"}]
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in merged["images"]] == [
        (1, "000_a.jpg", 640, 480), (2, "000_c.jpg", 640, 427), (3, "2008_b.jpg", 500, 375)]
    assert merged["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "area": 1200, "iscrowd": 0},
        {"id": 2, "image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4], "area": 12.0, "iscrowd": 0},
        {"id": 3, "image_id": 3, "category_id": 1, "bbox": [9, 9, 2, 2], "area": 4.0, "iscrowd": 1}]
    # The Ultralytics side gets the same objects: the crowd one is no target, the car-only photo is background.
    assert coco_to_yolo_labels(merged)["000_c.jpg"] == [] and len(coco_to_yolo_labels(merged)["2008_b.jpg"]) == 1

    val = subset(merged, ["2008_b.jpg"])
    assert [i["id"] for i in val["images"]] == [3] and [a["id"] for a in val["annotations"]] == [2, 3]
    assert val["categories"] == merged["categories"]

    with pytest.raises(ValueError, match="two sources"):
        one_class([coco, coco], "person")
    with pytest.raises(ValueError, match="no category named 'dog'"):
        one_class([voc], "dog")
