"""Training-loader throughput from LitData shards against the same images as a file tree (issue 13).

    nice -n 19 .venv/bin/python benchmarks/streaming_loader.py [--copies 8] [--batches 12] [--repeats 3] \
        [--output benchmarks/results/streaming_loader.json]

Data: the 100 real VOC photos of ``voc_sample`` (~500x375 JPEGs) as a 2-class ImageFolder in ``--workdir``
(copied once, then hard links repeat them ``--copies`` times so one epoch covers a measurement; files come from
the page cache), and the same tree written into shards by ``optimize_data("imagefolder", ...)`` (the JPEG bytes
as they are; ``--chunk-bytes``). Every pipeline runs the same classification training preset, 224-px
RandomResizedCrop (scale 0.08-1) + horizontal flip + ImageNet normalisation (colour jitter off), through its
DataModule's ``train_dataloader()`` with 2 workers and batch 64:

* ``files (plain)``: ``ImageFolderDataModule(fast_decode=False)``: the tensor preset the streaming modules use;
* ``files (fast_decode)``: ``ImageFolderDataModule`` as by default (reduced-scale JPEG decoding of the crop);
* ``shards (litdata)``: ``StreamingImageFolderDataModule(sampler="litdata")``: LitData's StreamingDataLoader;
* ``shards (seeded)``: ``StreamingImageFolderDataModule(sampler="seeded")``: lit_vision's sampler over random access.

A measurement iterates one epoch for ``--batches`` batches; the first 2 (one per worker: start-up) are left out,
img/s counts the rest. Pipelines run in a rotated order in every repeat; reported: the median img/s and the
median over repeats of each pipeline's ratio to ``files (plain)`` within the repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lit_vision.data import ImageFolderDataModule
from lit_vision.data.streaming import StreamingImageFolderDataModule, optimize_data

SHARED = REPO.parent / "shared" / "data"
PHOTOS = SHARED / "voc_sample" / "VOCdevkit" / "VOC2012" / "JPEGImages"
BATCH, WORKERS, SIZE, WARMUP = 64, 2, 224, 2
PIPELINES = ("files (plain)", "files (fast_decode)", "shards (litdata)", "shards (seeded)")
PRESET = {"image_size": SIZE, "scale_range": (0.08, 1.0), "hflip": True, "color_jitter": 0.0}


def build_tree(workdir: Path, copies: int) -> Path:
    """``workdir/tree/{train,val}/{a,b}/``: the photos split in two classes by position, train repeated ``copies``x."""
    root = workdir / "tree"
    if root.exists():
        shutil.rmtree(root)
    originals = workdir / "originals"
    originals.mkdir(parents=True, exist_ok=True)
    photos = sorted(PHOTOS.glob("*.jpg"))
    if not photos:
        raise SystemExit(f"no photos under {PHOTOS}")
    for photo in photos:
        if not (originals / photo.name).exists():
            shutil.copy(photo, originals / photo.name)
    for i, photo in enumerate(photos):
        cls = "a" if i % 2 == 0 else "b"
        for k in range(copies):
            target = root / "train" / cls / f"{k}_{photo.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(originals / photo.name, target)
        if i < 8:  # a small val split: ImageFolderDataModule needs one
            target = root / "val" / cls / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(originals / photo.name, target)
    return root


def datamodule(pipeline: str, root: Path, shards: Path) -> Any:
    loader = {"batch_size": BATCH, "num_workers": WORKERS, "persistent_workers": False, "pin_memory": False}
    if pipeline.startswith("files"):
        dm = ImageFolderDataModule(str(root), fast_decode=pipeline.endswith("(fast_decode)"), verify_images=False,
                                   **PRESET, **loader)
    else:
        sampler = "litdata" if pipeline.endswith("(litdata)") else "seeded"
        dm = StreamingImageFolderDataModule(str(shards), sampler=sampler, **PRESET, **loader)
    dm.data_seed = 0
    dm.setup("fit")
    return dm


def measure(pipeline: str, root: Path, shards: Path, batches: int) -> float:
    """img/s over the first ``batches`` batches of an epoch of the training loader, the first ``WARMUP`` left out."""
    loader = datamodule(pipeline, root, shards).train_dataloader()
    seen, start = 0, 0.0
    for i, batch in enumerate(loader):
        if i == WARMUP:
            start = time.perf_counter()
        elif i > WARMUP:
            seen += len(batch["label"])
        if i == batches - 1:
            break
    if i < batches - 1:
        raise SystemExit(f"{pipeline}: the epoch has only {i + 1} batches; raise --copies")
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="/tmp/lit_vision_streaming_loader")
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-bytes", default="16MB")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "streaming_loader.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    workdir = Path(args.workdir)
    root = build_tree(workdir, args.copies)
    shards = workdir / "shards"
    if shards.exists():
        shutil.rmtree(shards)
    start = time.perf_counter()
    index = optimize_data("imagefolder", str(shards), chunk_bytes=args.chunk_bytes, num_workers=WORKERS, root=str(root))
    write_s = time.perf_counter() - start
    tree_bytes = sum(p.stat().st_size for p in (root / "train").rglob("*.jpg"))
    shard_bytes = sum(p.stat().st_size for p in (shards / "train").glob("chunk-*.bin"))
    runs: dict[str, list[float]] = {p: [] for p in PIPELINES}
    ratios: dict[str, list[float]] = {p: [] for p in PIPELINES}
    loads = []
    for r in range(args.repeats):
        order = PIPELINES[r % len(PIPELINES):] + PIPELINES[:r % len(PIPELINES)]
        this = {}
        for pipeline in order:
            this[pipeline] = measure(pipeline, root, shards, args.batches)
            runs[pipeline].append(round(this[pipeline], 1))
            print(f"repeat {r}: {pipeline:<22} {this[pipeline]:7.1f} img/s", flush=True)
        for pipeline in PIPELINES:
            ratios[pipeline].append(this[pipeline] / this["files (plain)"])
        loads.append(os.getloadavg()[0])
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_1min": [round(v, 2) for v in loads],
                    "torch": torch.__version__, "shared": "benchmarks and other jobs ran at the same time (nice 19)"},
        "setup": {"photos": len(list(PHOTOS.glob("*.jpg"))), "train_images": index["splits"]["train"]["num_items"],
                  "batch": BATCH, "workers": WORKERS, "batches": args.batches, "warmup_batches": WARMUP,
                  "repeats": args.repeats, "preset": {**PRESET, "scale_range": list(PRESET["scale_range"])},
                  "chunk_bytes": args.chunk_bytes},
        "write": {"seconds": round(write_s, 2), "tree_bytes": tree_bytes, "shard_bytes": shard_bytes,
                  "chunks": len(list((shards / "train").glob("chunk-*.bin")))},
        "img_per_s": {p: {"median": round(statistics.median(v), 1), "runs": v} for p, v in runs.items()},
        "ratio_to_files_plain": {p: round(statistics.median(v), 3) for p, v in ratios.items()},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"img_per_s": results["img_per_s"], "ratio": results["ratio_to_files_plain"],
                      "write": results["write"]}, indent=1))


if __name__ == "__main__":
    main()
