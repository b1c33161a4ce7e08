"""SemanticSegmenter: losses, whole-set metrics, sliding windows and predictions mapped back to the original size."""

from __future__ import annotations

import functools
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lit_vision.tasks.segmentation import SemanticSegmenter, dice_loss, slide_logits

TRAINER_KW = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False)


class Pointwise(nn.Module):
    """A 1x1-conv 'segmenter': every pixel's logits depend on that pixel only (so windows cannot matter)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, k, 1)
        self.num_classes = k

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.conv(x)}


class PointwiseSegmenter(SemanticSegmenter):
    def build_model(self) -> nn.Module:
        torch.manual_seed(0)
        return Pointwise(self.num_classes)


def segmenter(**kw: Any) -> PointwiseSegmenter:
    kw = dict(class_names=["bg", "a", "b"], backbone=None, architecture="fcn",
              optimizer=functools.partial(torch.optim.Adam, lr=0.05),
              lr_scheduler=functools.partial(torch.optim.lr_scheduler.ConstantLR, factor=1.0)) | kw
    return PointwiseSegmenter(**kw)


def colour_batch(n: int = 4, size: int = 16, seed: int = 0) -> list[dict[str, Any]]:
    """Items whose class is the dominant colour channel of the pixel (learnable pointwise), 255 border."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        labels = torch.randint(0, 3, (size, size), generator=g)
        image = F.one_hot(labels, 3).permute(2, 0, 1).float() + 0.1 * torch.rand(3, size, size, generator=g)
        mask = labels.clone()
        mask[0, :] = 255
        items.append({"image": image, "mask": mask, "path": f"img{i}.png",
                      "meta": {"orig_size": (size, size), "content_size": (size, size)}})
    return items


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"image": torch.stack([i["image"] for i in items]), "mask": torch.stack([i["mask"] for i in items]),
            "path": [i["path"] for i in items], "meta": [i["meta"] for i in items]}


def test_slide_inference_equals_whole_for_a_pointwise_model_and_covers_every_pixel() -> None:
    model = Pointwise(3)
    x = torch.rand(2, 3, 37, 50)
    whole = model(x)["out"]
    for window, stride in [(16, 11), (32, 32), (64, 20), (37, 5)]:
        assert torch.allclose(slide_logits(model, x, 3, window, stride), whole, atol=1e-6)


def test_slide_inference_runs_the_model_on_windows_only() -> None:
    seen: list[tuple[int, int]] = []

    class Recorder(Pointwise):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            seen.append(tuple(x.shape[-2:]))
            return {"out": torch.ones(x.shape[0], 3, *x.shape[-2:])}

    out = slide_logits(Recorder(3), torch.rand(1, 3, 40, 70), 3, 32, 20)
    assert set(seen) == {(32, 32)} and len(seen) == 2 * 3  # rows 0, 8; cols 0, 20, 38
    assert torch.allclose(out, torch.ones(1, 3, 40, 70))  # averaged where windows overlap


def test_cross_entropy_ignores_255_and_adds_the_weighted_aux_term() -> None:
    model = segmenter(aux_weight=0.5)
    mask = torch.tensor([[[0, 1], [2, 255]]])
    out = torch.randn(1, 3, 2, 2)
    aux = torch.randn(1, 3, 2, 2)
    terms = model.compute_loss({"out": out, "aux": aux}, mask)
    valid = [(0, 0, 0), (0, 1, 1), (1, 0, 2)]
    expected = -sum(out[0, :, y, x].log_softmax(0)[c] for y, x, c in valid) / 3
    expected_aux = -sum(aux[0, :, y, x].log_softmax(0)[c] for y, x, c in valid) / 3
    assert float(terms["loss_ce"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(float(expected + 0.5 * expected_aux), rel=1e-5)


def test_a_batch_with_every_pixel_ignored_counts_zero_not_nan() -> None:
    """A crop of crowd regions only (255 everywhere): the mean over no pixels was 0/0, a NaN that stopped the run."""
    model = segmenter(aux_weight=0.5, dice_weight=1.0)
    out = torch.randn(2, 3, 4, 4, requires_grad=True)
    terms = model.compute_loss({"out": out, "aux": torch.randn(2, 3, 4, 4)}, torch.full((2, 4, 4), 255))
    assert all(float(v) == 0.0 for v in terms.values())
    terms["loss"].backward()
    assert torch.equal(out.grad, torch.zeros_like(out))  # no update from such a batch
    nan = torch.full((1, 3, 2, 2), float("nan"))
    diverged = model.compute_loss({"out": nan}, torch.zeros(1, 2, 2, dtype=torch.long))
    assert diverged["loss"].isnan()  # a NaN of the model itself still reaches the non-finite guard


def test_a_window_stride_that_leaves_pixels_uncovered_is_refused() -> None:
    with pytest.raises(ValueError, match="1 <= window_stride <= window_size, got window_size 16 and window_stride 20"):
        segmenter(inference="slide", window_size=16, window_stride=20)
    with pytest.raises(ValueError, match="window_stride"):
        slide_logits(Pointwise(3), torch.rand(1, 3, 40, 40), 3, 16, 17)


def test_dice_loss_hand_values() -> None:
    mask = torch.tensor([[[0, 0], [1, 255]]])
    perfect = torch.tensor([[[[50.0, 50.0], [-50.0, 0.0]], [[-50.0, -50.0], [50.0, 0.0]]]])
    assert float(dice_loss(perfect, mask, eps=0.0)) == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(1, 2, 2, 2)  # p = 0.5 everywhere: class 0 dice = 2*1/(1.5+2), class 1 = 2*0.5/(1.5+1)
    expected = 1 - (2 * 1.0 / 3.5 + 2 * 0.5 / 2.5) / 2
    assert float(dice_loss(uniform, mask, eps=0.0)) == pytest.approx(expected, rel=1e-6)


def test_validation_metrics_are_accumulated_over_the_whole_set() -> None:
    items = colour_batch(n=6)
    model = segmenter()
    loader = DataLoader(items, batch_size=4, collate_fn=collate)  # batches of 4 and 2
    metrics = pl.Trainer(**TRAINER_KW).validate(model, loader, verbose=False)[0]
    model.eval()
    with torch.no_grad():
        preds = [model(collate([i])["image"]).argmax(1)[0].numpy() for i in items]
    p = np.concatenate([a.ravel() for a in preds])
    t = np.concatenate([i["mask"].numpy().ravel() for i in items])
    p, t = p[t != 255], t[t != 255]
    ious = [np.sum((p == c) & (t == c)) / np.sum((p == c) | (t == c)) for c in range(3) if np.sum((p == c) | (t == c))]
    assert metrics["val/miou"] == pytest.approx(float(np.mean(ious)), abs=1e-6)
    assert metrics["val/pixel_acc"] == pytest.approx(float(np.mean(p == t)), abs=1e-6)
    assert {"val/iou/bg", "val/iou/a", "val/iou/b", "val/loss", "val/mean_acc"} <= set(metrics)


def test_training_raises_miou() -> None:
    items = colour_batch(n=8)
    loader = DataLoader(items, batch_size=4, collate_fn=collate)
    model = segmenter()
    before = pl.Trainer(**TRAINER_KW).validate(model, loader, verbose=False)[0]["val/miou"]
    trainer = pl.Trainer(max_epochs=15, num_sanity_val_steps=0, limit_val_batches=0, **TRAINER_KW)
    trainer.fit(model, loader)
    after = pl.Trainer(**TRAINER_KW).validate(model, loader, verbose=False)[0]["val/miou"]
    assert after > max(0.9, before)


def test_predictions_are_cropped_to_the_content_and_resized_to_the_original() -> None:
    model = segmenter().eval()
    image = torch.zeros(1, 3, 32, 32)
    image[0, 1, :, :10] = 5.0  # left part 'a'-coloured, rest background-ish
    batch = {"image": image, "path": ["x.jpg"], "meta": [{"orig_size": (45, 60), "content_size": (24, 32)}]}
    with torch.no_grad():
        (row,) = model.predict_step(batch, 0)
        logits = model(image)[:, :, :24, :32]
    expected = F.interpolate(logits, size=(45, 60), mode="bilinear", align_corners=False).argmax(1)[0]
    assert row["mask"].shape == (45, 60) and row["mask"].dtype == torch.uint8
    assert torch.equal(row["mask"].long(), expected)
    assert set(row["classes"]) == {model.class_names[c] for c in expected.unique().tolist()}
    assert sum(row["pixels"].values()) == 45 * 60


def test_class_count_checks() -> None:
    with pytest.raises(ValueError, match="num_classes or class_names"):
        PointwiseSegmenter(backbone=None)
    with pytest.raises(ValueError, match="class_weights"):
        segmenter(class_weights=[1.0, 2.0])
