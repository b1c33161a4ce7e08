"""Classification training-loader throughput on real photos and on large ones: lit_vision against its peers.

    .venv/bin/python benchmarks/data_pipeline.py [--batches 12] [--repeats 3] [--items 20] \
        [--output benchmarks/results/data_pipeline.json]

Every pipeline does the classic training augmentation at 224 px (RandomResizedCrop scale 0.08-1, horizontal
flip, colour jitter 0.4/0.4/0.4, to float, ImageNet normalisation) and is read through a ``DataLoader`` with 2
workers and batch 64:

* ``classic``: ``torchvision.transforms`` on PIL images (RandomResizedCrop, RandomHorizontalFlip,
  ColorJitter(0.4, 0.4, 0.4), ToTensor, Normalize) over ``torchvision.datasets.ImageFolder``;
* ``timm``: ``timm.data.create_transform(224, is_training=True)`` over the same ImageFolder;
* ``lit_vision (plain)``: ``ImageFolderDataModule(fast_decode=False).train_dataloader()`` (the code before);
* ``lit_vision (fast_decode)``: the same with ``fast_decode=True`` (the default).

Data: (a) ``real``: the 100 VOC photos of ``voc_sample`` (~500x375) and the 40 ``coco_minicoco`` photos
(~640x480) as they are; (b) ``large``: the same photos upscaled once with PIL (LANCZOS) to 2048x1536 (1536x2048
for portrait ones) and saved as JPEG quality 90. Each set is an ImageFolder tree of 2 classes in ``--workdir``
(hard links repeat the photos so that one epoch covers a measurement; files are read from the page cache).
A measurement iterates one epoch for ``--batches`` batches; the first 2 (one per worker: start-up) are left out,
img/s counts the rest. The pipelines run in a rotated order in every repeat; reported: the median img/s and the
median over repeats of each pipeline's ratio to classic within the repeat (a change of the machine's load between
repeats cancels in it).

Loader img/s depends on whatever else the machine runs; the second figure less: a worker's CPU time per image
(``time.process_time``: time spent waiting for a core is not counted, a busy sibling hyperthread still is),
measured in this process on one thread (``dataset[i]`` for ``--items`` images, every image under the same seed in
every pipeline, so classic and lit_vision cut the same crops; the pipelines interleaved; the fastest of
``--item-repeats`` passes after a warm-up pass). It is what bounds the loader when its workers have the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lit_vision.data import ImageFolderDataModule  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
BATCH, WORKERS, SIZE, WARMUP = 64, 2, 224, 2
PIPELINES = ("classic", "timm", "lit_vision (plain)", "lit_vision (fast_decode)")


def source_photos(data_root: Path) -> list[Path]:
    voc = sorted((data_root / "voc_sample" / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    coco = sorted((data_root / "coco_minicoco" / "images").glob("*.jpg"))
    if not voc or not coco:
        raise SystemExit(f"photos not found under {data_root} (voc_sample, coco_minicoco)")
    return voc + coco


def upscale(job: tuple[Path, Path]) -> tuple[int, int]:
    src, dst = job
    with Image.open(src) as im:
        rgb = im.convert("RGB")
    size = (2048, 1536) if rgb.width >= rgb.height else (1536, 2048)
    rgb.resize(size, Image.Resampling.LANCZOS).save(dst, quality=90)
    return size


def build_tree(root: Path, photos: list[Path], copies: int) -> None:
    """``root/{train,val}/{a,b}/``: every photo ``copies`` times as hard links in train, once in val."""
    for i, photo in enumerate(photos):
        cls = "ab"[i % 2]
        for split, n in (("train", copies), ("val", 1)):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                link = folder / f"{photo.stem}_{k}.jpg"
                if not link.exists():
                    os.link(photo, link)


def prepare(workdir: Path, data_root: Path, images_needed: int) -> dict[str, Path]:
    photos = source_photos(data_root)
    copies = -(-images_needed // len(photos))
    large_src = workdir / "large_src"
    large_src.mkdir(parents=True, exist_ok=True)
    jobs = [(p, large_src / p.name) for p in photos if not (large_src / p.name).exists()]
    if jobs:
        print(f"upscaling {len(jobs)} photos to 2048x1536 (once, in {large_src})", flush=True)
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(upscale, jobs))
    trees = {"real": workdir / "real", "large": workdir / "large"}
    build_tree(trees["real"], photos, copies)
    build_tree(trees["large"], [large_src / p.name for p in photos], copies)
    return trees


def peer_loader(name: str, root: Path) -> DataLoader:
    from torchvision import datasets, transforms

    if name == "classic":
        transform = transforms.Compose([
            transforms.RandomResizedCrop(SIZE), transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.4, 0.4, 0.4), transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])
    else:
        from timm.data import create_transform

        transform = create_transform(SIZE, is_training=True)
    dataset = datasets.ImageFolder(str(root / "train"), transform=transform)
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=WORKERS, drop_last=True)


def lit_loader(fast: bool, root: Path) -> DataLoader:
    data = ImageFolderDataModule(root=str(root), image_size=SIZE, batch_size=BATCH, num_workers=WORKERS,
                                 fast_decode=fast, verify_images=False, persistent_workers=False)
    data.setup("fit")
    return data.train_dataloader()


def loader(name: str, root: Path) -> DataLoader:
    if name.startswith("lit_vision"):
        return lit_loader("fast_decode" in name, root)
    return peer_loader(name, root)


def measure(name: str, root: Path, batches: int) -> float:
    """img/s of one epoch's first ``batches`` batches, the first ``WARMUP`` left out."""
    it = iter(loader(name, root))
    start = None
    for i in range(batches):
        batch = next(it)
        images = batch["image"] if isinstance(batch, dict) else batch[0]
        assert images.shape == (BATCH, 3, SIZE, SIZE) and images.dtype == torch.float32, (name, images.shape)
        if i == WARMUP - 1:
            start = time.perf_counter()
    elapsed = time.perf_counter() - start
    del it  # shuts the workers down
    return (batches - WARMUP) * BATCH / elapsed


def item_costs(name: str, root: Path, count: int) -> tuple[Any, list[int]]:
    """The dataset a pipeline's workers run (without the loader) and ``count`` sampled indices of it."""
    dataset = loader(name, root).dataset
    dataset = getattr(dataset, "dataset", dataset)  # lit_vision's loader wraps it to seed every item
    return dataset, random.Random(0).sample(range(len(dataset)), count)


def per_image_ms(root: Path, count: int, repeats: int) -> dict[str, float]:
    """CPU ms per image: the fastest of ``repeats`` passes over the same images per pipeline (after one warm-up
    pass), interleaved, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a loader worker
    sets = {name: item_costs(name, root, count) for name in PIPELINES}
    best = dict.fromkeys(PIPELINES, float("inf"))
    for r in range(repeats + 1):  # the first pass warms caches and is not counted
        for name in PIPELINES[r % len(PIPELINES):] + PIPELINES[:r % len(PIPELINES)]:  # rotated, as the loaders
            dataset, indices = sets[name]
            start = time.process_time()
            for i in indices:
                # Same seed per image and pass: classic and lit_vision draw the same crops (same torch calls), so
                # the fastest pass is not the one with the smallest crops; timm draws from Python's random.
                torch.manual_seed(r * 1_000_003 + i)
                random.seed(r * 1_000_003 + i)
                dataset[i]
            if r:
                best[name] = min(best[name], (time.process_time() - start) / count * 1e3)
    torch.set_num_threads(threads)
    return best


def summarize(runs: dict[str, dict[str, list[float]]], costs: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Medians, and each pipeline's ratio to classic taken within every repeat (the pipelines of one repeat run
    minutes apart at most, so a change in the machine's load between repeats cancels) and then its median."""
    summary: dict[str, Any] = {}
    for d, by_name in runs.items():
        classic, classic_ms = by_name["classic"], costs[d]["classic"]
        summary[d] = {name: {
            "img_per_s": statistics.median(values), "runs": values,
            "ratio_to_classic": statistics.median(v / c for v, c in zip(values, classic)),
            "ratio_of_medians": statistics.median(values) / statistics.median(classic),
            "ms_per_image": costs[d][name], "ms_ratio_classic_to_this": classic_ms / costs[d][name],
        } for name, values in by_name.items()}
    return summary


def table(summary: dict[str, Any]) -> str:
    lines = ["| data | pipeline | loader img/s, median (runs) | ratio to classic | CPU ms per image | classic / this |",
             "|---|---|---|---|---|---|"]
    for d, by_name in summary.items():
        for name, row in by_name.items():
            runs = ", ".join(f"{v:.0f}" for v in row["runs"])
            lines.append(f"| {d} | {name} | {row['img_per_s']:.0f} ({runs}) | {row['ratio_to_classic']:.2f} | "
                         f"{row['ms_per_image']:.1f} | {row['ms_ratio_classic_to_this']:.2f} |")
    return "\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=SHARED)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lit_vision_data_pipeline"))
    parser.add_argument("--batches", type=int, default=12, help="per measurement, 2 of them warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=["real", "large"])
    parser.add_argument("--items", type=int, default=20, help="images per pass of the per-image cost")
    parser.add_argument("--item-repeats", type=int, default=8)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    begin = time.perf_counter()
    trees = prepare(args.workdir, args.data_root, args.batches * BATCH)
    runs: dict[str, dict[str, list[float]]] = {d: {p: [] for p in PIPELINES} for d in args.datasets}
    load = [os.getloadavg()[0]]
    for r in range(args.repeats):
        for d in args.datasets:
            order = PIPELINES[r % len(PIPELINES):] + PIPELINES[:r % len(PIPELINES)]  # rotate every repeat
            for name in order:
                runs[d][name].append(measure(name, trees[d], args.batches))
                print(f"repeat {r} {d:5s} {name:26s} {runs[d][name][-1]:7.1f} img/s", flush=True)
        load.append(os.getloadavg()[0])

    costs = {d: per_image_ms(trees[d], args.items, args.item_repeats) for d in args.datasets}
    load.append(os.getloadavg()[0])

    summary = summarize(runs, costs)
    print(table(summary))
    wall = time.perf_counter() - begin
    print(f"\nwall {wall:.0f} s, 1-min load average at the start, after each repeat and after the per-image costs: "
          f"{load}")
    if args.output:
        import timm
        import torchvision
        from PIL import features

        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({
            "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
            "pillow": Image.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"),
            "libjpeg_api": features.version("jpg"), "cpu": platform.machine(),
            "cpu_count": os.cpu_count(), "batch": BATCH, "workers": WORKERS, "size": SIZE, "batches": args.batches,
            "warmup_batches": WARMUP, "repeats": args.repeats, "items": args.items, "item_repeats": args.item_repeats,
            "load_average": load, "wall_s": wall,
            "summary": summary,
        }, indent=1) + "\n")


if __name__ == "__main__":
    main()
