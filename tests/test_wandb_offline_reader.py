"""tests/wandb_offline.py reads back what a real offline W&B run wrote: scalars, images with boxes and masks,
image lists, tables, config, summary and artifacts; a damaged file is an error, not junk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.wandb_offline import (
    expand_images,
    isolate_wandb,
    media_of,
    read_offline_run,
    read_records,
)


@pytest.fixture
def save_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return isolate_wandb(monkeypatch, tmp_path)


def _box(x0: int, y0: int, x1: int, y1: int, class_id: int, score: float) -> dict:
    return {"position": {"minX": x0, "minY": y0, "maxX": x1, "maxY": y1}, "domain": "pixel",
            "class_id": class_id, "scores": {"score": score}}


def test_reader_sees_scalars_images_boxes_masks_and_tables(save_dir: Path) -> None:
    import wandb

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    mask = np.zeros((24, 32), dtype=np.uint8)
    mask[4:10, 5:20] = 2
    mask[12:20, 1:6] = 1
    labels = {1: "cat", 2: "dog"}
    run = wandb.init(project="reader-test", dir=str(save_dir), config={"lr": 0.01, "nested": {"depth": 3}})
    for step, loss in enumerate([0.9, 0.5, 0.25]):
        run.log({"train/loss": loss, "epoch": 0}, step=step)
    boxes = {"predictions": {"box_data": [_box(1, 2, 11, 12, 1, 0.875), _box(3, 4, 30, 20, 2, 0.5)],
                             "class_labels": labels}}
    run.log({"val/boxes": wandb.Image(pixels, boxes=boxes, caption="boxes")}, step=3)
    run.log({"val/masks": wandb.Image(pixels, masks={"ground_truth": {"mask_data": mask, "class_labels": labels}})},
            step=4)
    run.log({"val/table": wandb.Table(columns=["image_id", "ap"], data=[[7, 0.5], [9, 0.75]])}, step=5)
    run.config.update({"lr": 0.02, "added": "later"}, allow_val_change=True)
    run_id = run.id
    wandb.finish()

    got = read_offline_run(save_dir)
    assert got.run_id == run_id and got.files_dir == got.run_dir / "files" and got.files_dir.is_dir()
    # config: merged, later values win, nested values stay nested
    assert got.config["lr"] == 0.02 and got.config["added"] == "later" and got.config["nested"] == {"depth": 3}
    # history: one row per log call, in order
    assert got.metric("train/loss") == [0.9, 0.5, 0.25]
    assert [row["_step"] for row in got.history] == [0, 1, 2, 3, 4, 5]
    assert got.summary["train/loss"] == 0.25

    [image] = media_of(got.history, "val/boxes")
    assert image["_type"] == "image-file" and (image["width"], image["height"]) == (32, 24)
    assert got.file(image["path"]).is_file()
    assert np.array_equal(np.asarray(Image.open(got.file(image["path"])).convert("RGB")), pixels)  # PNG: lossless
    group = got.boxes(image)["predictions"]
    assert [b["position"] for b in group["box_data"]] == [
        {"minX": 1, "minY": 2, "maxX": 11, "maxY": 12}, {"minX": 3, "minY": 4, "maxX": 30, "maxY": 20}]
    assert [b["class_id"] for b in group["box_data"]] == [1, 2]
    assert [b["scores"]["score"] for b in group["box_data"]] == [0.875, 0.5]
    assert {int(k): v for k, v in group["class_labels"].items()} == labels

    [masked] = media_of(got.history, "val/masks")
    mask_ref = masked["masks"]["ground_truth"]
    assert mask_ref["_type"] == "mask" and got.file(mask_ref["path"]).is_file()
    assert np.array_equal(np.asarray(Image.open(got.file(mask_ref["path"]))), mask)

    [table] = media_of(got.history, "val/table")
    assert table["_type"] == "table-file" and (table["nrows"], table["ncols"]) == (2, 2)
    assert got.table(table) == {"columns": ["image_id", "ap"], "data": [[7, 0.5], [9, 0.75]]}
    assert media_of(got.history, "train/loss") == [] and media_of(got.history, "missing") == []
    # a logged table travels as an artifact too
    assert any(a["type"] == "run_table" and a["files"] == ["val/table.table.json"] for a in got.artifacts), got.artifacts


def test_image_lists_and_artifacts(save_dir: Path, tmp_path: Path) -> None:
    import wandb

    dark, light = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00\x01")
    run = wandb.init(project="reader-test", dir=str(save_dir))
    boxes = {"p": {"box_data": [_box(0, 0, 4, 4, 1, 1.0)], "class_labels": {1: "eel"}}}
    run.log({"samples": [wandb.Image(dark, caption="dark"), wandb.Image(light, caption="light", boxes=boxes)]})
    artifact = wandb.Artifact("model-test", type="model", metadata={"score": 0.5})
    artifact.add_file(str(weights), name="model.ckpt")
    run.log_artifact(artifact, aliases=["latest", "best"])
    wandb.finish()

    got = read_offline_run(save_dir / "wandb")  # the wandb/ folder itself works too
    [media] = media_of(got.history, "samples")
    assert media["_type"] == "images/separated"
    images = expand_images(media)
    assert [i["caption"] for i in images] == ["dark", "light"] and images[0]["boxes"] == {}
    assert [int(np.asarray(Image.open(got.file(i["path"]))).mean()) for i in images] == [0, 200]
    assert got.boxes(images[1])["p"]["box_data"][0]["position"] == {"minX": 0, "minY": 0, "maxX": 4, "maxY": 4}
    [model] = [a for a in got.artifacts if a["type"] == "model"]
    assert model["name"] == "model-test" and sorted(model["aliases"]) == ["best", "latest"]
    assert model["files"] == ["model.ckpt"] and model["metadata"] == {"score": 0.5}
    staged = Path(model["local_paths"][0])
    assert staged.read_bytes() == b"\x00\x01" and str(staged).startswith(str(tmp_path))  # staged in WANDB_DATA_DIR


def test_records_spanning_blocks_and_damaged_files(save_dir: Path) -> None:
    import wandb

    big = "".join(chr(97 + i % 26) for i in range(100_000))  # > 3 LevelDB blocks: FIRST, MIDDLE..., LAST
    run = wandb.init(project="reader-test", dir=str(save_dir), config={"big": big})
    run.log({"x": 1.0})
    wandb.finish()
    got = read_offline_run(save_dir)
    assert got.config["big"] == big and got.metric("x") == [1.0]

    path = next((save_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    data = bytearray(path.read_bytes())
    at = data.index(big[:64].encode())
    data[at + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        read_records(path)
    path.write_bytes(b"not a wandb file")
    with pytest.raises(ValueError, match="not a W&B"):
        read_records(path)
    with pytest.raises(FileNotFoundError):
        read_offline_run(save_dir / "nowhere")
