"""The rows of benchmarks/gpu_throughput.py: what each one trains and how it is timed (see that script's docstring)."""

from __future__ import annotations

import functools
import gc
import importlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@dataclass
class Sizes:
    """What each row trains on; ``--smoke`` shrinks everything so a CPU runs every row in about a minute."""

    arch: str = "resnet50"
    batch: int = 256
    image: int = 224
    warmup: int = 10
    steps: int = 60
    jpeg_warmup: int = 5
    jpeg_steps: int = 25
    det_hw: tuple[int, int] = (800, 1067)  # COCO's 4:3 photo at the recipe's min_size 800
    det_min_max: tuple[int, int] = (800, 1333)
    seg_crop: int = 480
    recipe_warmup: int = 5
    recipe_steps: int = 30
    row_cap_s: float = 25.0  # measured seconds per row at most
    bf16: bool = True  # bf16-mixed autocast (off in the CPU smoke run: most CPUs emulate bf16, 5-10x slower)

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(arch="resnet18", batch=2, image=32, warmup=1, steps=2, jpeg_warmup=1, jpeg_steps=2, det_hw=(64, 96),
                   det_min_max=(64, 96), seg_crop=64, recipe_warmup=1, recipe_steps=1, row_cap_s=10.0,
                   bf16=False)


@dataclass
class Row:
    part: str
    side: str
    data: str
    batch: int
    img_s: float | None = None
    peak_gib: float | None = None
    steps: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Clock:
    """The run's budget: what is left, and a row's share of it."""

    def __init__(self, budget_s: float) -> None:
        self.start, self.budget = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# ------------------------------------------------------------------------------------------------ plain loop
def plain_loop(device: torch.device, sizes: Sizes, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
               compile_model: bool, cap_s: float) -> tuple[float, int]:
    """torchvision ResNet-50 as a person writes it: channels_last, bf16 autocast, fused SGD, cosine per step."""
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, sizes.arch)(num_classes=1000).to(device, memory_format=torch.channels_last)
    if compile_model:
        model.compile()
    total = sizes.warmup + sizes.steps
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
                                fused=device.type == "cuda" or None)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    criterion = torch.nn.CrossEntropyLoss()
    t0, done = 0.0, 0
    for step in range(total):
        if step == sizes.warmup:
            sync(device)
            t0 = time.perf_counter()
        images, labels = next(batches)
        images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=sizes.bf16):
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step >= sizes.warmup:
            done += 1
            if time.perf_counter() - t0 > cap_s:
                break
    sync(device)
    return done * sizes.batch / (time.perf_counter() - t0), done


# ------------------------------------------------------------------------------------------------ Lightning
def throughput_callback(warmup: int, steps: int, cap_s: float) -> Any:
    import lightning.pytorch as pl

    class Throughput(pl.Callback):
        """Images per second over the steps after ``warmup``, between two synchronisations; stops the fit when
        ``steps`` were timed or ``cap_s`` passed."""

        def __init__(self) -> None:
            self.t0, self.calls, self.images, self.done, self.img_s = 0.0, 0, 0, 0, float("nan")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            self.calls += 1  # (not batch_idx: it restarts every epoch)
            if self.calls == warmup:
                sync(pl_module.device)
                self.t0 = time.perf_counter()
            elif self.calls > warmup:
                image = batch["image"]
                self.images += len(image)
                self.done += 1
                if self.done >= steps or time.perf_counter() - self.t0 > cap_s:
                    sync(pl_module.device)
                    self.img_s = self.images / (time.perf_counter() - self.t0)
                    trainer.should_stop = True

    return Throughput()


def lightning_fit(model: Any, device: torch.device, sizes: Sizes, warmup: int, steps: int, cap_s: float,
                  **fit_kw: Any) -> tuple[float, int]:
    import lightning.pytorch as pl

    timer = throughput_callback(warmup, steps, cap_s)
    trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                         precision="bf16-mixed" if sizes.bf16 else "32-true",
                         max_steps=warmup + steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         benchmark=device.type == "cuda", callbacks=[timer])
    trainer.fit(model, **fit_kw)
    return timer.img_s, timer.done


class DeviceBatches:
    """The same on-device batch ``n`` times: Lightning's transfer of a tensor already there is a no-op."""

    def __init__(self, batch: dict[str, Any], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter([self.batch] * self.n)


def lit_classifier(arch: str, compile_model: bool, class_names: list[str] | None = None) -> Any:
    from lit_vision.tasks import ImageClassifier

    torch.manual_seed(0)
    return ImageClassifier(backbone=f"tv/{arch}", num_classes=None if class_names else 1000, class_names=class_names,
                           channels_last=True, compile=compile_model)


# ------------------------------------------------------------------------------------------------ rows
def synthetic_rows(device: torch.device, sizes: Sizes, compiled: bool, cap_s: float) -> list[Row]:
    images = torch.randn(sizes.batch, 3, sizes.image, sizes.image, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (sizes.batch,), device=device)
    tag = f"synthetic {sizes.arch}" + (", compiled" if compiled else "")
    rows = []
    reset_memory(device)
    img_s, done = plain_loop(device, sizes, iter(lambda: (images, labels), None), compiled, cap_s)
    rows.append(Row(tag, "plain PyTorch", "one device batch", sizes.batch, img_s, peak_gib(device), done))
    reset_memory(device)
    batches = DeviceBatches({"image": images, "label": labels}, sizes.warmup + sizes.steps)
    model = lit_classifier(sizes.arch, compiled)
    img_s, done = lightning_fit(model, device, sizes, sizes.warmup, sizes.steps, cap_s, train_dataloaders=batches)
    rows.append(Row(tag, "lit_vision", "one device batch", sizes.batch, img_s, peak_gib(device), done))
    return rows


def jpeg_folder(tmp: Path, photos: list[Path], count: int) -> Path:
    """``tmp/{train,val}/c<k>/``: ``count`` links to the photos in up to 1000 classes (the plain loop's head) and one
    validation image a class."""
    classes = min(1000, count)
    for i in range(count + classes):
        split = "train" if i < count else "val"
        folder = tmp / split / f"c{i % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06d}.jpg").symlink_to(photos[i % len(photos)].resolve())
    return tmp


def generated_photos(tmp: Path, n: int = 20, size: tuple[int, int] = (500, 375)) -> list[Path]:
    """Stand-in JPEGs (smooth gradients + noise, quality 90) when no photos are at hand."""
    import numpy as np
    from PIL import Image

    tmp.mkdir(parents=True, exist_ok=True)
    rng, paths = np.random.default_rng(0), []
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    for i in range(n):
        base = np.stack([xx * 255 / size[0], yy * 255 / size[1], (xx + yy) * 0.2], -1) + rng.integers(0, 60, 3)
        array = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(array).save(tmp / f"{i}.jpg", quality=90)
        paths.append(tmp / f"{i}.jpg")
    return paths


def cycle(loader: Any) -> Iterator[Any]:
    while True:
        yield from loader


def jpeg_rows(device: torch.device, sizes: Sizes, root: Path, workers: int, cap_s: float, clock: Clock,
              need_s: float) -> list[Row]:
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision.transforms import v2

    from lit_vision.data import DeviceDecodeImageFolderDataModule, ImageFolderDataModule

    preset = v2.Compose([v2.RandomResizedCrop(sizes.image, antialias=True), v2.RandomHorizontalFlip(),
                         v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    data = f"JPEG photos, {workers} workers"
    pinned = device.type == "cuda"
    steps_sizes = Sizes(**{**asdict(sizes), "warmup": sizes.jpeg_warmup, "steps": sizes.jpeg_steps})
    rows = []
    part = f"real JPEGs {sizes.arch}"
    reset_memory(device)
    loader = DataLoader(datasets.ImageFolder(str(root / "train"), preset), batch_size=sizes.batch, shuffle=True,
                        num_workers=workers, pin_memory=pinned, drop_last=True, persistent_workers=workers > 0)
    img_s, done = plain_loop(device, steps_sizes, cycle(loader), False, cap_s)
    rows.append(Row(part, "plain PyTorch", f"{data}, PIL preset", sizes.batch, img_s, peak_gib(device), done))
    del loader
    kw = dict(root=str(root), image_size=sizes.image, batch_size=sizes.batch, num_workers=workers, color_jitter=0.0,
              verify_images=False, pin_memory=pinned)
    variants = [(ImageFolderDataModule, {}, "ImageFolderDataModule defaults"),
                (ImageFolderDataModule, {"normalize_on_device": True}, "+ normalize_on_device"),
                (DeviceDecodeImageFolderDataModule, {"pin_memory": False}, "decode on the device")]
    for cls, extra, label in variants:
        if clock.left() < need_s:
            rows.append(Row(part, "lit_vision", f"{data}, {label}", sizes.batch, note="skipped: time budget"))
            continue
        reset_memory(device)
        datamodule = cls(**{**kw, **extra})
        model = lit_classifier(sizes.arch, False, datamodule.class_names)
        img_s, done = lightning_fit(model, device, sizes, sizes.jpeg_warmup, sizes.jpeg_steps, cap_s,
                                    datamodule=datamodule)
        rows.append(Row(part, "lit_vision", f"{data}, {label}", sizes.batch, img_s, peak_gib(device), done))
    return rows


def instantiate(spec: Any) -> Any:
    """``{class_path, init_args}`` -> the object (what LightningCLI does for the recipe's nested arguments)."""
    if not (isinstance(spec, dict) and "class_path" in spec):
        return spec
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))


def recipe_task(path: Path, num_classes: int, **overrides: Any) -> tuple[Any, dict[str, Any]]:
    """The recipe's task (random weights: nothing downloaded) and its data arguments."""
    import yaml

    config = yaml.safe_load(path.read_text())
    model = config["model"]
    args = dict(model["init_args"], pretrained=False, num_classes=num_classes, channels_last=True)
    architecture = args["architecture"]
    architecture["init_args"] = {**architecture.get("init_args", {}), **overrides}
    args["architecture"] = instantiate(architecture)
    optimizer = args.pop("optimizer")
    module, _, name = optimizer["class_path"].rpartition(".")
    optimizer_cls = getattr(importlib.import_module(module), name)
    args["optimizer"] = functools.partial(optimizer_cls, **optimizer["init_args"])
    for key in ("lr_scheduler", "lr_scheduler_interval"):  # a scheduler's step costs nothing worth timing here
        args.pop(key, None)
    data = config["data"]["init_args"]
    if "image_size" in data and model["class_path"].endswith("ObjectDetector"):
        args["image_size"] = data["image_size"]
    module, _, name = model["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**args), data


def detection_row(device: torch.device, sizes: Sizes, cap_s: float) -> Row:
    path = REPO / "experiments/detection/faster_rcnn_r50_fpn_coco.yaml"
    min_size, max_size = sizes.det_min_max
    torch.manual_seed(0)
    task, data = recipe_task(path, 80, min_size=min_size, max_size=max_size)
    batch_size = data["batch_size"]
    h, w = sizes.det_hw
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for _ in range(batch_size):
        images.append(torch.rand(3, h, w, generator=g).to(device))
        xy = torch.rand(8, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = 16 + torch.rand(8, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(0, 80, (8,), generator=g).to(device)})
    reset_memory(device)
    batches = DeviceBatches({"image": images, "target": targets}, sizes.recipe_warmup + sizes.recipe_steps)
    img_s, done = lightning_fit(task, device, sizes, sizes.recipe_warmup, sizes.recipe_steps, cap_s,
                                train_dataloaders=batches)
    return Row("Faster R-CNN R50-FPN recipe", "lit_vision", f"synthetic {h}x{w}, 8 boxes", batch_size, img_s,
               peak_gib(device), done)


def segmentation_row(device: torch.device, sizes: Sizes, cap_s: float) -> Row:
    path = REPO / "experiments/segmentation/deeplabv3_r50_voc.yaml"
    torch.manual_seed(0)
    task, data = recipe_task(path, 21)
    batch_size, crop = data["batch_size"], sizes.seg_crop
    images = torch.randn(batch_size, 3, crop, crop, device=device).contiguous(memory_format=torch.channels_last)
    masks = torch.randint(0, 21, (batch_size, crop, crop), device=device)
    reset_memory(device)
    batches = DeviceBatches({"image": images, "mask": masks}, sizes.recipe_warmup + sizes.recipe_steps)
    img_s, done = lightning_fit(task, device, sizes, sizes.recipe_warmup, sizes.recipe_steps, cap_s,
                                train_dataloaders=batches)
    return Row("DeepLabv3 R50 OS8 recipe", "lit_vision", f"synthetic {crop}x{crop} crops", batch_size, img_s,
               peak_gib(device), done)
