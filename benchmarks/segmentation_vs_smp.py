"""The segmentation quickstart, ``lit-vision fit`` against the same training written as a plain loop around
segmentation_models_pytorch's ``DeepLabV3Plus``, each a fresh process, in the same run.

    # smp kept outside this repo (never a dependency), e.g. pip install --no-deps --target /tmp/smp_pkg \\
    #     segmentation-models-pytorch   (its other requirements, timm and huggingface_hub, lit_vision has)
    .venv/bin/python benchmarks/segmentation_vs_smp.py --smp-path /tmp/smp_pkg --repeats 2 \\
        --output benchmarks/results/segmentation_vs_smp.json

* smp: ``benchmarks/segmentation_vs_smp_peer.py`` (torch + smp; no checkpoint, log or progress bar).
* lit-vision: ``lit-vision fit --config experiments/segmentation/quickstart.yaml`` as a user runs it (data
  checks, CSV log, best and last checkpoints, pictures), plus the probe callback of ``framework_tax.py``
  (first optimizer step, time inside training epochs, final ``val/miou``).
* lit-vision (smp's head): the same command with ``DeepLabV3Plus(decoder_convs=1, depthwise_norm=False)``: one
  separable conv in the decoder and no BatchNorm after the depthwise steps, as smp builds it (the recipe's
  default follows the paper's TF reference: two decoder convs, BN + ReLU after each depthwise step). This side
  tells the framework's cost from the networks' difference.
* bare networks: the three DeepLabV3+ networks built in this process, forward + backward + AdamW step on the
  same random batch, alternated.

Both sides use the same tree (written once beforehand to a temporary ``$LIT_VISION_CACHE``), the same epochs
and number of scenes (``--epochs``/``--num-train`` shorten the run on a slow machine: the ratios of a short
run include proportionally more start-up), and one data-loader worker, as the recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from framework_tax import CLI_CODE, PROBE_MODULE, PROBE_SOURCE, REPO, run  # noqa: E402

PEER = Path(__file__).with_name("segmentation_vs_smp_peer.py")
RECIPE = REPO / "experiments/segmentation/quickstart.yaml"
SMP_HEAD = {"decoder_convs": 1, "depthwise_norm": False}  # DeepLabV3Plus options that build smp's head layout
SIDES = ("smp", "lit-vision", "lit-vision (smp's head)")
BEFORE = "lit-vision (smp's head), before"


def bare_networks(smp_path: str, steps: int, repeats: int) -> dict[str, Any]:
    """img/s of forward + backward + AdamW step, batch 8 at 128 px, the two networks alternated."""
    sys.path.insert(0, smp_path)
    import segmentation_models_pytorch as smp
    import torch
    import torch.nn.functional as F

    from lit_vision.tasks import SemanticSegmenter

    torch.manual_seed(0)
    from lit_vision.models.segmentation import DeepLabV3Plus

    ours = SemanticSegmenter(architecture="deeplabv3plus", backbone="tv/resnet18", output_stride=16,
                             num_classes=4).model
    light = SemanticSegmenter(architecture=DeepLabV3Plus(**SMP_HEAD), backbone="tv/resnet18", output_stride=16,
                              num_classes=4).model
    peer = smp.DeepLabV3Plus(encoder_name="resnet18", encoder_weights=None, encoder_output_stride=16,
                             decoder_atrous_rates=(6, 12, 18), decoder_aspp_dropout=0.1, classes=4)
    x, y = torch.randn(8, 3, 128, 128), torch.randint(0, 4, (8, 128, 128))
    models = {"lit-vision": ours, "lit-vision (smp's head)": light, "smp": peer}
    result: dict[str, Any] = {}
    for name, model in models.items():
        model.train()
        result[name] = {"params": sum(p.numel() for p in model.parameters()), "img_s": []}
    optims = {name: torch.optim.AdamW(m.parameters()) for name, m in models.items()}

    def step(name: str, model: torch.nn.Module) -> None:
        out = model(x)
        F.cross_entropy(out["out"] if isinstance(out, dict) else out, y).backward()
        optims[name].step()
        optims[name].zero_grad(set_to_none=True)

    for name, model in models.items():
        step(name, model)  # warm-up: oneDNN primitives, optimizer state
    for _ in range(repeats):
        for name, model in models.items():
            t = time.perf_counter()
            for _ in range(steps):
                step(name, model)
            result[name]["img_s"].append(8 * steps / (time.perf_counter() - t))
    for name in result:
        result[name]["img_s_median"] = statistics.median(result[name]["img_s"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smp-path", required=True, help="a folder with segmentation_models_pytorch in it")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--num-train", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bare-steps", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    parser.add_argument("--before", default=None, metavar="REPO",
                        help="an earlier checkout (git worktree) run as one more side, with smp's head: before/after "
                             "in one run")
    parser.add_argument("--peer-fused", action="store_true",
                        help="smp's loop with AdamW(fused=True), the optimizer kernel lit-vision builds by default")
    args = parser.parse_args()
    if "smp" not in args.sides:
        parser.error("--sides must include smp: every ratio is to it")
    work = Path(tempfile.mkdtemp(prefix="segmentation_vs_smp_"))
    env = {**os.environ, "LIT_VISION_CACHE": str(work / "cache"), "FRAMEWORK_TAX_METRIC": "val/miou"}
    (work / f"{PROBE_MODULE}.py").write_text(PROBE_SOURCE)
    subprocess.run([sys.executable, "-c", "from lit_vision.data.embedded.shapes import write_shapes; "
                    f"write_shapes(num_train={args.num_train}, num_val=50, image_size=128, seed=0)"],
                   env={**env, "PYTHONPATH": str(REPO)}, check=True, capture_output=True)
    voc = next((work / "cache").glob("shapes_*")) / "voc/VOCdevkit/VOC2012"
    runs: list[dict[str, Any]] = []
    sides = list(args.sides) + ([BEFORE] if args.before else [])
    for r in range(args.repeats):
        for i, side in enumerate(sides):
            out = work / f"side{i}-{r}"
            out.mkdir()
            result = out / "result.json"
            if side == "smp":
                path = os.pathsep.join([args.smp_path, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
                start, wall = run([sys.executable, str(PEER), "--voc", str(voc), "--epochs", str(args.epochs),
                                   "--seed", str(r), "--output", str(result)] + ["--fused"] * args.peer_fused,
                                  {**env, "PYTHONPATH": path}, out,
                                  out / "log.txt")
            else:
                repo = Path(args.before) if side == BEFORE else REPO
                path = os.pathsep.join([str(work), str(repo), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
                start, wall = run([sys.executable, "-c", CLI_CODE, "fit", "--config",
                                   str(repo / RECIPE.relative_to(REPO)),
                                   f"--trainer.max_epochs={args.epochs}", f"--seed_everything={r}",
                                   f"--data.init_args.num_train={args.num_train}",
                                   f"--trainer.logger.init_args.save_dir={out}",
                                   f"--trainer.callbacks+={PROBE_MODULE}.Probe",
                                   *([] if side == "lit-vision" else
                                     ["--model.init_args.architecture", "DeepLabV3Plus",
                                      *(a for k, v in SMP_HEAD.items()
                                        for a in (f"--model.init_args.architecture.{k}", str(v).lower()))])],
                                  {**env, "FRAMEWORK_TAX_PROBE": str(result), "PYTHONPATH": path}, out,
                                  out / "log.txt")
            res = json.loads(result.read_text())
            row = {"side": side, "repeat": r, "wall": wall, **res, "to_first_step": res["first_step"] - start,
                   "train_img_s": res["train_images"] / res["train_time"]}
            runs.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()
                              if not isinstance(v, list)}), flush=True)
    bare = bare_networks(args.smp_path, args.bare_steps, args.repeats)

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["side"] == side)

    lines = ["| side | wall, median (runs) | / smp | first step after start | train img/s | / smp "
             "| bare network img/s | / smp | val mIoU (runs) |", "|---|---|---|---|---|---|---|---|---|"]
    for side in sides:
        walls = ", ".join(f"{r['wall']:.1f}" for r in runs if r["side"] == side)
        mious = ", ".join(f"{r['val_miou']:.3f}" for r in runs if r["side"] == side)
        b, b0 = bare[side.removesuffix(", before")]["img_s_median"], bare["smp"]["img_s_median"]
        lines.append(f"| {side} | {med(side, 'wall'):.1f} s ({walls}) | {med(side, 'wall') / med('smp', 'wall'):.3f} "
                     f"| {med(side, 'to_first_step'):.1f} s | {med(side, 'train_img_s'):.2f} | "
                     f"{med(side, 'train_img_s') / med('smp', 'train_img_s'):.3f} | {b:.2f} | {b / b0:.3f} "
                     f"| {mious} |")
    print("\n".join(lines))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"settings": vars(args) | {"cpu": platform.processor() or platform.machine(),
                                                                      "cpu_count": os.cpu_count()},
                                           "runs": runs, "bare_networks": bare, "table": lines},
                                          indent=2, default=str))


if __name__ == "__main__":
    main()
