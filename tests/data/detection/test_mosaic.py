"""Mosaic: boxes and masks stay on their objects, the box filter, the geometry against YOLOv8's affine, determinism
whatever num_workers, and the close-off in the last epochs through real Trainer fits (resumed, persistent workers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from lit_vision.data.detection import (
    CocoDetectionDataset,
    ShapesDetectionDataModule,
    VOCDetectionDataModule,
    detection_train_transforms,
)
from lit_vision.data.detection.mosaic import (
    Mosaic,
    MosaicDataset,
    MosaicParams,
)
from lit_vision.data.detection.transforms import box_candidates
from lit_vision.data.embedded.shapes import SHAPES_CLASSES, shapes_paths, write_shapes
from lit_vision.data.resumable import ResumableSampler, SeededDataset

# ---------------------------------------------------------------------------------------------- synthetic scenes
# Each object is a solid rectangle of its own colour (one category per object), on backgrounds none of them is near.
OBJECT_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255),
                  (255, 128, 0), (128, 0, 255), (0, 255, 128), (255, 255, 255), (255, 0, 128), (0, 128, 255)]
BACKGROUNDS = [(40, 40, 40), (20, 60, 90), (90, 40, 20), (60, 90, 20), (70, 20, 70), (30, 80, 80)]
SIZES = [(96, 96), (96, 64), (64, 96), (120, 84), (80, 120), (96, 72)]  # (w, h); long side 96 or 120 (resized)


def write_rectangles(root: Path) -> CocoDetectionDataset:
    """6 images, 2 rectangles each (>= 14 px, >= 12 px from the borders and each other), COCO JSON with RLE masks."""
    images, annotations = [], []
    for i, ((w, h), bg) in enumerate(zip(SIZES, BACKGROUNDS)):
        pixels = np.zeros((h, w, 3), np.uint8) + np.array(bg, np.uint8)
        rects = [(12, 12, w // 2 - 6 - 12, h // 2 - 12), (w // 2 + 6, h // 2, w - 12 - (w // 2 + 6), h - 12 - h // 2)]
        for j, (x, y, rw, rh) in enumerate(rects):
            cat = 2 * i + j
            pixels[y:y + rh, x:x + rw] = OBJECT_COLOURS[cat]
            binary = np.zeros((h, w), np.uint8, order="F")
            binary[y:y + rh, x:x + rw] = 1
            rle = mask_utils.encode(binary)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat + 1,
                                "bbox": [x, y, rw, rh], "area": rw * rh, "iscrowd": 0,
                                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
        Image.fromarray(pixels).save(root / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
    categories = [{"id": k + 1, "name": f"c{k}"} for k in range(len(OBJECT_COLOURS))]
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return CocoDetectionDataset(root, path, with_masks=True)


def colour_region(image: torch.Tensor, colour: tuple[int, ...], box: torch.Tensor, margin: int = 2) -> list[int]:
    """Bounding box (continuous XYXY) of the pixels nearer ``colour`` than 60/255 per channel, searched in
    ``box`` widened by ``margin``; [] when there are none."""
    s = image.shape[-1]
    x0, y0 = max(0, int(box[0]) - margin), max(0, int(box[1]) - margin)
    x1, y1 = min(s, int(box[2]) + 1 + margin), min(s, int(box[3]) + 1 + margin)
    patch = image[:, y0:y1, x0:x1] * 255
    near = ((patch - torch.tensor(colour, dtype=torch.float32)[:, None, None]).abs() < 60).all(0)
    ys, xs = near.nonzero(as_tuple=True)
    if not len(ys):
        return []
    return [x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1]


def test_boxes_and_masks_stay_on_their_objects(tmp_path: Path) -> None:
    source = write_rectangles(tmp_path)
    s = 96
    dataset = MosaicDataset(source, detection_train_transforms(s, True, None, False, True), probability=1.0)
    seeded, boxes_seen = SeededDataset(dataset), 0
    for key in [(seed, 0, index) for seed in range(8) for index in range(len(source))]:
        item = seeded[key]
        image, target = item["image"], item["target"]
        assert image.shape == (3, s, s) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
        assert target["scale"] == (1.0, 1.0) and target["pad"] == (0, 0, 0, 0)
        first = key[2]
        assert target["image_id"] == first + 1 and target["orig_size"] == SIZES[first][::-1]
        assert item["path"] == source.image_path(first)
        assert target["masks"].shape == (len(target["boxes"]), s, s)
        for box, label, mask in zip(target["boxes"], target["labels"], target["masks"]):
            region = colour_region(image, OBJECT_COLOURS[int(label)], box)
            assert region, f"{key}: no pixel of object {int(label)}'s colour in or near its box {box.tolist()}"
            assert torch.allclose(torch.tensor(region, dtype=torch.float32), box, atol=2), (key, region, box)
            ys, xs = mask.nonzero(as_tuple=True)
            mask_box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
            # Two nearest-neighbour resizes (to s, then window to output, factor f <= 1.5): each mask edge lies
            # within 0.5 px of the box edge after the first, so within 0.5 f + 0.5 <= 1.25 px at the end.
            assert torch.allclose(mask_box, box, atol=1.25), (key, mask_box, box)
            boxes_seen += 1
    assert boxes_seen > 100  # the check really ran over many boxes


# ---------------------------------------------------------------------------------------------- geometry and filter
def square(value: int, side: int = 100) -> tuple[tv_tensors.Image, dict[str, Any]]:
    """A ``side`` x ``side`` image of distinct pixel values (value + position code) and no objects."""
    ramp = torch.arange(side * side).reshape(side, side)
    pixels = torch.stack([torch.full((side, side), value), ramp % 251, ramp // side]).to(torch.uint8)
    target = {"boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(side, side)),
              "labels": torch.zeros(0, dtype=torch.int64)}
    return tv_tensors.Image(pixels), target


def with_boxes(sample: tuple[tv_tensors.Image, dict[str, Any]], boxes: list[list[float]],
               first_label: int = 0) -> tuple[Any, dict]:
    image, _ = sample
    return image, {"boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes), format="XYXY", canvas_size=(100, 100)),
                   "labels": torch.arange(len(boxes)) + first_label}


def reference_canvas(samples: list[tuple[tv_tensors.Image, dict]], centre: tuple[int, int], s: int) -> torch.Tensor:
    """The whole 2s x 2s mosaic canvas, built by hand (independent of Mosaic's window composition)."""
    canvas = torch.full((3, 2 * s, 2 * s), 114, dtype=torch.uint8)
    xc, yc = centre
    for k, (image, _) in enumerate(samples):
        h, w = image.shape[-2:]
        x0, y0 = (xc - w if k in (0, 2) else xc), (yc - h if k in (0, 1) else yc)
        for y in range(max(y0, 0), min(y0 + h, 2 * s)):
            xs, xe = max(x0, 0), min(x0 + w, 2 * s)
            canvas[:, y, xs:xe] = image[:, y - y0, xs - x0:xe - x0]
    return canvas


@pytest.mark.parametrize("centre, gain, translate", [((100, 100), 1.0, (0.0, 0.0)), ((70, 130), 1.0, (0.1, -0.1)),
                                                     ((120, 80), 2.0, (0.05, 0.0)), ((90, 140), 0.5, (-0.1, 0.1)),
                                                     ((110, 95), 1.3, (-0.07, 0.03))])
def test_pixels_are_the_canvas_window_torchvision_crops_and_boxes_follow_yolo_affine(
        centre: tuple[int, int], gain: float, translate: tuple[float, float]) -> None:
    s = 100
    samples = [with_boxes(square(10), [[60, 60, 90, 90]], 0), with_boxes(square(60), [[5, 55, 35, 95]], 1),
               with_boxes(square(110), [[60, 5, 95, 30]], 2), with_boxes(square(160), [[5, 5, 40, 40]], 3)]
    image, target = Mosaic(s)(samples, MosaicParams(centre, gain, translate))
    side = round(s / gain)
    left, top = round(s - (0.5 + translate[0]) * s / gain), round(s - (0.5 + translate[1]) * s / gain)
    canvas = reference_canvas(samples, centre, s)
    padded = F.pad(canvas, [s, s, s, s], fill=114)  # the window may reach past the canvas (grey there too)
    expected = F.resized_crop(padded, top + s, left + s, side, side, [s, s], antialias=True)
    assert torch.equal(image, expected)
    # Each box that is fully inside the output lands where YOLOv8's affine o = g (p - s) + s (0.5 + t) puts it.
    xc, yc = centre
    offsets = [(xc - 100, yc - 100), (xc, yc - 100), (xc - 100, yc), (xc, yc)]
    inside = 0
    for k, (_, t) in enumerate(samples):
        box = t["boxes"][0] + torch.tensor([*offsets[k], *offsets[k]])
        out = gain * (box - s) + s * (0.5 + torch.tensor([*translate, *translate]))
        if (out >= 1).all() and (out <= s - 1).all() and (box >= 0).all() and (box <= 2 * s).all():
            assert int(k) in target["labels"].tolist()
            got = target["boxes"][target["labels"].tolist().index(k)]
            torch.testing.assert_close(got, out.float(), atol=gain + 0.5, rtol=0)
            inside += 1
    assert inside >= 1


def test_box_filter_keeps_what_yolov8_keeps() -> None:
    # gain 1, no translation, junction at the canvas centre: the window is canvas [50, 150]^2 and the output
    # is the identity of the window: the top-left image's [50, 100]^2 lands on output [0, 50]^2.
    boxes = [[40, 40, 60, 60],    # 10x10 of 20x20 left: 25 % -> kept, clipped to [0, 0, 10, 10]
             [45, 60, 52, 70],    # 2 px wide left (28 % of its area): not wider than 2 px -> dropped
             [45, 60, 52.5, 70],  # 2.5 px wide left (33 %) -> kept
             [10, 60, 54, 70],    # 4x10 of 44x10 left: 9.1 % -> dropped
             [15, 60, 54, 70],    # 4x10 of 39x10 left: 10.3 % -> kept
             [14, 60, 54, 70],    # 4x10 of 40x10 left: exactly 10 %, not more -> dropped
             [0, 0, 45, 45]]      # entirely outside the window -> dropped
    samples = [with_boxes(square(10), boxes), square(60), square(110), with_boxes(square(160), [[10, 10, 30, 30]])]
    _, target = Mosaic(100)(samples, MosaicParams((100, 100), 1.0, (0.0, 0.0)))
    # Kept, in order: boxes 0, 2, 4 of the first image, then the bottom-right image's box at [60, 60, 80, 80].
    assert target["labels"].tolist() == [0, 2, 4, 0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[0, 0, 10, 10], [0, 10, 2.5, 20], [0, 10, 4, 20],
                                                              [60, 60, 80, 80]], dtype=torch.float32))
    # The aspect-ratio rule (boxes wider than an output can be at this size): 120:1 dropped, 80:1 kept.
    b = torch.tensor([[0, 0, 300, 2.5], [0, 0, 200, 2.5]])
    assert box_candidates(b, b).tolist() == [False, True]


# ---------------------------------------------------------------------------------------------- determinism
def shapes_module(tmp: Path, **kw: Any) -> ShapesDetectionDataModule:
    kw = dict(cache_dir=str(tmp / "cache"), num_train=8, num_val=4, scene_size=64, image_size=64, mosaic=1.0,
              close_mosaic=1, letterbox=True, num_workers=0, batch_size=4) | kw
    return ShapesDetectionDataModule(**kw)


def test_same_key_same_sample_and_workers_give_the_same_batches(tmp_path: Path) -> None:
    batches = {}
    for workers in (0, 2):
        dm = shapes_module(tmp_path, mosaic=0.5, num_workers=workers)
        dm.setup("fit")
        dm.data_seed = 7
        loader, batches[workers] = dm.train_dataloader(), []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            batches[workers] += list(loader)
    for a, b in zip(batches[0], batches[2], strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a["image"], b["image"], strict=True))
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a["target"], b["target"], strict=True))
    seeded = SeededDataset(dm.datasets["train"])
    assert torch.equal(seeded[(7, 0, 3)]["image"], seeded[(7, 0, 3)]["image"])
    assert not torch.equal(seeded[(7, 0, 3)]["image"], seeded[(7, 1, 3)]["image"])


# ---------------------------------------------------------------------------------------------- close-off
class Recorder(L.Callback):
    """Keeps every training batch's images, by epoch."""

    def __init__(self) -> None:
        self.images: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        self.images.setdefault(trainer.current_epoch, []).extend(img.clone() for img in batch["image"])


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: dict[str, Any], idx: int) -> torch.Tensor:
        return (self.w * torch.stack([img.mean() for img in batch["image"]]).mean() - 1) ** 2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(dm: ShapesDetectionDataModule, root: Path, ckpt_path: str | None = None, checkpoints: bool = True,
        **kw: Any) -> Recorder:
    """A real fit of a one-parameter model (3 epochs of 2 batches), recording its batches; a checkpoint per epoch."""
    recorder = Recorder()
    callbacks = [recorder] + ([ModelCheckpoint(dirpath=root, save_top_k=-1)] if checkpoints else [])
    kw = dict(max_epochs=3, accelerator="cpu", logger=False, limit_val_batches=0, num_sanity_val_steps=0,
              enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root),
              enable_checkpointing=checkpoints, callbacks=callbacks) | kw
    L.Trainer(**kw).fit(Tiny(), datamodule=dm, ckpt_path=ckpt_path)
    return recorder


def expected(dm: ShapesDetectionDataModule, epoch: int, mosaic: bool) -> list[torch.Tensor]:
    """The epoch's images in loader order, read outside any Trainer as a mosaic or through the normal preset."""
    ds = dm.datasets["train"]
    reference = MosaicDataset(ds.plain.with_transforms(None), ds.plain.transforms, 1.0) if mosaic else ds.plain
    sampler = ResumableSampler(ds, num_replicas=1, rank=0, seed=dm.data_seed)
    sampler.set_epoch(epoch)
    return [SeededDataset(reference)[key]["image"] for key in sampler]


def assert_epochs(recorder: Recorder, dm: ShapesDetectionDataModule, mosaic_epochs: set[int]) -> None:
    for epoch, images in recorder.images.items():
        want = expected(dm, epoch, epoch in mosaic_epochs)
        other = expected(dm, epoch, epoch not in mosaic_epochs)
        assert all(torch.equal(a, b) for a, b in zip(images, want, strict=True)), epoch
        assert not any(torch.equal(a, b) for a, b in zip(images, other)), epoch


@pytest.fixture(scope="module")
def first_run(module_tmp: Any) -> tuple[Path, ShapesDetectionDataModule, Recorder]:
    root = module_tmp("mosaic_fit")
    dm = shapes_module(root)
    return root, dm, fit(dm, root)


def test_mosaic_closes_for_the_last_epochs_of_a_fit(first_run: Any) -> None:
    _, dm, recorder = first_run
    assert sorted(recorder.images) == [0, 1, 2]
    assert dm.datasets["train"].stop_epoch == 2
    assert_epochs(recorder, dm, mosaic_epochs={0, 1})


def test_a_run_resumed_after_epoch_1_still_closes_mosaic_at_epoch_2(first_run: Any, tmp_path: Path) -> None:
    root, dm, recorder = first_run
    ckpt = next(root.glob("epoch=1-*.ckpt"))
    dm2 = shapes_module(root)
    resumed = fit(dm2, tmp_path, ckpt_path=str(ckpt))
    assert sorted(resumed.images) == [2] and dm2.data_seed == dm.data_seed
    assert all(torch.equal(a, b) for a, b in zip(resumed.images[2], recorder.images[2], strict=True))
    assert_epochs(resumed, dm2, mosaic_epochs=set())


def test_persistent_workers_close_mosaic_too(tmp_path: Path) -> None:
    dm = shapes_module(tmp_path, num_workers=2, persistent_workers=True)
    recorder = fit(dm, tmp_path, checkpoints=False)
    assert sorted(recorder.images) == [0, 1, 2]
    assert_epochs(recorder, dm, mosaic_epochs={0, 1})


# ---------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("kw, message", [({"mosaic": 1.5}, "0 <= mosaic <= 1"), ({"mosaic": -0.1}, "0 <= mosaic"),
                                         ({"close_mosaic": -1}, "close_mosaic .* >= 0")])
def test_bad_values_are_refused(tmp_path: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shapes_module(tmp_path, **kw)


def test_close_mosaic_without_max_epochs_is_an_error_before_training(tmp_path: Path) -> None:
    dm = shapes_module(tmp_path)
    with pytest.raises(ValueError, match="needs the trainer's max_epochs"):
        fit(dm, tmp_path, checkpoints=False, max_epochs=-1, max_steps=2)


def test_voc_layout_gets_the_mosaic_options(tmp_path: Path) -> None:
    root = shapes_paths(write_shapes(tmp_path, 4, 2, 64, 0))["voc_dir"]
    dm = VOCDetectionDataModule(str(root), class_names=list(SHAPES_CLASSES), image_size=64, mosaic=1.0,
                                letterbox=True, num_workers=0)
    dm.setup("fit")
    item = SeededDataset(dm.datasets["train"])[(0, 0, 1)]
    assert isinstance(dm.datasets["train"], MosaicDataset) and item["image"].shape == (3, 64, 64)
    assert item["target"]["scale"] == (1.0, 1.0)
