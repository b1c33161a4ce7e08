"""What the non-finite guard costs per training step on the digits quickstart: guard off against on, same process.

    .venv/bin/python benchmarks/nonfinite_overhead.py [--steps 30] [--repeats 5] [--threads 2] \
        [--output benchmarks/results/nonfinite_overhead.json]

The quickstart's model, data and optimizer (ResNet-18, 32 px digits, batch 64, AdamW 2e-3, weight decay
0.05, label smoothing 0.1, per-step cosine; CSV logger every 10 steps as in the recipe, no validation, no
checkpoint) train ``--steps`` optimizer steps with ``model.nonfinite`` ``off`` (the code before the
guard), ``stop`` (the default) and ``skip`` (opt-in, one sync per step), alternating the order every repeat.
A step's time is the interval between two consecutive ``on_train_batch_start`` calls (data, forward,
backward, optimizer, every callback, the guard's reads); the first 3 steps of every run are left out.
Also timed in isolation: the guard's per-step device work (gradient norm check + loss flag) and a read.
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

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lit_vision.callbacks.nonfinite import _first_bad, _gradients_bad, _Step  # noqa: E402
from lit_vision.data import DigitsDataModule  # noqa: E402
from lit_vision.tasks import ImageClassifier  # noqa: E402

WARMUP = 3
MODES = ("off", "stop", "skip")


class StepTimer(pl.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.starts.append(time.perf_counter())

    def step_ms(self) -> list[float]:
        return [1e3 * (b - a) for a, b in zip(self.starts, self.starts[1:])][WARMUP:]


def run(mode: str, steps: int, data: DigitsDataModule, tmp: str) -> tuple[list[float], ImageClassifier, pl.Trainer]:
    torch.manual_seed(0)
    model = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names, label_smoothing=0.1,
                            optimizer=functools.partial(torch.optim.AdamW, lr=2e-3, weight_decay=0.05), nonfinite=mode)
    timer = StepTimer()
    trainer = pl.Trainer(accelerator="auto", devices=1, precision="32-true", max_steps=steps, limit_val_batches=0,
                         log_every_n_steps=10, logger=CSVLogger(tmp, name=mode), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, datamodule=data)
    return timer.step_ms(), model, trainer


def isolated_ms(model: ImageClassifier, trainer: pl.Trainer, n: int = 50) -> dict[str, float]:
    """Median ms of the per-step device work (grad check + loss flag), and of one read of 10 steps' flags."""
    optimizer = trainer.optimizers[0]
    loss = torch.tensor(2.3, device=model.device)

    def per_step() -> None:
        _gradients_bad(optimizer)
        torch.isfinite(loss).logical_not().any()

    def read() -> None:
        steps = [_Step(i, 0, i, None, loss, torch.isfinite(loss).logical_not().any(), _gradients_bad(optimizer))
                 for i in range(10)]
        _first_bad(steps)

    out = {}
    for name, fn in (("per_step_check_ms", per_step), ("read_10_steps_ms_incl_checks", read)):
        fn()
        times = []
        for _ in range(n):
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if model.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(1e3 * (time.perf_counter() - t))
        out[name] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else (platform.processor() or platform.machine())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {device}", flush=True)
    data = DigitsDataModule(batch_size=64, num_workers=0, scale_range=(0.85, 1.0), crop_pct=0.95)
    per_mode: dict[str, list[float]] = {m: [] for m in MODES}
    run_medians: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = MODES if r % 2 == 0 else MODES[::-1]
            for mode in order:
                times, model, trainer = run(mode, args.steps, data, tmp)
                per_mode[mode] += times
                run_medians[mode].append(statistics.median(times))
                print(f"repeat {r} {mode:<5} median {statistics.median(times):7.1f} ms/step", flush=True)
        isolated = isolated_ms(model, trainer)
    base = statistics.median(per_mode["off"])
    summary = {m: {"median_ms_per_step": statistics.median(per_mode[m]),
                   "ratio_to_off": statistics.median(per_mode[m]) / base,
                   "run_medians_ms": run_medians[m]} for m in MODES}
    print("\n| guard | median ms/step | ratio to off | run medians (ms) |\n|---|---|---|---|")
    for m in MODES:
        s = summary[m]
        print(f"| {m} | {s['median_ms_per_step']:.1f} | {s['ratio_to_off']:.3f} | "
              f"{', '.join(f'{x:.0f}' for x in s['run_medians_ms'])} |")
    print(f"isolated: per-step check {isolated['per_step_check_ms']:.2f} ms, "
          f"one read of 10 steps (with their checks) {isolated['read_10_steps_ms_incl_checks']:.2f} ms")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"torch": torch.__version__, "device": device, "steps": args.steps,
                                           "repeats": args.repeats, "summary": summary, "isolated": isolated},
                                          indent=1))


if __name__ == "__main__":
    main()
