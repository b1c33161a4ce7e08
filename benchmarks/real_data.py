"""The issues' "done means" runs: every detector and segmenter trains through ``lit-vision fit`` on real files.

    .venv/bin/python benchmarks/real_data.py --task detection            # ../shared/data, 10 epochs
    .venv/bin/python benchmarks/real_data.py --task segmentation --epochs 3 --architectures unet fcn

Each run is the command a user types (a fresh ``lit-vision fit`` process, ``--model ObjectDetector
--model.architecture <a> --model.backbone <b> --data COCODetectionDataModule ...`` or
``--data VOCDetectionDataModule --data.root ...``; ``SemanticSegmenter`` with ``COCOSegmentationDataModule`` /
``VOCSegmentationDataModule`` for segmentation); the table reports wall time, the first and last epoch's
mean training loss and the final validation metrics read back from the run's ``metrics.csv``.
Backbones start from random weights (no downloads here), so on 30-100 images the point is that every
architecture trains end to end on real files, not the AP / mIoU it reaches.
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


def data_args(task: str, dataset: str, root: Path) -> list[str]:
    kind = "Detection" if task == "detection" else "Segmentation"
    if dataset == "coco":
        coco = root / "coco_minicoco"
        return ["--data", f"COCO{kind}DataModule", "--data.train_images", str(coco / "images"),
                "--data.train_annotations", str(coco / "labels" / "train.json"),
                "--data.val_images", str(coco / "images"), "--data.val_annotations", str(coco / "labels" / "val.json")]
    # voc_sample: detection lists only ImageSets/Main/trainval.txt (train and evaluate on it); segmentation has
    # ImageSets/Segmentation/{train,val}.txt.
    splits = ["trainval", "trainval"] if task == "detection" else ["train", "val"]
    return ["--data", f"VOC{kind}DataModule", "--data.root", str(root / "voc_sample" / "VOCdevkit" / "VOC2012"),
            "--data.train_split", splits[0], "--data.val_split", splits[1]]


METRICS = {"detection": ("val/map", "val/map_50"), "segmentation": ("val/miou", "val/pixel_acc")}
ARCHITECTURES = {"detection": ["faster_rcnn", "retinanet", "fcos", "yolo"],
                 "segmentation": ["fcn", "unet", "deeplabv3", "deeplabv3plus"]}
ARCHITECTURE_CLASSES = {"faster_rcnn": "FasterRCNN", "retinanet": "RetinaNet", "fcos": "FCOS", "yolo": "YOLO",
                        "fcn": "FCN", "unet": "UNet", "deeplabv3": "DeepLabV3", "deeplabv3plus": "DeepLabV3Plus"}


def read_metrics(run_dir: Path, names: tuple[str, str]) -> dict[str, float]:
    files = sorted(run_dir.rglob("metrics.csv"))
    rows = list(csv.DictReader(files[-1].open())) if files else []
    val = [r for r in rows if r.get(names[0])]
    loss = [(int(r["epoch"]), float(r["train/loss_epoch"])) for r in rows if r.get("train/loss_epoch")]
    out = {n: float(val[-1][n]) for n in names} if val else {}
    if loss:
        out |= {"loss_first": loss[0][1], "loss_last": loss[-1][1]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(METRICS), default="detection")
    parser.add_argument("--data-root", type=Path, default=SHARED)
    parser.add_argument("--datasets", nargs="+", default=["coco", "voc"])
    parser.add_argument("--architectures", nargs="+", default=None)
    parser.add_argument("--backbone", default="tv/resnet18")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=320)
    args = parser.parse_args()
    names = METRICS[args.task]
    model = ["--model", "ObjectDetector" if args.task == "detection" else "SemanticSegmenter"]

    print(f"| data | architecture | backbone | epochs | wall | train loss first -> last | {' | '.join(names)} |")
    print("|---|---|---|---|---|---|---|---|")
    for dataset in args.datasets:
        for arch in args.architectures or ARCHITECTURES[args.task]:
            with tempfile.TemporaryDirectory() as tmp:
                # The architecture by class, 64 wide for detectors; image_size is linked from the data.
                cls = ARCHITECTURE_CLASSES[arch]
                width = {"yolo": ["--model.architecture.neck_channels", "64"]}.get(
                    arch, ["--model.architecture.fpn_channels", "64"] if args.task == "detection" else [])
                cmd = [str(LIT_VISION), "fit", *model, "--model.architecture", cls, *width, "--model.backbone", args.backbone,
                       "--model.optimizer", "AdamW", "--model.optimizer.lr", "1e-3",
                       *data_args(args.task, dataset, args.data_root), "--data.image_size", str(args.image_size),
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
                m = read_metrics(Path(tmp), names)
                print(f"| {dataset} | {arch} | {args.backbone} | {args.epochs} | {wall:.0f} s | "
                      f"{m.get('loss_first', float('nan')):.3f} -> {m.get('loss_last', float('nan')):.3f} | "
                      f"{m.get(names[0], float('nan')):.4f} | {m.get(names[1], float('nan')):.4f} |", flush=True)


if __name__ == "__main__":
    main()
