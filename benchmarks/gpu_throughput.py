"""The GPU path in one run: ResNet-50 training img/s, a plain PyTorch loop against lit_vision, plus two recipes.

    .venv/bin/python benchmarks/gpu_throughput.py [--budget-s 480] [--batch-size 256] [--workers 16] \
        [--compile both|on|off] [--output benchmarks/results/gpu_throughput.json]
    .venv/bin/python benchmarks/gpu_throughput.py --device cpu --smoke    # tiny sizes: the script still runs

The rows are built in ``gpu_throughput_rows.py``, next to this file.

Every row trains with bf16-mixed autocast (``--bf16 off`` in the CPU smoke run), ``channels_last`` weights, cuDNN
benchmark and fused SGD (lr 0.1, momentum 0.9, Nesterov, weight decay 1e-4, per-step cosine), as docs/gpu.md says:

* **synthetic**: torchvision's ``resnet50`` in a hand-written loop on one batch kept on the device, against
  ``ImageClassifier(backbone="tv/resnet50", channels_last=True)`` in a Lightning ``Trainer`` fed the same
  device batch (no loader on either side: the framework's own cost). Eager, then ``torch.compile``d.
* **real JPEGs**: a temporary ImageFolder of JPEG photos (``--photos``, default the VOC sample's 100 photos,
  linked many times over), RandomResizedCrop 224 + flip, ``--workers`` loader processes. Plain: torchvision's
  ``ImageFolder`` with the reference PIL preset. lit_vision: ``ImageFolderDataModule`` as is, with
  ``normalize_on_device``, and ``DeviceDecodeImageFolderDataModule`` (nvJPEG decode on the GPU).
* **recipes**: the models of experiments/detection/faster_rcnn_r50_fpn_coco.yaml and
  experiments/segmentation/deeplabv3_r50_voc.yaml (random weights, the recipe's batch size per device) on
  synthetic batches of the recipe's training size (800x1067 images; 480x480 crops), through a ``Trainer``.

img/s counts the steps after the warm-up (10 steps; 5 for the JPEG and recipe rows: cuDNN autotuning and compilation
happen there), timed between two device synchronisations by the loop itself or, in Lightning, a callback; peak
memory is ``torch.cuda.max_memory_allocated`` per row. Each row stops early when its share of ``--budget-s`` is
spent, and a row that cannot fit in what is left is skipped (the table says so): the run ends inside the budget.
Without a CUDA device (``--device cuda``, the default) the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

import torch
from gpu_throughput_rows import (
    REPO,
    Clock,
    Row,
    Sizes,
    detection_row,
    generated_photos,
    jpeg_folder,
    jpeg_rows,
    segmentation_row,
    synthetic_rows,
)

VOC_PHOTOS = "shared/data/voc_sample/VOCdevkit/VOC2012/JPEGImages"

# ------------------------------------------------------------------------------------------------ report
def ratios(rows: list[Row]) -> None:
    """lit_vision / plain img/s on each part that has both (the first lit_vision row of a part)."""
    for part in dict.fromkeys(r.part for r in rows):
        plain = next((r for r in rows if r.part == part and r.side == "plain PyTorch" and r.img_s), None)
        for row in (r for r in rows if r.part == part and r.side == "lit_vision" and r.img_s):
            if plain is not None:
                row.extra["ratio"] = row.img_s / plain.img_s


def table(rows: list[Row]) -> str:
    lines = ["| part | side | data | batch | img/s | lit/plain | peak GiB | steps | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        img_s = f"{r.img_s:,.1f}" if r.img_s and math.isfinite(r.img_s) else "-"
        ratio = f"{r.extra['ratio']:.3f}" if "ratio" in r.extra else ""
        peak = f"{r.peak_gib:.1f}" if r.peak_gib is not None else "-"
        lines.append(f"| {r.part} | {r.side} | {r.data} | {r.batch} | {img_s} | {ratio} | {peak} | {r.steps} | "
                     f"{r.note} |")
    return "\n".join(lines)


def goals(rows: list[Row], arch: str) -> dict[str, Any]:
    """The issue's two goals against the synthetic rows: lit/plain >= 0.97 (each), ResNet-50 >= 4,400 img/s."""
    synthetic = [r for r in rows if r.part.startswith("synthetic") and r.img_s]
    ratios_ = [r.extra["ratio"] for r in synthetic if "ratio" in r.extra]
    lit = [r.img_s for r in synthetic if r.side == "lit_vision"]
    return {"lit_over_plain_synthetic_min": min(ratios_) if ratios_ else None, "lit_over_plain_goal": 0.97,
            f"lit_{arch}_img_s_best": max(lit) if lit else None, "resnet50_img_s_goal_h100_h200": 4400}


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --smoke: checks the script)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, 1-2 timed steps a row: ~1 min on a CPU")
    parser.add_argument("--budget-s", type=float, default=480.0, help="the whole run's time budget (seconds)")
    parser.add_argument("--batch-size", type=int, default=None, help="ResNet-50 batch (default 256; smoke 2)")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: CPU count, <= 16)")
    parser.add_argument("--compile", choices=("both", "on", "off"), default=None,
                        help="synthetic rows eager and/or torch.compile'd (default: both on CUDA, off on CPU)")
    parser.add_argument("--bf16", choices=("on", "off"), default=None,
                        help="bf16-mixed autocast (default: on, but off in the CPU smoke run)")
    parser.add_argument("--photos", type=Path, default=None, help="folder of JPEG photos (default: the VOC sample)")
    parser.add_argument("--skip", nargs="*", default=[], choices=("synthetic", "jpeg", "detection", "segmentation"))
    parser.add_argument("--output", type=Path, default=None, help="write the rows and settings as JSON here")
    return parser.parse_args(argv)


def find_photos(given: Path | None) -> Path | None:
    candidates = [given] if given else [REPO.parent / VOC_PHOTOS, REPO / VOC_PHOTOS]
    return next((c for c in candidates if c and c.is_dir() and any(c.glob("*.jpg"))), None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device here, nothing measured. Run it on a GPU machine, or check the "
              "script with --device cpu --smoke.")
        return 0
    clock = Clock(args.budget_s)
    sizes = Sizes.smoke() if args.smoke else Sizes()
    if args.batch_size:
        sizes.batch = args.batch_size
    if args.bf16:
        sizes.bf16 = args.bf16 == "on"
    workers = args.workers if args.workers is not None else (0 if args.smoke else min(16, os.cpu_count() or 1))
    compile_mode = args.compile or ("both" if device.type == "cuda" else "off")
    torch.backends.cudnn.benchmark = True
    if args.smoke and device.type == "cpu":
        torch.set_num_threads(1)  # batches of 2: threads only spin against each other (10x slower on a busy CI box)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"gpu_throughput on {name}: budget {args.budget_s:.0f} s, {sizes.arch} batch {sizes.batch}, {workers} "
          f"workers, compile {compile_mode}, bf16 {'on' if sizes.bf16 else 'off'}")
    rows: list[Row] = []

    def run(label: str, need_s: float, make: Callable[[float], list[Row]]) -> None:
        """Run a part if ``need_s`` seconds are left; its rows measure for at most their share of the rest."""
        if clock.left() < need_s:
            rows.append(Row(label, "-", "-", 0, note="skipped: time budget"))
            return
        cap = min(sizes.row_cap_s, max(1.0, (clock.left() - need_s) / 4))
        start = time.perf_counter()
        rows.extend(make(cap))
        print(f"  {label}: {time.perf_counter() - start:.0f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu_throughput_") as tmp:
        if "synthetic" not in args.skip and compile_mode in ("both", "off"):
            run("synthetic", 30, lambda cap: synthetic_rows(device, sizes, False, cap))
        if "jpeg" not in args.skip:
            photos_dir = None if args.smoke else find_photos(args.photos)
            photos = sorted(photos_dir.glob("*.jpg")) if photos_dir else generated_photos(Path(tmp) / "photos")
            count = sizes.batch * (sizes.jpeg_warmup + sizes.jpeg_steps)
            root = jpeg_folder(Path(tmp) / "jpegs", photos, count)
            source = str(photos_dir) if photos_dir else "generated 500x375 JPEGs"
            print(f"  real JPEGs: {count} files linked to {len(photos)} photos ({source})")
            run("real JPEGs", 60, lambda cap: jpeg_rows(device, sizes, root, workers, cap, clock, 20))
            for r in rows:
                if r.part.startswith("real JPEGs"):
                    r.extra["photos"] = source
        if "detection" not in args.skip:
            run("Faster R-CNN R50-FPN recipe", 40, lambda cap: [detection_row(device, sizes, cap)])
        if "segmentation" not in args.skip:
            run("DeepLabv3 R50 OS8 recipe", 40, lambda cap: [segmentation_row(device, sizes, cap)])
        if "synthetic" not in args.skip and compile_mode in ("both", "on"):
            run("synthetic, compiled", 150 if device.type == "cuda" else 30,
                lambda cap: synthetic_rows(device, sizes, True, cap))
    ratios(rows)
    elapsed = args.budget_s - clock.left()
    report = table(rows)
    summary = goals(rows, sizes.arch)
    print(f"\n{report}\n\ntotal {elapsed:.0f} s on {name}; goals: {json.dumps(summary)}")
    if args.output:
        import lightning
        import torchvision

        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({
            "date": date.today().isoformat(), "device": name, "smoke": args.smoke, "elapsed_s": round(elapsed, 1),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "lightning": lightning.__version__,
            "sizes": asdict(sizes), "workers": workers, "compile": compile_mode, "rows": [asdict(r) for r in rows],
            "goals": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
