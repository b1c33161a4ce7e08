"""The task's optimizer: torch's fused kernel where it applies, the recipe's own choice kept, the same update."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lit_vision.cli import run_cli
from lit_vision.tasks import ImageClassifier
from lit_vision.tasks.optim import build_optimizer, can_fuse

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "classification" / "quickstart.yaml"


def _groups(*params: torch.Tensor) -> list[dict]:
    return [{"params": list(params)}]


def _quickstart_optimizer(tmp_path: Path, monkeypatch, *args: str) -> torch.optim.Optimizer:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIT_VISION_CACHE", str(tmp_path / "cache"))
    cli = run_cli(["--config", str(QUICKSTART), *args], run=False)
    cli.model.trainer = SimpleNamespace(estimated_stepping_batches=10)  # what the default cosine schedule reads
    return cli.model.configure_optimizers()["optimizer"]


def test_recipe_optimizer_is_fused_unless_the_recipe_chooses(tmp_path: Path, monkeypatch) -> None:
    opt = _quickstart_optimizer(tmp_path, monkeypatch)
    assert type(opt) is torch.optim.AdamW and opt.defaults["fused"] is True
    assert opt.defaults["lr"] == 2e-3 and opt.defaults["weight_decay"] == 0.05  # the YAML's init_args kept
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]  # and the no-decay group
    opt = _quickstart_optimizer(tmp_path, monkeypatch, "--model.init_args.optimizer.init_args.fused=false")
    assert opt.defaults["fused"] is False and opt.defaults["foreach"] is None
    opt = _quickstart_optimizer(tmp_path, monkeypatch, "--model.init_args.optimizer.init_args.foreach=true")
    assert not opt.defaults["fused"] and opt.defaults["foreach"] is True


def test_default_sgd_is_fused_on_the_cpu() -> None:
    model = ImageClassifier(backbone="tv/resnet18", num_classes=3)
    model.trainer = SimpleNamespace(estimated_stepping_batches=10)
    opt = model.configure_optimizers()["optimizer"]
    assert type(opt) is torch.optim.SGD and opt.defaults["fused"] is True
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9 and opt.defaults["lr"] == 0.1


def test_what_cannot_be_fused_is_built_as_asked() -> None:
    cpu = nn.Parameter(torch.zeros(3))
    meta = nn.Parameter(torch.zeros(3, device="meta"))
    assert can_fuse(torch.optim.AdamW, _groups(cpu)) and can_fuse(torch.optim.Adagrad, _groups(cpu))
    assert not can_fuse(torch.optim.AdamW, _groups(meta))  # no fused kernel for that device type
    assert not can_fuse(torch.optim.AdamW, _groups(cpu, meta))
    assert not can_fuse(torch.optim.AdamW, [])
    assert not can_fuse(torch.optim.RMSprop, _groups(cpu))  # no fused implementation at all

    class OwnStep(torch.optim.AdamW):
        def step(self, closure=None):  # may well ignore `fused`
            return super().step(closure)

    class SameStep(torch.optim.AdamW):
        pass

    assert not can_fuse(OwnStep, _groups(cpu)) and can_fuse(SameStep, _groups(cpu))
    # A callable that is not a partial of a class (Python code of the user's own) is called as it is.
    assert build_optimizer(lambda g: torch.optim.AdamW(g, lr=0.1), _groups(cpu)).defaults["fused"] is None
    assert build_optimizer(functools.partial(torch.optim.RMSprop, lr=0.1), _groups(cpu)).defaults["foreach"] is None
    assert build_optimizer(functools.partial(torch.optim.Adam, lr=0.1), _groups(cpu)).defaults["fused"] is True
    differentiable = functools.partial(torch.optim.Adam, lr=0.1, differentiable=True)
    assert build_optimizer(differentiable, _groups(cpu)).defaults["fused"] is None


@pytest.mark.parametrize("make", [
    functools.partial(torch.optim.AdamW, lr=2e-3, weight_decay=0.05),
    functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4),
], ids=["adamw", "sgd-nesterov"])
def test_fused_update_equals_torchs_default_one(make: functools.partial) -> None:
    """Twenty steps of a small CNN: the fused optimizer the task builds against torch's own default (foreach). No
    conv bias before the BatchNorm: its gradient is rounding noise, which Adam would scale up to full-size steps."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 5))
    reference = copy.deepcopy(net)
    fused = build_optimizer(make, [{"params": list(net.parameters())}])
    default = make(reference.parameters())
    assert fused.defaults["fused"] is True and not default.defaults["fused"]
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 5, (16,))
    for _ in range(20):
        for model, opt in ((net, fused), (reference, default)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(net.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert max((a - b).abs().max() for a, b in zip(net.parameters(), reference.parameters())) > 0  # not the same path


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_with_gradient_clipping_trains_with_an_unfused_optimizer(precision: str) -> None:
    """Lightning refuses to clip under mixed precision for an optimizer that unscales by itself (the fused ones):
    the YOLO recipes (bf16, clipped) stopped at their first step with the default fused SGD."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(3, 32, 32, generator=g), "label": i % 3} for i in range(8)]
    model = ImageClassifier(backbone="tv/resnet18", num_classes=3)
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, precision=precision, gradient_clip_val=1.0, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(model, DataLoader(data, batch_size=4))
    assert trainer.global_step == 2 and trainer.optimizers[0].defaults["fused"] is None
    unclipped = pl.Trainer(accelerator="cpu", max_steps=1, precision=precision, logger=False,
                           enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    unclipped.fit(ImageClassifier(backbone="tv/resnet18", num_classes=3), DataLoader(data, batch_size=4))
    assert unclipped.optimizers[0].defaults["fused"] is True  # without clipping the fused kernel stays
