"""The framework tax, end to end: ``lit-vision fit`` on the digits quickstart against the same training written
as a plain PyTorch script and as timm's ``train.py``, each a fresh process, in the same run.

    .venv/bin/python benchmarks/framework_tax.py --repeats 3 --timm-train /tmp/timm_train/train.py \\
        --output benchmarks/results/framework_tax.json
    # before/after in one run: an earlier revision (git worktree) with the venv it needs, and this checkout
    python benchmarks/framework_tax.py --lit "before=OLD_VENV/bin/python:/tmp/wt_before" \\
        --lit "after=NEW_VENV/bin/python:." --timm-train /tmp/timm_train/train.py
    # a variant with extra arguments: the same checkout without the non-finite guard
    python benchmarks/framework_tax.py --lit "lit-vision=$PWD/.venv/bin/python:$PWD" \\
        --lit "guard off=$PWD/.venv/bin/python:$PWD" --lit-args "guard off=--model.init_args.nonfinite off"

* plain: ``benchmarks/framework_tax_plain.py`` (torch + torchvision only; no checkpoint, log or progress bar), as a
  researcher writes it (torch's default ``foreach`` AdamW); plain-fused: the same with ``AdamW(fused=True)``, the
  kernel lit-vision picks, so that the ratio to it is the framework's own cost.
* lit-vision: ``lit-vision fit --config experiments/classification/quickstart.yaml`` exactly as a user runs it
  (CSV logger, best and last checkpoints, learning-rate monitor, progress bar, data checks), with a probe
  callback added on the command line that records the time of the first optimizer step, the time inside
  training epochs (validation excluded) and the final validation top-1.
* timm (optional, ``--timm-train``: timm's ``train.py`` from its repository, kept outside this repo): the same
  model, data tree, optimiser, schedule, smoothing, crop scale and normalisation, ``--device cpu``, no workers.

Wall time is measured by this script from starting the child to its exit (Python start-up and imports
included). Repeats interleave the sides so machine noise hits all alike; the table reports medians.
The digits tree is written once beforehand (to a temporary ``$LIT_VISION_CACHE``), outside the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PLAIN = Path(__file__).with_name("framework_tax_plain.py")
CLI_CODE = "import sys; from lit_vision.cli import main; sys.argv = ['lit-vision', *sys.argv[1:]]; main()"
PROBE_MODULE = "_framework_tax_probe"
PROBE_SOURCE = '''import json, os, time
from lightning.pytorch import Callback


class Probe(Callback):
    """First optimizer step, time inside training epochs (up to the last batch's end) and images, the val metric."""

    def __init__(self):
        self.first_step, self.train_time, self.images = None, 0.0, 0

    def on_train_epoch_start(self, trainer, pl_module):
        self._t = time.perf_counter()
        self._last = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.images += batch["image"].shape[0]
        self._last = time.perf_counter()
        if self.first_step is None:
            self.first_step = time.time()

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.training and self._last is not None:
            self.train_time += self._last - self._t
            self._last = None

    def on_train_epoch_end(self, trainer, pl_module):
        if self._last is not None:  # no validation this epoch
            self.train_time += self._last - self._t

    def on_fit_end(self, trainer, pl_module):
        with open(os.environ["FRAMEWORK_TAX_PROBE"], "w") as f:
            key = os.environ.get("FRAMEWORK_TAX_METRIC", "val/acc1")  # the segmentation benchmark: val/miou
            json.dump({"first_step": self.first_step, "train_time": self.train_time, "train_images": self.images,
                       key.replace("/", "_"): float(trainer.callback_metrics[key])}, f)
'''


def run(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[float, float]:
    """Run ``cmd``; returns (start time.time(), wall seconds). A failure prints the log's tail and stops."""
    start, t0 = time.time(), time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{cmd[:3]} failed ({proc.returncode}):\n" + "".join(log.read_text().splitlines(True)[-30:]))
    return start, wall


def timm_best_top1(output: Path) -> float:
    """The last epoch's eval top-1 (percent) from timm's summary.csv, as a fraction."""
    summaries = sorted(output.rglob("summary.csv"))
    lines = summaries[-1].read_text().strip().splitlines()
    header, last = lines[0].split(","), lines[-1].split(",")
    return float(last[header.index("eval_top1")]) / 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timm-train", type=Path, default=None, help="timm's train.py (not part of this repo)")
    parser.add_argument("--sides", nargs="+", default=["plain", "plain-fused", "lit-vision", "timm"])
    parser.add_argument("--lit", action="append", default=[], metavar="NAME=PYTHON[:REPO]",
                        help="lit-vision variants (default: this venv and checkout); e.g. a git worktree of an "
                             "earlier revision run with another venv, for before/after in one run")
    parser.add_argument("--lit-args", action="append", default=[], metavar="NAME=ARGS",
                        help="extra command-line arguments for the lit-vision variant NAME (shell-quoted), e.g. "
                             "\"guard off=--model.init_args.nonfinite off\"")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    extra = {name: shlex.split(rest) for name, _, rest in (spec.partition("=") for spec in args.lit_args)}
    if args.timm_train is None and "timm" in args.sides:
        args.sides.remove("timm")
    variants = {"lit-vision": (sys.executable, str(REPO))}
    if args.lit:
        variants = {}
        for spec in args.lit:
            name, _, rest = spec.partition("=")
            python, _, repo = rest.partition(":")
            variants[name] = (python, repo or str(REPO))
    if "lit-vision" in args.sides:
        i = args.sides.index("lit-vision")
        args.sides[i:i + 1] = list(variants)
    work = Path(tempfile.mkdtemp(prefix="framework_tax_"))
    env = {**os.environ, "LIT_VISION_CACHE": str(work / "cache"), "FRAMEWORK_TAX_PROBE": str(work / "probe.json")}
    (work / f"{PROBE_MODULE}.py").write_text(PROBE_SOURCE)
    subprocess.run([sys.executable, "-c", "from lit_vision.data.embedded.digits import write_digits; "
                    "print(write_digits())"], env={**env, "PYTHONPATH": str(REPO)}, check=True, capture_output=True)
    tree = next((work / "cache").glob("digits_*"))
    runs: list[dict[str, Any]] = []
    for r in range(args.repeats):
        for side in args.sides:
            out = work / f"{side}-{r}"
            out.mkdir()
            result = out / "result.json"
            if side in ("plain", "plain-fused"):
                start, wall = run([sys.executable, str(PLAIN), "--data", str(tree), "--epochs", str(args.epochs),
                                   "--seed", str(r), "--output", str(result)] + ["--fused"] * (side == "plain-fused"),
                                  env, out, out / "log.txt")
                res = json.loads(result.read_text())
            elif side in variants:
                python, repo = variants[side]
                path = os.pathsep.join([str(work), repo, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
                start, wall = run([python, "-c", CLI_CODE, "fit", "--config",
                                   str(Path(repo) / "experiments/classification/quickstart.yaml"),
                                   f"--trainer.max_epochs={args.epochs}", f"--seed_everything={r}",
                                   f"--trainer.logger.init_args.save_dir={out}",
                                   f"--trainer.callbacks+={PROBE_MODULE}.Probe", *extra.get(side, [])],
                                  {**env, "FRAMEWORK_TAX_PROBE": str(result), "PYTHONPATH": path}, out,
                                  out / "log.txt")
                res = json.loads(result.read_text())
            else:
                start, wall = run([sys.executable, str(args.timm_train), "--data-dir", str(tree),
                                   "--train-split", "train", "--val-split", "val", "--model", "resnet18",
                                   "--num-classes", "10", "--img-size", "32", "--mean", "0.308", "0.308", "0.308",
                                   "--std", "0.349", "0.349", "0.349", "--crop-pct", "0.95", "--scale", "0.85", "1",
                                   "--hflip", "0", "--color-jitter", "0", "--smoothing", "0.1", "--opt", "adamw",
                                   "--lr", "2e-3", "--weight-decay", "0.05", "--sched", "cosine",
                                   "--sched-on-updates", "--warmup-epochs", "0", "--epochs", str(args.epochs),
                                   "-b", "64", "--workers", "0", "--device", "cpu", "--seed", str(r),
                                   "--output", str(out), "--log-interval", "1000"], env, out, out / "log.txt")
                res = {"val_acc1": timm_best_top1(out)}
            row = {"side": side, "repeat": r, "wall": wall, **res}
            if res.get("first_step"):
                row["to_first_step"] = res["first_step"] - start
            if res.get("train_time"):
                row["train_img_s"] = res["train_images"] / res["train_time"]
            runs.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()
                              if not isinstance(v, list)}), flush=True)

    def med(side: str, key: str) -> float | None:
        values = [r[key] for r in runs if r["side"] == side and key in r]
        return statistics.median(values) if values else None

    refs = [r for r in ("plain", "plain-fused") if r in args.sides]
    lines = ["| side | wall, median (runs) | " + " | ".join(f"/ {r}" for r in refs) + " | first step after start "
             "| train img/s | " + " | ".join(f"/ {r}" for r in refs) + " | val top-1 (runs) |",
             "|---" * (5 + 2 * len(refs)) + "|"]
    for side in args.sides:
        walls = ", ".join(f"{r['wall']:.1f}" for r in runs if r["side"] == side)
        accs = ", ".join(f"{r['val_acc1']:.4f}" for r in runs if r["side"] == side)
        wall, ips, first = med(side, "wall"), med(side, "train_img_s"), med(side, "to_first_step")
        wall_ratios = " | ".join(f"{wall / med(r, 'wall'):.3f}" for r in refs)
        ips_ratios = " | ".join(f"{ips / med(r, 'train_img_s'):.3f}" if ips else "-" for r in refs)
        lines.append(f"| {side} | {wall:.1f} s ({walls}) | {wall_ratios} | " + (f"{first:.1f} s" if first else "-")
                     + " | " + (f"{ips:.1f}" if ips else "-") + f" | {ips_ratios} | {accs} |")
    print("\n".join(lines))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"settings": vars(args) | {"cpu": platform.processor() or platform.machine(),
                                                                      "cpu_count": os.cpu_count()},
                                           "runs": runs, "table": lines}, indent=2, default=str))


if __name__ == "__main__":
    main()
