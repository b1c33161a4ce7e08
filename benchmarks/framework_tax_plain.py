"""The plain PyTorch side of ``benchmarks/framework_tax.py``: the digits quickstart written by hand.

    .venv/bin/python benchmarks/framework_tax_plain.py --data DIGITS_TREE --epochs 10 --seed 0 --output r.json

What a careful researcher writes without a framework, importing only torch, torchvision and Pillow (no
Lightning, no lit_vision): the ImageFolder tree decoded once into memory, the quickstart's transforms
(RandomResizedCrop 32 px, scale 0.85-1; evaluation resize to 32 / 0.95 and centre crop; the digits'
mean/std), torchvision's ResNet-18, AdamW 2e-3 with weight decay 0.05 off norms and biases, label
smoothing 0.1, cosine per step, validation top-1 after every epoch. No checkpoint, log file or progress bar: the
floor a framework is measured against. ``--fused``: torch's fused AdamW kernel (what lit-vision builds when a recipe
leaves the choice open) instead of torch's default ``foreach`` one. Writes its timings and accuracy as JSON.
"""

from __future__ import annotations

import argparse
import json
import time

T0 = time.time()  # before the imports: the process's own start-up is part of the measurement

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

MEAN, STD = [0.308] * 3, [0.349] * 3  # the digits' statistics, as the quickstart's DataModule uses


class Cached(Dataset):
    def __init__(self, root: str, transform: v2.Transform) -> None:
        folder = torchvision.datasets.ImageFolder(root)
        self.images = [Image.open(p).convert("RGB") for p, _ in folder.samples]
        self.labels = [label for _, label in folder.samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), self.labels[i]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", required=True)
    parser.add_argument("--fused", action="store_true", help="AdamW(fused=True): the kernel lit-vision picks")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    train_tf = v2.Compose([v2.ToImage(), v2.RandomResizedCrop(32, scale=(0.85, 1.0), antialias=True),
                           v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    eval_tf = v2.Compose([v2.ToImage(), v2.Resize(int(32 / 0.95), antialias=True), v2.CenterCrop(32),
                          v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    train = DataLoader(Cached(f"{args.data}/train", train_tf), batch_size=64, shuffle=True, drop_last=True)  # as the DataModule
    val = DataLoader(Cached(f"{args.data}/val", eval_tf), batch_size=64)
    model = torchvision.models.resnet18(num_classes=10)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=2e-3,
                            weight_decay=0.05, fused=True if args.fused else None)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs * len(train))
    t_first = None
    train_time, images, accs = 0.0, 0, []
    for _ in range(args.epochs):
        model.train()
        t = time.perf_counter()
        for x, y in train:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            images += len(y)
            if t_first is None:
                t_first = time.time()
        train_time += time.perf_counter() - t
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in val:
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        accs.append(correct / total)
    with open(args.output, "w") as f:
        json.dump({"start": T0, "first_step": t_first, "train_time": train_time, "train_images": images,
                   "val_acc1": accs[-1], "val_acc1_per_epoch": accs, "end": time.time()}, f)


if __name__ == "__main__":
    main()
