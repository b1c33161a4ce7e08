"""``lit-vision`` for segmentation: fit a tiny segmenter on the shapes, then predict palette PNG masks
(from the recipe's data, and from a checkpoint alone on a folder of odd-sized images)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_vision.callbacks import SegmentationMaskWriter
from lit_vision.cli import run_cli
from lit_vision.data.segmentation import SHAPES_SEGMENTATION_CLASSES
from lit_vision.tasks import SemanticSegmenter

SIZE = 64
TRAINER = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_model_summary", "false",
           "--trainer.enable_progress_bar", "false"]
MODEL = ["--model", "SemanticSegmenter", "--model.architecture", "fcn", "--model.backbone", "tv/resnet18"]


def shapes_data(cache: Path) -> list[str]:
    return ["--data", "ShapesSegmentationDataModule", "--data.cache_dir", str(cache), "--data.num_train", "8",
            "--data.num_val", "4", "--data.scene_size", str(SIZE), "--data.batch_size", "4",
            "--data.num_workers", "0"]


@pytest.fixture(scope="module")
def trained(module_tmp: Callable[[str], Path]) -> tuple[Path, Path, Path]:
    cwd = module_tmp("seg_cli")
    cache = module_tmp("seg_cli_shapes")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        cli = run_cli(["fit", *MODEL, *shapes_data(cache), *TRAINER, "--seed_everything", "0",
                       "--trainer.max_epochs", "1", "--model.optimizer", "torch.optim.Adam"])
    assert "val/miou" in cli.trainer.callback_metrics
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert "val_miou" in best.name  # the default checkpoint keeps the best mIoU
    return cwd, cache, best if best.is_absolute() else cwd / best


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_writes_palette_masks_that_read_back_as_class_indices(trained, monkeypatch) -> None:  # noqa: ANN001
    cwd, cache, ckpt = trained
    monkeypatch.chdir(cwd)
    cli = run_cli(["predict", *MODEL, *shapes_data(cache), *TRAINER, "--ckpt_path", str(ckpt)])
    (writer,) = [c for c in cli.trainer.callbacks if isinstance(c, SegmentationMaskWriter)]
    rows = read_rows(writer.path)
    assert len(rows) == 4  # the val split
    model = SemanticSegmenter.load_from_checkpoint(ckpt).eval()
    dm = cli.datamodule
    for i, row in enumerate(rows):
        png = Image.open(row["mask"])
        assert png.mode == "P" and png.size == Image.open(row["path"]).size
        assert png.getpalette()[:12] == dm.palette[:12]
        mask = np.array(png)
        # The PNG holds exactly what predict_step returns for that image.
        item = dm.datasets["predict"][i]
        batch = {"image": item["image"][None], "path": [item["path"]], "meta": [item["meta"]]}
        with torch.no_grad():
            expected = model.predict_step(batch, 0)[0]
        assert np.array_equal(mask, expected["mask"].numpy())
        assert row["classes"] == expected["classes"] and set(row["classes"]) <= set(SHAPES_SEGMENTATION_CLASSES)
        assert sum(row["pixels"].values()) == mask.size


def test_predict_from_a_checkpoint_alone_on_odd_sized_images(trained, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    _, _, ckpt = trained
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (50, 90), "b.jpg": (77, 33)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(photos / name)
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["predict", "--model", "SemanticSegmenter", "--data", "SegmentationImagesDataModule",
                   "--data.predict_paths", str(photos), "--data.image_size", str(SIZE), "--data.num_workers", "0",
                   *TRAINER, "--ckpt_path", str(ckpt)])
    assert cli.datamodule.class_names == list(SHAPES_SEGMENTATION_CLASSES)  # from the checkpoint
    (writer,) = [c for c in cli.trainer.callbacks if isinstance(c, SegmentationMaskWriter)]
    rows = {Path(r["path"]).name: r for r in read_rows(writer.path)}
    assert set(rows) == {"a.png", "b.jpg"}
    for name, row in rows.items():
        mask = np.array(Image.open(row["mask"]))
        assert mask.shape == np.array(Image.open(photos / name)).shape[:2]
        assert mask.max() < len(SHAPES_SEGMENTATION_CLASSES)
