"""What ValidationPictures adds to an epoch of the digits and detection quickstarts (issue 10: under 2 %).

    .venv/bin/python benchmarks/pictures_overhead.py [--recipes digits detection] [--epochs 2] [--repeats 2] \
        [--output benchmarks/results/pictures_overhead.json]

Each recipe's model, data and optimizer (as in ``experiments/*/quickstart.yaml``, CSV logger) train
``--epochs`` full epochs (training + validation) with and without the callback, alternating the order
every repeat, in one process. Reported per recipe:

* ``epoch_s``: median time of an epoch (from the start of training to the end of its validation, pictures
  included), first epoch left out (warm-up), with and without; their ratio is what the user sees, but on a
  shared 2-core machine it carries a few percent of noise either way;
* ``callback_s_per_epoch``: the time spent inside the callback's hooks per epoch (collecting pictures during
  validation, rendering the panels, writing the PNGs), timed around each hook: the overhead itself,
  without the noise of the rest of the epoch. ``overhead`` = that / the epoch time without the callback;
* ``fit_end_s``: the one-time cost at the end of ``fit`` (matplotlib figures of the per-class analysis).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lit_vision.callbacks import LRWarmup, ValidationPictures  # noqa: E402
from lit_vision.data import DigitsDataModule  # noqa: E402
from lit_vision.data.detection import ShapesDetectionDataModule  # noqa: E402
from lit_vision.tasks import ImageClassifier, ObjectDetector  # noqa: E402


class EpochTimer(pl.Callback):
    """Start of each training epoch to the end of its validation."""

    def __init__(self) -> None:
        self.epochs: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.epochs.append(time.perf_counter() - self._start)


class TimedPictures(ValidationPictures):
    """ValidationPictures with a stopwatch around every hook it implements."""

    HOOKS = ("on_validation_epoch_start", "on_validation_batch_end", "on_validation_end")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.per_epoch: list[float] = []
        self.fit_end = 0.0
        self._spent = 0.0
        for name in self.HOOKS:
            setattr(self, name, self._timed(getattr(super(), name), name == "on_validation_end"))

    def _timed(self, hook: Any, closes_epoch: bool) -> Any:
        def run(trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
            t0 = time.perf_counter()
            hook(trainer, *args, **kwargs)
            self._spent += time.perf_counter() - t0
            if closes_epoch and not trainer.sanity_checking:
                self.per_epoch.append(self._spent)
            if closes_epoch:
                self._spent = 0.0
        return run

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        t0 = time.perf_counter()
        super().on_fit_end(trainer, pl_module)
        self.fit_end = time.perf_counter() - t0


def build(recipe: str) -> tuple[pl.LightningDataModule, pl.LightningModule, list[pl.Callback]]:
    torch.manual_seed(0)
    if recipe == "digits":
        data = DigitsDataModule(batch_size=64, scale_range=(0.85, 1.0), crop_pct=0.95, num_workers=0)
        model = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names, label_smoothing=0.1,
                                optimizer=functools.partial(torch.optim.AdamW, lr=2e-3, weight_decay=0.05))
        return data, model, []
    data = ShapesDetectionDataModule(scene_size=128, image_size=128, batch_size=8, num_workers=2)
    model = ObjectDetector(architecture={"class_path": "lit_vision.models.detection.YOLO",
                                         "init_args": {"neck_channels": 64}},
                           backbone="tv/resnet18", class_names=data.class_names, image_size=128,
                           optimizer=functools.partial(torch.optim.AdamW, lr=2e-3, weight_decay=1e-4))
    return data, model, [LRWarmup(warmup_steps=50)]


def run(recipe: str, pictures: bool, epochs: int, tmp: str) -> dict[str, Any]:
    data, model, callbacks = build(recipe)
    timer = EpochTimer()
    extra = [TimedPictures()] if pictures else []
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=CSVLogger(tmp, name=recipe),
                         callbacks=[timer, *callbacks, *extra], log_every_n_steps=10, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, data)
    out: dict[str, Any] = {"epoch_s": timer.epochs}
    if pictures:
        out |= {"callback_s": extra[0].per_epoch, "fit_end_s": extra[0].fit_end}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["digits", "detection"], choices=["digits", "detection"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "pictures_overhead.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"torch": torch.__version__, "machine": platform.machine(), "epochs": args.epochs,
                              "repeats": args.repeats, "recipes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            for r in range(args.repeats):
                for pictures in ((False, True) if r % 2 == 0 else (True, False)):
                    runs[pictures].append(run(recipe, pictures, args.epochs, tmp))
                    print(recipe, "pictures" if pictures else "plain", runs[pictures][-1], flush=True)
            without = statistics.median(e for x in runs[False] for e in x["epoch_s"][1:])
            with_ = statistics.median(e for x in runs[True] for e in x["epoch_s"][1:])
            callback = statistics.median(c for x in runs[True] for c in x["callback_s"])
            fit_end = statistics.median(x["fit_end_s"] for x in runs[True])
            result["recipes"][recipe] = {
                "epoch_s_without": without, "epoch_s_with": with_, "epoch_ratio": with_ / without,
                "callback_s_per_epoch": callback, "overhead": callback / without, "fit_end_s": fit_end,
                "runs": {"without": runs[False], "with": runs[True]}}
            print(json.dumps({k: v for k, v in result["recipes"][recipe].items() if k != "runs"}, indent=1))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
