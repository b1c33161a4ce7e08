"""ObjectDetector: each architecture learns, val metrics are evaluate_coco's, empty images, predictions in original pixels."""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from lit_vision import distributed
from lit_vision.data.detection.coco import COCODetectionDataModule
from lit_vision.data.detection.transforms import detection_collate
from lit_vision.data.embedded.shapes import shapes_paths, write_shapes
from lit_vision.evaluation.coco import evaluate_coco
from lit_vision.geometry import boxes_to_original
from lit_vision.models.detection import FCOS, DetectorArchitecture
from lit_vision.tasks.detection import ObjectDetector

SIZE = 64
TRAINER_KW = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return shapes_paths(write_shapes(tmp_path_factory.mktemp("det_shapes"), num_train=8, num_val=4, image_size=SIZE))


def datamodule(train_json: Path, images: Path, val_json: Path | None = None, **kw: Any) -> COCODetectionDataModule:
    """Train and validate on the same images: a few dozen steps must visibly overfit them."""
    kw = dict(image_size=SIZE, batch_size=4, num_workers=0, hflip=False, scale_range=None) | kw
    return COCODetectionDataModule(str(images), str(train_json), str(images), str(val_json or train_json), **kw)


def tiny_architecture(architecture: str, **options: Any) -> DetectorArchitecture:
    """A narrow architecture for 64-px images: 32-wide neck, small anchors, fewer Faster R-CNN proposals."""
    levels = 4 if architecture == "faster_rcnn" else 5
    width = {"neck_channels": 32} if architecture == "yolo" else {"fpn_channels": 32}
    defaults: dict[str, Any] = {"score_thresh": 0.01, **width}
    if architecture in ("faster_rcnn", "retinanet"):
        defaults["anchor_sizes"] = [SIZE // 8 * 2**i for i in range(levels)]
    if architecture == "faster_rcnn":  # fewer proposals and RoI samples: tiny images hold a handful of objects
        # P3-P6 and 3 scales per level (not torchvision's P2-P6 x 1 scale): what these tiny-data checks were tuned on
        defaults |= {"backbone_out_indices": (-3, -2, -1), "scales_per_octave": 3}
        defaults["torchvision_kwargs"] = {"rpn_pre_nms_top_n_train": 500, "rpn_post_nms_top_n_train": 200,
                                          "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 100,
                                          "box_batch_size_per_image": 128}
    return DetectorArchitecture.registry[architecture](**(defaults | options))


def detector(architecture: str, dm: COCODetectionDataModule, lr: float | None = None, **kw: Any) -> ObjectDetector:
    """The task on a tiny architecture; ``kw`` holds task arguments and architecture options alike."""
    torch.manual_seed(0)
    lr = lr or (3e-3 if architecture == "yolo" else 1e-3)
    task_args = set(inspect.signature(ObjectDetector.__init__).parameters)
    options = {k: kw.pop(k) for k in list(kw) if k not in task_args}
    return ObjectDetector(
        tiny_architecture(architecture, **options), "tv/resnet18", num_classes=dm.num_classes,
        class_names=dm.class_names, image_size=SIZE, optimizer=functools.partial(torch.optim.Adam, lr=lr),
        lr_scheduler=functools.partial(torch.optim.lr_scheduler.ConstantLR, factor=1.0), **kw,
    )


class LossRecorder(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.losses.append(float(outputs["loss"]))


def fit(model: ObjectDetector, dm: COCODetectionDataModule, steps: int) -> list[float]:
    recorder = LossRecorder()
    trainer = pl.Trainer(max_steps=steps, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[recorder],
                         log_every_n_steps=1, **TRAINER_KW)
    trainer.fit(model, datamodule=dm)
    return recorder.losses


def validate(model: ObjectDetector, dm: COCODetectionDataModule) -> dict[str, float]:
    return pl.Trainer(**TRAINER_KW).validate(model, datamodule=dm, verbose=False)[0]


@pytest.mark.parametrize("architecture", ["faster_rcnn", "retinanet", "fcos", "yolo"])
def test_detector_learns_and_reports_evaluate_coco_numbers(architecture: str, shapes: dict[str, Path]) -> None:
    dm = datamodule(shapes["coco_train_json"], shapes["coco_train_images"])
    model = detector(architecture, dm)
    before = validate(model, dm)
    # YOLO's soft targets scale with the IoU of its own early boxes: it needs a few more steps to score.
    losses = fit(model, dm, steps=50 if architecture == "yolo" else 30)
    after = validate(model, dm)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert after["val/map_50"] > before["val/map_50"]
    assert {"val/map", "val/map_50", "val/map_75", "val/map_small", "val/mar_100"} <= set(after)
    # The logged numbers are exactly evaluate_coco on the results the task produced (original pixels, COCO ids).
    results = model.last_coco_results
    assert results and set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    assert {r["category_id"] for r in results} <= set(dm.label_to_category_id.values())
    independent = evaluate_coco(dm.ground_truth("val"), results)
    for name in ("map", "map_50", "map_75", "mar_100"):
        assert after[f"val/{name}"] == pytest.approx(independent[name], abs=1e-6)


@pytest.mark.parametrize("architecture", ["faster_rcnn", "retinanet", "fcos", "yolo"])
def test_images_without_boxes_train_and_evaluate(architecture: str, shapes: dict[str, Path], tmp_path: Path) -> None:
    data = json.loads(shapes["coco_train_json"].read_text())
    keep = {img["id"] for img in data["images"][::2]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]  # half the images empty
    path = tmp_path / "half_empty.json"
    path.write_text(json.dumps(data))
    dm = datamodule(path, shapes["coco_train_images"], batch_size=2)
    model = detector(architecture, dm)
    losses = fit(model, dm, steps=4)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    metrics = validate(model, dm)
    assert torch.isfinite(torch.tensor(metrics["val/map"]))


def test_validation_without_ground_truth_skips_evaluation(shapes: dict[str, Path]) -> None:
    dm = datamodule(shapes["coco_train_json"], shapes["coco_train_images"])
    dm.setup("validate")
    loader = DataLoader(dm.datasets["val"], batch_size=4, collate_fn=detection_collate)
    metrics = pl.Trainer(**TRAINER_KW).validate(detector("fcos", dm), dataloaders=loader, verbose=False)[0]
    assert "val/map" not in metrics


def test_predict_step_returns_names_and_original_coordinates(shapes: dict[str, Path]) -> None:
    dm = datamodule(shapes["coco_train_json"], shapes["coco_train_images"])
    # 64 channels: FCOS's GroupNorm(32) head needs more than one value per group on the 1x1 P7 map of one image.
    model = detector("fcos", dm, score_thresh=0.0, fpn_channels=64).eval()
    image = torch.rand(3, SIZE, SIZE)
    # The image was resized by 0.5 x 0.25 and letterboxed with (6, 8) left/top padding.
    target = {"scale": (0.5, 0.25), "pad": (6, 8, 6, 8), "orig_size": (200, 100), "image_id": -1}
    batch = {"image": [image], "target": [target], "path": ["x.png"]}
    with torch.no_grad():
        raw = model.model([image])[0]
        (out,) = model.predict_step(batch, 0)
    assert out["path"] == "x.png" and len(out["boxes"]) == len(raw["boxes"]) > 0
    assert set(out["labels"]) <= set(dm.class_names) and len(out["scores"]) == len(out["labels"])
    expected = boxes_to_original(raw["boxes"], target)
    manual = (raw["boxes"] - torch.tensor([6.0, 8.0, 6.0, 8.0])) / torch.tensor([0.5, 0.25, 0.5, 0.25])
    manual = torch.stack([manual[:, 0].clamp(0, 100), manual[:, 1].clamp(0, 200),
                          manual[:, 2].clamp(0, 100), manual[:, 3].clamp(0, 200)], dim=1)
    assert torch.allclose(torch.tensor(out["boxes"]), expected, atol=0.01)
    assert torch.allclose(expected, manual, atol=1e-4)
    assert torch.tensor(out["boxes"])[:, 2].max() > SIZE  # really rescaled, not transformed-image pixels


def test_class_names_in_hparams_and_num_classes_checks() -> None:
    model = ObjectDetector(FCOS(fpn_channels=32), "tv/resnet18", class_names=["a", "b"], image_size=SIZE)
    assert model.num_classes == 2 and model.hparams.class_names == ["a", "b"]
    assert model.monitor_metric == "val/map"
    with pytest.raises(ValueError, match="class_names"):
        ObjectDetector("fcos", "tv/resnet18", num_classes=3, class_names=["a"])
    with pytest.raises(ValueError, match="num_classes"):
        ObjectDetector("fcos", "tv/resnet18")


def test_results_from_all_ranks_are_merged_and_scalars_broadcast(shapes: dict[str, Path], monkeypatch) -> None:
    """Two simulated ranks: rank 0 evaluates the union (duplicate padded images merge) and broadcasts it."""
    import lit_vision.tasks.detection as det

    dm = datamodule(shapes["coco_train_json"], shapes["coco_train_images"])
    model = detector("fcos", dm)
    gt = dm.ground_truth("val")
    ids = [img["id"] for img in gt["images"]]
    perfect = {i: [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                   for a in gt["annotations"] if a["image_id"] == i] for i in ids}
    half = len(ids) // 2
    mine = {i: perfect[i] for i in ids[:half + 1]}  # the last one is also on the other rank (sampler padding)
    other = {i: perfect[i] for i in ids[half:]}
    logged: dict[str, float] = {}
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(det.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(det.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(det.dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj, other]))
    broadcast = []
    monkeypatch.setattr(det.dist, "broadcast_object_list", lambda objs, src: broadcast.append((list(objs), src)))
    monkeypatch.setattr(model, "log", lambda name, value, **kw: logged.__setitem__(name, (value, kw["sync_dist"])))
    model._gt_cache, model._results = gt, mine
    model._eval_epoch_end("val")
    assert logged["val/map"] == (pytest.approx(1.0), False) and logged["val/map_50"][0] == pytest.approx(1.0)
    assert len(model.last_coco_results) == len(gt["annotations"])  # no duplicates, nothing missing
    assert broadcast and broadcast[0][1] == 0 and broadcast[0][0][0]["map"] == pytest.approx(1.0)


class GroundTruthOracle(pl.Callback):
    """Makes the task's detector predict exactly each validation batch's ground truth."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # noqa: ANN001
        pl_module.model.forward = lambda images, targets=None: [
            {"boxes": t["boxes"].float(), "labels": t["labels"], "scores": torch.ones(len(t["labels"]))}
            for t in batch["target"]]


def test_partial_validation_is_scored_on_the_images_it_saw(shapes: dict[str, Path]) -> None:
    """limit_val_batches (or the sanity check) predicts part of the split: perfect predictions on it score 1, as
    torchvision's reference evaluator (params.imgIds = the images seen) has it, not the share of objects seen."""
    dm = datamodule(shapes["coco_train_json"], shapes["coco_train_images"], batch_size=2)
    model = detector("fcos", dm)
    metrics = pl.Trainer(limit_val_batches=1, callbacks=[GroundTruthOracle()], **TRAINER_KW).validate(
        model, datamodule=dm, verbose=False)[0]
    assert metrics["val/map"] == pytest.approx(1.0) and metrics["val/mar_100"] == pytest.approx(1.0)
    assert {r["image_id"] for r in model.last_coco_results} < {img["id"] for img in dm.ground_truth("val")["images"]}


def test_checkpoint_restores_weights_and_class_names(shapes: dict[str, Path], tmp_path: Path) -> None:
    dm = datamodule(shapes["coco_train_json"], shapes["coco_train_images"])
    model = detector("fcos", dm, fpn_channels=64)
    trainer = pl.Trainer(max_steps=1, num_sanity_val_steps=0, limit_val_batches=0, **TRAINER_KW)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "det.ckpt")
    restored = ObjectDetector.load_from_checkpoint(tmp_path / "det.ckpt")
    assert restored.class_names == dm.class_names
    # The architecture object travels as its config and comes back with every option.
    assert type(restored.architecture) is FCOS and vars(restored.architecture) == vars(model.architecture)
    for a, b in zip(model.state_dict().values(), restored.state_dict().values()):
        assert torch.equal(a, b)


DDP_SCRIPT = """
import functools, json, sys
import lightning.pytorch as pl
import torch
from lit_vision.data.detection.coco import COCODetectionDataModule
from lit_vision.models.detection import FCOS
from lit_vision.tasks.detection import ObjectDetector

images, ann, out = sys.argv[1:4]
dm = COCODetectionDataModule(images, ann, images, ann, image_size=64, batch_size=3, num_workers=0, hflip=False,
                             scale_range=None)
torch.manual_seed(0)
model = ObjectDetector(FCOS(fpn_channels=64, score_thresh=0.0, detections_per_img=10), "tv/resnet18",
                       num_classes=dm.num_classes, class_names=dm.class_names, image_size=64)
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False,
                     enable_model_summary=False)
trainer.validate(model, datamodule=dm, verbose=False)
metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
    json.dump({"metrics": metrics, "results": model.last_coco_results}, f)
"""


@pytest.mark.ddp
def test_ddp_ranks_log_identical_metrics_over_all_images(shapes: dict[str, Path], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_validate.py"
    script.write_text(DDP_SCRIPT)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    gt = json.loads(shapes["coco_train_json"].read_text())
    dropped = gt["images"].pop()["id"]  # 7 images on 2 ranks: the sampler pads rank 1 with a duplicate
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] != dropped]
    ann = tmp_path / "seven.json"
    ann.write_text(json.dumps(gt))
    args = [sys.executable, str(script), str(shapes["coco_train_images"]), str(ann), str(tmp_path)]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["metrics"] == r1["metrics"] and "val/map" in r0["metrics"]
    # Every image once: the padded duplicate merged away.
    assert {r["image_id"] for r in r0["results"]} == {img["id"] for img in gt["images"]}
    assert len(r0["results"]) == 10 * len(gt["images"])
    independent = evaluate_coco(gt, r0["results"])
    for name in ("map", "map_50", "mar_100"):
        assert r0["metrics"][f"val/{name}"] == pytest.approx(independent[name], abs=1e-6)


def test_per_class_ap_is_logged_when_asked(shapes: dict[str, Path]) -> None:
    dm = datamodule(shapes["coco_train_json"], shapes["coco_train_images"])
    model = detector("fcos", dm, per_class_ap=True)
    fit(model, dm, steps=10)
    metrics = validate(model, dm)
    reference = evaluate_coco(dm.ground_truth("val"), model.last_coco_results, per_class=True)["per_class"]
    assert reference and set(reference) <= set(dm.class_names)
    for name, ap in reference.items():
        assert metrics[f"val/ap/{name}"] == pytest.approx(ap, abs=1e-6)
