"""lit-vision against a plain PyTorch loop: same model, data and recipe, in the same run.

    .venv/bin/python benchmarks/classification_throughput.py [--epochs 10] [--repeats 1]

Both sides train torchvision's ResNet-18 on the embedded digits with the quickstart recipe (32 px,
batch 64, AdamW 2e-3, weight decay 0.05 off norms and biases, label smoothing 0.1, per-step cosine,
crop scale 0.85-1) through the same DataModule loaders, so the difference
is the framework: Lightning's loop, our task (metrics, logging) and callbacks. Reported per side:
training images/s (time inside training epochs only), wall time of the whole fit (with validation),
final validation top-1. Results are recorded in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
import torchvision

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lit_vision.cli import run_cli  # noqa: E402
from lit_vision.data import DigitsDataModule  # noqa: E402

QUICKSTART = REPO / "experiments" / "classification" / "quickstart.yaml"


class TrainTimer(pl.Callback):
    """Accumulates time spent in training epochs (validation excluded) and images seen."""

    def __init__(self) -> None:
        self.train_time = 0.0
        self.images = 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += batch["image"].shape[0]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_time += time.perf_counter() - self._t


def plain_loop(epochs: int, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)
    data = DigitsDataModule(batch_size=64, num_workers=0)
    data.setup("fit")
    model = torchvision.models.resnet18(num_classes=10)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=2e-3,
                            weight_decay=0.05)
    steps = epochs * len(data.train_dataloader())
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    train_time, images, t0 = 0.0, 0, time.perf_counter()
    for _ in range(epochs):
        model.train()
        t = time.perf_counter()
        for batch in data.train_dataloader():
            loss = F.cross_entropy(model(batch["image"]), batch["label"], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            images += batch["label"].shape[0]
        train_time += time.perf_counter() - t
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for batch in data.val_dataloader():
                correct += (model(batch["image"]).argmax(1) == batch["label"]).sum().item()
                total += batch["label"].shape[0]
    wall = time.perf_counter() - t0
    return {"img_s": images / train_time, "wall_s": wall, "val_acc1": correct / total}


def lit_vision(epochs: int, seed: int) -> dict[str, float]:
    timer = TrainTimer()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cli = run_cli(["--config", str(QUICKSTART), f"--trainer.max_epochs={epochs}", f"--seed_everything={seed}",
                       f"--trainer.default_root_dir={tmp}", f"--trainer.logger.init_args.save_dir={tmp}",
                       "--trainer.enable_progress_bar=false"], run=False)
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, cli.datamodule)
        wall = time.perf_counter() - t0
    return {"img_s": timer.images / timer.train_time, "wall_s": wall,
            "val_acc1": float(cli.trainer.callback_metrics["val/acc1"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    rows = []
    for r in range(args.repeats):
        for name, fn in (("plain PyTorch loop", plain_loop), ("lit-vision (quickstart.yaml)", lit_vision)):
            res = fn(args.epochs, seed=r)
            rows.append((name, res))
            print(f"{name:<30} {res['img_s']:7.1f} train img/s  {res['wall_s']:6.1f} s wall  "
                  f"val top-1 {res['val_acc1']:.4f}", flush=True)
    plain = [r for n, r in rows if n.startswith("plain")]
    lit = [r for n, r in rows if n.startswith("lit")]
    ratio = sum(r["img_s"] for r in lit) / sum(r["img_s"] for r in plain)
    wall = sum(r["wall_s"] for r in lit) / sum(r["wall_s"] for r in plain)
    print(f"ratio lit-vision / plain: throughput {ratio:.3f}, wall time {wall:.3f}")
    assert math.isfinite(ratio)


if __name__ == "__main__":
    main()
