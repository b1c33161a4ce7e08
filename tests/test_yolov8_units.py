"""The YOLOv8 recipes' optimizer settings make YOLOv8's own updates, in our loss units.

Ultralytics multiplies its detection loss by the images of each optimizer step (``v8DetectionLoss`` returns
``loss * batch``; with ``nbs=64`` it accumulates gradients to 64 images, and under DDP multiplies by the world size),
clips that gradient at norm 10 and steps SGD with lr 0.01, momentum 0.937 (Nesterov) and weight decay 5e-4 on
weights only. Our YOLO loss is the same sum divided by the same soft-target count, without the image factor, so
the recipes carry the converted numbers. The reference below is YOLOv8's update written out from those published
settings; the recipe's numbers must give the same parameters after a few steps, the clip engaged on some of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from lit_vision.tasks.base import split_decay_parameters

DETECTION = Path(__file__).resolve().parents[1] / "experiments" / "detection"
SGD_RECIPES = ["yolo_n_coco", "yolo_s_coco", "yolo_m_coco", "yolo_n_voc", "yolo_cspdarknet53_pan_coco",
               "yolo_cspdarknet53_pan_voc"]
YOLOV8 = {"lr": 0.01, "momentum": 0.937, "weight_decay": 5e-4, "clip": 10.0, "images_per_step": 64}


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _mean_loss(model: nn.Module, step: int) -> torch.Tensor:
    """A per-batch-mean loss whose gradient norm moves across the clip threshold from step to step."""
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(step))
    return (model(x) - 1.0).pow(2).mean() * (0.02, 1.0, 0.05, 2.0)[step]


def _run(model: nn.Module, lr: float, weight_decay: float, clip: float, loss_factor: float,
         steps: int = 4) -> list[float]:
    decay, no_decay = split_decay_parameters(model)
    opt = torch.optim.SGD([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                          momentum=YOLOV8["momentum"], nesterov=True, weight_decay=weight_decay)
    norms = []
    for step in range(steps):
        opt.zero_grad()
        (_mean_loss(model, step) * loss_factor).backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
        opt.step()
    return norms


@pytest.mark.parametrize("name", SGD_RECIPES)
def test_recipe_sgd_settings_make_yolov8s_updates(name: str) -> None:
    cfg = yaml.safe_load((DETECTION / f"{name}.yaml").read_text())
    opt = cfg["model"]["init_args"]["optimizer"]
    assert opt["class_path"] == "torch.optim.SGD"
    args = opt["init_args"]
    assert args["momentum"] == YOLOV8["momentum"] and args["nesterov"] is True
    assert cfg["trainer"].get("gradient_clip_algorithm", "norm") == "norm"
    assert cfg["model"]["init_args"].get("no_weight_decay_norm_bias", True)  # YOLOv8 decays weights only
    # 16 images per GPU on 4 GPUs (the recipes' stated global batch): 64 images a step, as YOLOv8's nbs.
    assert cfg["data"]["init_args"]["batch_size"] * 4 == YOLOV8["images_per_step"]

    torch.manual_seed(0)
    reference, ours = Tiny(), Tiny()
    ours.load_state_dict(reference.state_dict())
    ref_norms = _run(reference, YOLOV8["lr"], YOLOV8["weight_decay"], YOLOV8["clip"],
                     loss_factor=YOLOV8["images_per_step"])
    our_norms = _run(ours, args["lr"], args["weight_decay"], cfg["trainer"]["gradient_clip_val"], loss_factor=1.0)
    assert any(n > YOLOV8["clip"] for n in ref_norms) and any(n < YOLOV8["clip"] for n in ref_norms)
    torch.testing.assert_close([n * YOLOV8["images_per_step"] for n in our_norms], ref_norms, rtol=1e-5, atol=0)
    for (key, a), b in zip(reference.state_dict().items(), ours.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=key)


def test_the_literal_settings_would_not() -> None:
    """YOLOv8's numbers applied to our batch-mean loss (what the recipes carried before) move the weights far
    less (64x on an unclipped step; here, with two of four steps clipped, ~6x): the check above tells them apart."""
    torch.manual_seed(0)
    reference, literal = Tiny(), Tiny()
    literal.load_state_dict(reference.state_dict())
    start = {k: v.clone() for k, v in reference.state_dict().items()}
    _run(reference, YOLOV8["lr"], YOLOV8["weight_decay"], YOLOV8["clip"], loss_factor=YOLOV8["images_per_step"])
    _run(literal, YOLOV8["lr"], YOLOV8["weight_decay"], YOLOV8["clip"], loss_factor=1.0)
    moved = {k: (reference.state_dict()[k] - start[k]).norm() for k in start if start[k].is_floating_point()}
    moved_literal = {k: (literal.state_dict()[k] - start[k]).norm() for k in start if start[k].is_floating_point()}
    for key in ("net.0.weight", "net.1.weight", "net.3.weight"):
        assert moved[key] > 4 * moved_literal[key], key
