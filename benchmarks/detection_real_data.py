"""The issue's "done means" runs: every detector trains through ``lit-vision fit`` on real COCO and VOC files.

    .venv/bin/python benchmarks/detection_real_data.py                      # ../shared/data, 10 epochs
    .venv/bin/python benchmarks/detection_real_data.py --epochs 3 --architectures yolo fcos

Each run is the command a user types (a fresh ``lit-vision fit`` process, ``--model ObjectDetector
--model.architecture <a> --model.backbone <b> --data COCODetectionDataModule ...`` or
``--data VOCDetectionDataModule --data.root ...``); the table reports wall time, the first and last epoch's
mean training loss and the final validation mAP / mAP@0.5 read back from the run's ``metrics.csv``.
Backbones start from random weights (no downloads here), so on 30-100 images the point is that every
architecture trains end to end on real files, not the AP it reaches.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
LIT_VISION = Path(sys.executable).with_name("lit-vision")


def data_args(dataset: str, root: Path) -> list[str]:
    if dataset == "coco":
        coco = root / "coco_minicoco"
        return ["--data", "COCODetectionDataModule", "--data.train_images", str(coco / "images"),
                "--data.train_annotations", str(coco / "labels" / "train.json"),
                "--data.val_images", str(coco / "images"), "--data.val_annotations", str(coco / "labels" / "val.json")]
    # voc_sample ships ImageSets/Main/trainval.txt only: train and evaluate on it.
    return ["--data", "VOCDetectionDataModule", "--data.root", str(root / "voc_sample" / "VOCdevkit" / "VOC2012"),
            "--data.train_split", "trainval", "--data.val_split", "trainval"]


def read_metrics(run_dir: Path) -> dict[str, float]:
    files = sorted(run_dir.rglob("metrics.csv"))
    rows = list(csv.DictReader(files[-1].open())) if files else []
    val = [r for r in rows if r.get("val/map")]
    loss = [(int(r["epoch"]), float(r["train/loss_epoch"])) for r in rows if r.get("train/loss_epoch")]
    out = {"map": float(val[-1]["val/map"]), "map_50": float(val[-1]["val/map_50"])} if val else {}
    if loss:
        out |= {"loss_first": loss[0][1], "loss_last": loss[-1][1]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=SHARED)
    parser.add_argument("--datasets", nargs="+", default=["coco", "voc"])
    parser.add_argument("--architectures", nargs="+", default=["faster_rcnn", "retinanet", "fcos", "yolo"])
    parser.add_argument("--backbone", default="tv/resnet18")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=320)
    args = parser.parse_args()

    print(f"| data | architecture | backbone | epochs | wall | train loss first -> last | val mAP | val mAP@0.5 |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        for arch in args.architectures:
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [str(LIT_VISION), "fit", "--model", "ObjectDetector", "--model.architecture", arch,
                       "--model.backbone", args.backbone, "--model.fpn_channels", "64",
                       "--model.image_size", str(args.image_size),
                       "--model.optimizer", "AdamW", "--model.optimizer.lr", "1e-3",
                       *data_args(dataset, args.data_root), "--data.image_size", str(args.image_size),
                       "--data.batch_size", "4", "--data.num_workers", "2",
                       "--trainer.max_epochs", str(args.epochs), "--trainer.enable_progress_bar", "false",
                       "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", tmp,
                       "--trainer.default_root_dir", tmp, "--seed_everything", "0"]
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
                wall = time.perf_counter() - start
                if proc.returncode != 0:
                    print(f"| {dataset} | {arch} | FAILED ({proc.returncode}) | | | | | |")
                    print(proc.stderr[-3000:], file=sys.stderr)
                    continue
                m = read_metrics(Path(tmp))
                print(f"| {dataset} | {arch} | {args.backbone} | {args.epochs} | {wall:.0f} s | "
                      f"{m.get('loss_first', float('nan')):.3f} -> {m.get('loss_last', float('nan')):.3f} | "
                      f"{m.get('map', float('nan')):.4f} | {m.get('map_50', float('nan')):.4f} |", flush=True)


if __name__ == "__main__":
    main()
