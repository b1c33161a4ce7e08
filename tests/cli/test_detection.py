"""``lit-vision`` for detection: fit, validate and predict a tiny FCOS on the shapes, in process (fast).

The COCO results that ``predict`` writes are scored by ``evaluate_coco`` (what ``lit-vision eval-coco`` runs)
and must equal what ``validate`` logs for the same checkpoint: two independent paths to one number.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_vision.callbacks import CocoResultsWriter, JsonlPredictionWriter
from lit_vision.cli import run_cli
from lit_vision.data import SHAPES_CLASSES, DataError, DetectionImagesDataModule
from lit_vision.data.embedded.shapes import shapes_paths, write_shapes
from lit_vision.evaluation.coco import evaluate_coco

SIZE = 64
# 32 scenes x 4 epochs: enough for a clearly non-zero AP (AP50 ~0.14), so comparing scores is not 0 == 0; 8 x 3
# gave 0 or 0.001-0.004 depending on float rounding (thread count, optimizer kernel).
NUM_TRAIN = 32
TRAINER = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_model_summary", "false",
           "--trainer.enable_progress_bar", "false"]
# The architecture by class with its options; image_size is linked from --data.image_size.
MODEL = ["--model", "ObjectDetector", "--model.architecture", "FCOS", "--model.architecture.fpn_channels", "64",
         "--model.architecture.score_thresh", "0.01", "--model.backbone", "tv/resnet18"]


def shapes_data(cache: Path) -> list[str]:
    return ["--data", "ShapesDetectionDataModule", "--data.cache_dir", str(cache), "--data.num_train", str(NUM_TRAIN),
            "--data.num_val", "4", "--data.scene_size", str(SIZE), "--data.image_size", str(SIZE),
            "--data.batch_size", "4", "--data.num_workers", "0", "--data.hflip", "false",
            "--data.scale_range", "null"]


def writer(cli, kind: type):  # noqa: ANN001, ANN201 - the one callback of that kind
    (found,) = [c for c in cli.trainer.callbacks if isinstance(c, kind)]
    return found


@pytest.fixture(scope="module")
def trained(module_tmp: Callable[[str], Path]) -> tuple[Path, Path, Path]:
    """Four short epochs with ``lit-vision fit``; returns (working dir, shapes cache, best checkpoint)."""
    cwd = module_tmp("det_cli")
    cache = module_tmp("det_cli_shapes")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        cli = run_cli(["fit", *MODEL, *shapes_data(cache), *TRAINER, "--seed_everything", "0",
                       "--trainer.max_epochs", "4", "--trainer.log_every_n_steps", "1",
                       "--model.optimizer", "torch.optim.Adam", "--model.optimizer.lr", "1e-3"])
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    return cwd, cache, best if best.is_absolute() else cwd / best


def test_predicted_coco_results_score_what_validate_logs(trained: tuple[Path, Path, Path], monkeypatch) -> None:
    cwd, cache, ckpt = trained
    monkeypatch.chdir(cwd)
    validated = run_cli(["validate", *MODEL, *shapes_data(cache), *TRAINER, "--ckpt_path", str(ckpt)])
    logged = {k: float(v) for k, v in validated.trainer.callback_metrics.items()}
    predicted = run_cli(["predict", *MODEL, *shapes_data(cache), *TRAINER, "--ckpt_path", str(ckpt),
                         "--trainer.callbacks+=CocoResultsWriter"])
    results_path = writer(predicted, CocoResultsWriter).path
    assert results_path == Path(predicted.trainer.log_dir) / "results.json"
    results = json.loads(results_path.read_text())
    gt = shapes_paths(write_shapes(cache, NUM_TRAIN, 4, SIZE))["coco_val_json"]
    assert results and {r["image_id"] for r in results} <= {img["id"] for img in json.loads(gt.read_text())["images"]}
    assert not (results_path.parent / "results.images.json").exists()  # real COCO ids: no sidecar needed
    stats = evaluate_coco(str(gt), str(results_path))
    assert logged["val/map_50"] > 0  # a non-trivial number, not 0 == 0
    compared = [name for name in stats if f"val/{name}" in logged]
    assert len(compared) == 12  # all of COCOeval's summary numbers
    for name in compared:
        assert stats[name] == pytest.approx(logged[f"val/{name}"], abs=1e-6), name
    # The JSONL of the same run carries the same image ids, with class names.
    rows = [json.loads(ln) for ln in writer(predicted, JsonlPredictionWriter).path.read_text().splitlines()]
    assert [r["image_id"] for r in rows] == sorted({r["image_id"] for r in rows}) and len(rows) == 4
    assert {n for r in rows for n in r["labels"]} <= set(SHAPES_CLASSES)


def test_predict_from_the_checkpoint_alone_on_plain_images(trained: tuple[Path, Path, Path], tmp_path: Path,
                                                          monkeypatch, capsys: pytest.CaptureFixture) -> None:
    """No annotations: class names from the checkpoint, boxes in each image's own (non-square) pixels."""
    _, cache, ckpt = trained
    val_images = shapes_paths(write_shapes(cache, NUM_TRAIN, 4, SIZE))["coco_val_images"]
    photos = tmp_path / "photos"
    photos.mkdir()
    sizes = {"wide.png": (150, 90), "tall.png": (70, 120)}  # (w, h), neither the training image_size
    for (name, size), source in zip(sizes.items(), sorted(val_images.iterdir())):
        Image.open(source).convert("RGB").resize(size).save(photos / name)
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["predict", "--model", "ObjectDetector", "--data", "DetectionImagesDataModule",
                   "--data.predict_paths", str(photos), "--data.image_size", str(SIZE), "--data.num_workers", "0",
                   *TRAINER, "--ckpt_path", str(ckpt), "--trainer.callbacks+=CocoResultsWriter"])
    printed = capsys.readouterr().out
    assert cli.datamodule.class_names == list(SHAPES_CLASSES)  # from the checkpoint
    jsonl = writer(cli, JsonlPredictionWriter).path
    assert f"Predictions written to {jsonl}" in printed
    rows = {Path(r["path"]).name: r for r in map(json.loads, jsonl.read_text().splitlines())}
    assert set(rows) == set(sizes)
    for name, (w, h) in sizes.items():
        row = rows[name]
        assert row["image_id"] == -1 and row["labels"] and set(row["labels"]) <= set(SHAPES_CLASSES)
        assert [SHAPES_CLASSES[i] for i in row["label_ids"]] == row["labels"]
        boxes = np.array(row["boxes"])
        assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= w).all() and (boxes[:, [1, 3]] <= h).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()  # clipped: may be flat
    # The COCO results number the plain images 1, 2 in prediction order and list them in the sidecar.
    coco = writer(cli, CocoResultsWriter)
    assert coco.images_path == coco.path.with_name("results.images.json") and str(coco.images_path) in printed
    images = json.loads(coco.images_path.read_text())
    assert [i["id"] for i in images] == [1, 2]
    assert {Path(i["file_name"]).name for i in images} == set(sizes)
    results = json.loads(coco.path.read_text())
    assert {r["category_id"] for r in results} <= {1, 2, 3}  # the shapes' ids, kept in the checkpoint
    by_id = {i["id"]: Path(i["file_name"]).name for i in images}
    assert sum(by_id[r["image_id"]] == "wide.png" for r in results) == len(rows["wide.png"]["boxes"])


def test_images_datamodule_refuses_to_train_and_needs_class_names(tmp_path: Path) -> None:
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    data = DetectionImagesDataModule(str(tmp_path), image_size=32, class_names=["x"], num_workers=0)
    assert data.num_classes == 1 and data.class_names == ["x"]
    for stage in ("fit", "validate", "test"):
        with pytest.raises(DataError, match="only predicts"):
            data.setup(stage)
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert batch["target"][0]["image_id"] == -1 and batch["target"][0]["orig_size"] == (30, 40)
    assert max(batch["image"][0].shape[-2:]) == 32
    with pytest.raises(DataError, match="class_names"):
        DetectionImagesDataModule(str(tmp_path))
