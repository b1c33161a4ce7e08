"""CocoResultsWriter: category ids through the task's DataInfo map, plain-image ids and sidecar, DDP merge on rank 0."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import lit_vision.callbacks.coco_results_writer as crw
from lit_vision import distributed
from lit_vision.callbacks import CocoResultsWriter
from lit_vision.contracts import DataInfo


def task_with(mapping: dict[int, int] | None) -> SimpleNamespace:
    """What the writer reads from the task: the DataInfo the DataModule handed over at setup."""
    return SimpleNamespace(data_info=DataInfo(class_names=[], label_to_category_id=mapping))


def row(image_id: int, path: str, boxes: list[list[float]], label_ids: list[int], scores: list[float]) -> dict[str, Any]:
    """A row as ``ObjectDetector.predict_step`` returns it (names are irrelevant to the writer)."""
    return {"path": path, "image_id": image_id, "boxes": boxes, "labels": [f"c{i}" for i in label_ids],
            "label_ids": label_ids, "scores": scores}


def write(tmp_path: Path, batches: list[list[dict[str, Any]]], mapping: dict[int, int] | None) -> CocoResultsWriter:
    """Feed ``batches`` through the writer's hooks as the predict loop would, then end the epoch."""
    trainer = SimpleNamespace(log_dir=str(tmp_path), default_root_dir=str(tmp_path))
    task = task_with(mapping)
    writer = CocoResultsWriter()
    writer.on_predict_start(trainer, task)
    start = 0
    for i, batch in enumerate(batches):
        writer.write_on_batch_end(trainer, task, batch, list(range(start, start + len(batch))), None, i, 0)
        start += len(batch)
    writer.on_predict_epoch_end(trainer, task)
    return writer


def test_sparse_category_ids_and_xywh_boxes(tmp_path: Path) -> None:
    batches = [[row(42, "a.jpg", [[10.0, 20.0, 30.5, 60.0], [0.0, 0.0, 5.0, 5.0]], [0, 1], [0.9, 0.25])],
               [row(7, "b.jpg", [[1.0, 2.0, 4.0, 8.0]], [1], [0.5]), row(8, "c.jpg", [], [], [])]]
    writer = write(tmp_path, batches, {0: 3, 1: 7})
    assert writer.path == tmp_path / "results.json" and writer.images_path is None
    results = json.loads(writer.path.read_text())
    assert results == [
        {"image_id": 42, "category_id": 3, "bbox": [10.0, 20.0, 20.5, 40.0], "score": 0.9},
        {"image_id": 42, "category_id": 7, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.25},
        {"image_id": 7, "category_id": 7, "bbox": [1.0, 2.0, 3.0, 6.0], "score": 0.5},
    ]
    assert not (tmp_path / "results.images.json").exists()


def test_without_a_category_map_ids_are_label_plus_one_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=r"label \+ 1"):
        writer = write(tmp_path, [[row(5, "a.jpg", [[0.0, 0.0, 1.0, 1.0]] * 2, [0, 2], [0.4, 0.3])]], None)
    assert [r["category_id"] for r in json.loads(writer.path.read_text())] == [1, 3]


def test_plain_images_are_numbered_in_order_and_listed_in_a_sidecar(tmp_path: Path) -> None:
    batches = [[row(-1, "x/b.png", [[0.0, 0.0, 2.0, 2.0]], [0], [0.8]), row(-1, "x/a.png", [], [], [])],
               [row(-1, "x/c.png", [[1.0, 1.0, 3.0, 4.0]], [1], [0.6])]]
    writer = write(tmp_path, batches, {0: 3, 1: 7})
    assert writer.images_path == tmp_path / "results.images.json"
    images = json.loads(writer.images_path.read_text())
    assert images == [{"id": 1, "file_name": "x/b.png"}, {"id": 2, "file_name": "x/a.png"},
                      {"id": 3, "file_name": "x/c.png"}]  # prediction order, images without boxes included
    results = json.loads(writer.path.read_text())
    assert [(r["image_id"], r["category_id"]) for r in results] == [(1, 3), (3, 7)]
    # A later run on real ids leaves no stale sidecar behind.
    write(tmp_path, [[row(9, "y.jpg", [], [], [])]], {0: 3, 1: 7})
    assert not (tmp_path / "results.images.json").exists()


def test_ranks_are_gathered_in_dataset_order_and_padding_duplicates_dropped(tmp_path: Path, monkeypatch) -> None:
    """Rank 0 of two: the other rank's rows arrive by all_gather_object; the sampler repeated index 0 there."""
    mine = [((0, 0), row(-1, "p0.png", [[0.0, 0.0, 1.0, 1.0]], [0], [0.9])), ((0, 2), row(-1, "p2.png", [], [], []))]
    other = [((0, 1), row(-1, "p1.png", [[0.0, 0.0, 2.0, 2.0]], [1], [0.7])), mine[0]]  # index 0 again: padding
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(crw.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(crw.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(crw.dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj, other]))
    trainer = SimpleNamespace(log_dir=str(tmp_path), default_root_dir=str(tmp_path))
    writer = CocoResultsWriter(output_path=str(tmp_path / "out" / "dets.json"))
    writer.on_predict_start(trainer, task_with({0: 3, 1: 7}))
    writer._rows = list(mine)
    writer.on_predict_epoch_end(trainer, task_with({0: 3, 1: 7}))
    assert writer.path == tmp_path / "out" / "dets.json"
    images = json.loads((tmp_path / "out" / "dets.images.json").read_text())
    assert [(i["id"], i["file_name"]) for i in images] == [(1, "p0.png"), (2, "p1.png"), (3, "p2.png")]
    results = json.loads(writer.path.read_text())
    assert [(r["image_id"], r["category_id"]) for r in results] == [(1, 3), (2, 7)]


def test_other_ranks_write_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(crw.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(crw.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(crw.dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj, obj]))
    writer = write(tmp_path, [[row(3, "a.jpg", [[0.0, 0.0, 1.0, 1.0]], [0], [0.5])]], {0: 3})
    assert not writer.path.exists()
