"""lit_vision's YOLO against Ultralytics YOLOv8n on the same data: equal epochs, then equal wall time, one judge.

    .venv/bin/python benchmarks/yolo_vs_ultralytics.py --recipe experiments/detection/yolo_n_shapes.yaml \\
        --datasets shapes --epochs 30 --output benchmarks/results/yolo_vs_ultralytics_shapes.json

Both sides read one split of one dataset, written once into a work folder: ``shapes`` (the embedded shapes,
200 train / 50 val at 128 px), ``voc`` (``voc_sample``'s 100 photos split 80/20 by a seeded shuffle, 320 px) or
``people`` (one class, ``person``, on all 140 shared photos: ``voc_sample``'s and ``coco_minicoco``'s, 320 px),
as COCO JSON for lit_vision and as Ultralytics' YOLO layout (images, normalised ``labels/*.txt``, ``data.yaml``)
converted from that JSON. Same image size, epochs, batch, loader workers and torch threads; from scratch.

* lit_vision: ``lit-vision fit --config <run.yaml>``, where ``run.yaml`` is the recipe as the CLI resolves it
  (``--print_config``) with the data swapped for ``COCODetectionDataModule`` on the split (the recipe's
  augmentation arguments kept), the epochs, batch and workers set, and post-processing at conf 0.001 / NMS 0.7 /
  300 detections; then ``lit-vision predict`` from ``last.ckpt`` with ``CocoResultsWriter``.
* Ultralytics: ``benchmarks/yolo_vs_ultralytics_peer.py`` under ``--ultra-python`` (a scratch venv; never a
  dependency), ``yolov8n.yaml`` from scratch, ``nbs = batch``; ``last.pt`` validated at the same thresholds.

One judge: both sides' detections are scored by :func:`lit_vision.evaluation.coco.evaluate_coco` (identical to
pycocotools) against the same val JSON. Equal wall time: the slower side is trained again with the epochs its
own measured start-up and per-epoch time fit into the faster side's training-process wall time (its schedule
then completes in that budget), rather than reading an earlier epoch of a longer run off a log.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from yolo_vs_ultralytics_data import (  # next to this file (run as a script: its folder is on sys.path)
    COCO_ROOT,
    REPO,
    VOC_ROOT,
    epochs_for_budget,
    prepare_people,
    prepare_shapes,
    prepare_voc,
    write_yolo_dataset,
    yolo_predictions_to_coco,
)

PEER = Path(__file__).with_name("yolo_vs_ultralytics_peer.py")  # run by the scratch venv's Python
PROBE = Path(__file__).with_name("yolo_vs_ultralytics_probe.py")  # the lit_vision side's timing callback
LIT_VISION = Path(sys.executable).with_name("lit-vision")
IMAGE_SIZES = {"shapes": 128, "voc": 320, "people": 320}
THRESHOLDS = {"score_thresh": 0.001, "nms_thresh": 0.7, "detections_per_img": 300}  # Ultralytics' val settings


# ---------------------------------------------------------------------------------------------------- processes
def run_measured(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``cmd``; wall time and peak RSS (main process; and summed over its tree, loader workers included --
    forked workers share pages, so the sum is an upper bound), polled every 0.2 s with psutil."""
    import psutil

    start = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        main, peak_main, peak_tree = psutil.Process(proc.pid), 0, 0
        while proc.poll() is None:
            try:
                tree = [main, *main.children(recursive=True)]
                rss = [p.memory_info().rss for p in tree]
                peak_main, peak_tree = max(peak_main, rss[0]), max(peak_tree, sum(rss))
            except psutil.Error:
                pass
            time.sleep(0.2)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return {"start": start, "wall_s": wall, "peak_rss_gib": peak_main / 2**30, "peak_rss_tree_gib": peak_tree / 2**30}


def data_module_args() -> set[str]:
    """Arguments ``COCODetectionDataModule`` accepts, down its ``**kwargs`` chain (what the recipe may keep)."""
    import inspect

    from lit_vision.data.detection.coco import COCODetectionDataModule

    names: set[str] = set()
    for cls in COCODetectionDataModule.__mro__:
        if "__init__" not in vars(cls):
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def lit_vision_config(args: argparse.Namespace, data: dict[str, Path], size: int, epochs: int, run: Path) -> Path:
    """The recipe as the CLI resolves it, on the benchmark's split and settings (what was changed is printed)."""
    printed = subprocess.run([str(LIT_VISION), "fit", "--config", str(args.recipe), "--print_config"], cwd=run,
                             capture_output=True, text=True, check=True).stdout
    cfg = yaml.safe_load(printed)
    recipe_epochs = cfg["trainer"].get("max_epochs")
    init = cfg["data"].get("init_args") or {}
    accepted = data_module_args()
    dropped = sorted(set(init) - accepted)
    init = {k: v for k, v in init.items() if k in accepted} | {
        "train_images": str(data["train_images"]), "train_annotations": str(data["train_json"]),
        "val_images": str(data["val_images"]), "val_annotations": str(data["val_json"]),
        "image_size": size, "batch_size": args.batch, "num_workers": args.workers}
    cfg["data"] = {"class_path": "lit_vision.data.COCODetectionDataModule", "init_args": init}
    trainer = cfg["trainer"]
    notes = [f"data {dropped} dropped (source-specific)"] if dropped else []
    if trainer.get("precision") not in (None, 32, "32", "32-true"):  # Ultralytics trains in float32 on a CPU
        notes.append(f"precision {trainer['precision']} -> 32-true")
    trainer |= {"accelerator": "cpu", "devices": 1, "precision": "32-true"}
    trainer |= {"max_epochs": epochs, "default_root_dir": str(run), "enable_progress_bar": False,
                "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                           "init_args": {"save_dir": str(run), "name": "lv", "version": 0}}}
    trainer["callbacks"] = [*(trainer.get("callbacks") or []), {
        "class_path": f"{PROBE.stem}.EpochClock",
        "init_args": {"path": str(run / "clock.json"), "threads": args.threads, "image_size": size}}]
    cfg["seed_everything"], cfg["pictures"] = args.seed, False
    model = cfg["model"]["init_args"]
    if isinstance(model.get("architecture"), dict):
        model["architecture"].setdefault("init_args", {}).update(THRESHOLDS)
    # A schedule written for the recipe's epoch count (LinearLR total_iters, CosineAnnealingLR T_max) is scaled
    # to the run's, as Ultralytics' schedule follows its epochs.
    sched = (model.get("lr_scheduler") or {}).get("init_args") or {}
    for key in ("total_iters", "T_max"):
        if (sched.get(key) == recipe_epochs != epochs
                and model.get("lr_scheduler_interval", "epoch") == "epoch"):
            sched[key] = epochs
            notes.append(f"lr_scheduler {key} {recipe_epochs} -> {epochs}")
    print(f"  lit_vision config: {'; '.join(notes) or 'recipe unchanged apart from data and epochs'}", flush=True)
    path = run / "run.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def child_env(threads: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} | extra


def epoch_times(clock: dict[str, Any]) -> list[float]:
    return [e - s for s, e in zip(clock["epoch_start"], clock["epoch_end"])]


def run_lit_vision(args: argparse.Namespace, data: dict[str, Path], size: int, epochs: int,
                   run: Path) -> dict[str, Any]:
    from lit_vision.evaluation.coco import evaluate_coco

    run.mkdir(parents=True)
    config = lit_vision_config(args, data, size, epochs, run)
    env = child_env(args.threads, PYTHONPATH=str(PROBE.parent))
    fit = run_measured([str(LIT_VISION), "fit", "--config", str(config)], run, env, run / "fit.log")
    # Predict without the recipe's callbacks: last.ckpt's state_dict already holds the EMA weights when the
    # recipe averages (Lightning's WeightAveraging saves them there), which an EMA callback would swap out.
    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"] |= {"callbacks": [{"class_path": "lit_vision.callbacks.CocoResultsWriter",
                                      "init_args": {"output_path": str(run / "results.json")}}],
                       "logger": False, "default_root_dir": str(run / "predict")}
    cfg.pop("pictures", None)
    (run / "predict.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    ckpt = next(run.rglob("last.ckpt"), None)
    if ckpt is None:
        raise RuntimeError(f"lit-vision fit left no last.ckpt under {run}; see {run / 'fit.log'}")
    pred = run_measured([str(LIT_VISION), "predict", "--config", str(run / "predict.yaml"), "--ckpt_path", str(ckpt)],
                        run, env, run / "predict.log")
    clock = json.loads((run / "clock.json").read_text())
    with next(run.rglob("metrics.csv")).open() as f:
        rows = list(csv.DictReader(f))
    val = [r for r in rows if r.get("val/map")]
    stats = evaluate_coco(data["val_json"], run / "results.json")
    return {"side": "lit_vision", "epochs": epochs, "train_wall_s": fit["wall_s"], "predict_wall_s": pred["wall_s"],
            "whole_wall_s": fit["wall_s"] + pred["wall_s"], "fit_loop_s": clock["fit_end"] - clock["fit_start"],
            "epoch_s": epoch_times(clock), "peak_rss_gib": max(fit["peak_rss_gib"], pred["peak_rss_gib"]),
            "peak_rss_tree_gib": max(fit["peak_rss_tree_gib"], pred["peak_rss_tree_gib"]),
            "params": clock["params"], "gflops": clock.get("gflops"), "threads": clock["threads"],
            "workers": args.workers,
            "map": stats["map"], "map_50": stats["map_50"],
            "own_map": float(val[-1]["val/map"]) if val else None,
            "own_map_50": float(val[-1]["val/map_50"]) if val else None,
            "map_per_epoch": [float(r["val/map"]) for r in val], "run_dir": str(run)}


def run_ultralytics(args: argparse.Namespace, data: dict[str, Path], data_yaml: Path, size: int, epochs: int,
                    run: Path) -> dict[str, Any]:
    from lit_vision.evaluation.coco import evaluate_coco

    run.mkdir(parents=True)
    cmd = [str(args.ultra_python), str(PEER), "--data", str(data_yaml), "--out", str(run), "--model", args.ultra_model,
           "--epochs", str(epochs), "--imgsz", str(size), "--batch", str(args.batch), "--workers", str(args.workers),
           "--threads", str(args.threads), "--seed", str(args.seed), "--extra", json.dumps(args.ultra_extra)]
    env = child_env(args.threads, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="false",
                    YOLO_CONFIG_DIR=str(args.work_dir / "ultralytics_config"))
    proc = run_measured(cmd, run, env, run / "ultralytics.log")
    report = json.loads((run / "report.json").read_text())
    if report["network_attempts"]:
        print(f"  WARNING: Ultralytics tried the network: {report['network_attempts']}", flush=True)
    coco = json.loads(data["val_json"].read_text())
    results = yolo_predictions_to_coco(Path(report["predictions_dir"]), coco)
    (run / "results.json").write_text(json.dumps(results))
    stats = evaluate_coco(coco, results)
    with Path(report["results_csv"]).open() as f:
        rows = list(csv.DictReader(f))
    train_wall = report["fit_end"] - proc["start"]
    return {"side": "ultralytics", "epochs": epochs, "train_wall_s": train_wall,
            "predict_wall_s": report["val_end"] - report["fit_end"], "whole_wall_s": proc["wall_s"],
            "fit_loop_s": report["fit_end"] - report["fit_start"], "epoch_s": epoch_times(report),
            "peak_rss_gib": proc["peak_rss_gib"], "peak_rss_tree_gib": proc["peak_rss_tree_gib"],
            "params": report["params"], "gflops": report["gflops"], "threads": report["threads"],
            "workers": report["workers"],
            "map": stats["map"], "map_50": stats["map_50"],
            "own_map": report["own_map"], "own_map_50": report["own_map_50"],
            "map_per_epoch": [float(r["metrics/mAP50-95(B)"]) for r in rows],
            "network_attempts": report["network_attempts"], "version": report["ultralytics"], "run_dir": str(run)}


# ---------------------------------------------------------------------------------------------------- main
def row(dataset: str, setting: str, r: dict[str, Any]) -> str:
    gflops = f"{r['gflops']:.2f}" if r.get("gflops") else "?"
    return (f"| {dataset} | {setting} | {r['side']} | {r['epochs']} | {r['train_wall_s']:.0f} s "
            f"| {r['whole_wall_s']:.0f} s "
            f"| {r['map_50']:.3f} / {r['map']:.3f} | {r['params'] / 1e6:.2f} M | {gflops} | {r['peak_rss_gib']:.2f} "
            f"({r['peak_rss_tree_gib']:.2f}) GiB |")


def compare(args: argparse.Namespace, dataset: str, size: int, out: dict[str, Any], table: list[str],
            notes: list[str]) -> None:
    """The equal-epoch pair on one dataset, then the slower side again at the faster side's wall time."""
    work = args.work_dir / dataset
    work.mkdir(parents=True, exist_ok=True)
    if dataset == "shapes":
        data = prepare_shapes(work)
    elif dataset == "voc":
        data = prepare_voc(work, args.voc_root, args.val_fraction, args.seed)
    else:
        data = prepare_people(work, args.voc_root, args.coco_root, args.val_fraction, args.seed)
    data_yaml = write_yolo_dataset(data, work / "yolo")

    def side(name: str, epochs: int, tag: str) -> dict[str, Any]:
        print(f"[{dataset}] {name}, {epochs} epochs ({tag})", flush=True)
        run = work / f"{name}_{tag.split(' (')[0].replace(' ', '_')}_{epochs}ep"
        r = (run_lit_vision(args, data, size, epochs, run) if name == "lit_vision"
             else run_ultralytics(args, data, data_yaml, size, epochs, run))
        print(f"  train {r['train_wall_s']:.1f} s, AP50 {r['map_50']:.4f}, AP {r['map']:.4f} "
              f"(own validation: {r['own_map_50']}, {r['own_map']})", flush=True)
        out["runs"].append({"dataset": dataset, "setting": tag, "image_size": size} | r)
        table.append(row(dataset, tag, r))
        return r

    pair = {n: side(n, args.epochs, "equal epochs") for n in ("ultralytics", "lit_vision") if n in args.sides}
    if len(pair) < 2:  # one side alone (a recipe variant against a recorded pair): no ratio, no equal-time run
        return
    lv, ul = pair["lit_vision"], pair["ultralytics"]
    ratios = {"train_wall": lv["train_wall_s"] / ul["train_wall_s"], "ap50_delta": lv["map_50"] - ul["map_50"],
              "ap_delta": lv["map"] - ul["map"]}
    out.setdefault("ratios", {})[dataset] = ratios
    notes.append(f"{dataset}, equal epochs: lit_vision / Ultralytics train wall {ratios['train_wall']:.2f}x, "
                 f"AP50 {ratios['ap50_delta']:+.3f}, AP {ratios['ap_delta']:+.3f} (lit_vision minus Ultralytics)")
    if not args.no_equal_time:
        fast, slow = sorted(pair.values(), key=lambda r: r["train_wall_s"])
        epochs = epochs_for_budget(fast["train_wall_s"], slow["train_wall_s"], slow["epoch_s"], args.epochs)
        if epochs < args.epochs:
            side(slow["side"], epochs, f"equal wall time ({fast['train_wall_s']:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "experiments" / "detection" / "quickstart.yaml",
                        help="lit_vision's side: any detection recipe (the YOLO-n ones for the recorded numbers)")
    parser.add_argument("--datasets", nargs="+", choices=list(IMAGE_SIZES), default=list(IMAGE_SIZES))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image-size", action="append", metavar="DATASET=SIZE", default=[],
                        help="e.g. voc=256 (defaults: shapes=128, voc=320, people=320; multiples of 32)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0,
                        help="data loader workers on both sides (Ultralytics forces 0 when training on a CPU)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads on both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2, help="voc, people: share of the photos held out")
    parser.add_argument("--voc-root", type=Path, default=VOC_ROOT)
    parser.add_argument("--coco-root", type=Path, default=COCO_ROOT, help="people: coco_minicoco's folder")
    parser.add_argument("--ultra-python", type=Path, default=Path("/tmp/ultra_venv/bin/python"))
    parser.add_argument("--ultra-model", default="yolov8n.yaml")
    parser.add_argument("--ultra-extra", type=json.loads, default={}, help='JSON dict of more train() args')
    parser.add_argument("--no-equal-time", action="store_true", help="only the equal-epoch runs")
    parser.add_argument("--sides", nargs="+", choices=["ultralytics", "lit_vision"],
                        default=["ultralytics", "lit_vision"],
                        help="one side alone: its equal-epoch run only (e.g. a recipe variant, same split and judge)")
    parser.add_argument("--work-dir", type=Path, default=None, help="kept; default: a temporary folder, removed")
    parser.add_argument("--output", type=Path, default=None, help="raw results as JSON")
    args = parser.parse_args()
    args.recipe = args.recipe.resolve()  # the sides run in their own working folders
    sizes = IMAGE_SIZES | {k: int(v) for k, v in (s.split("=") for s in args.image_size)}
    keep = args.work_dir is not None
    args.work_dir = (args.work_dir or Path(tempfile.mkdtemp(prefix="yolo_vs_ultra_"))).resolve()
    out: dict[str, Any] = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
                           | {"image_sizes": sizes, "cpu_count": os.cpu_count()}, "runs": []}
    table = [("| data | setting | side | epochs | train wall | whole wall | AP50 / AP | params | GFLOPs "
              "| peak RSS (tree) |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    try:
        for dataset in args.datasets:
            compare(args, dataset, sizes[dataset], out, table, notes)
    finally:
        print("\n" + "\n".join(table + [""] + notes))
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(out, indent=2))
        if not keep:
            shutil.rmtree(args.work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
