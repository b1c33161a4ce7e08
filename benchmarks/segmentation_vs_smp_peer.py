"""The peer side of ``benchmarks/segmentation_vs_smp.py``: the segmentation quickstart as a plain PyTorch loop
around segmentation_models_pytorch's ``DeepLabV3Plus``.

    PYTHONPATH=SMP_DIR .venv/bin/python benchmarks/segmentation_vs_smp_peer.py --voc VOC2012_DIR --output r.json

Run with an smp installed outside this repo (a scratch venv or ``pip install --target``); smp is never a
lit_vision dependency. What a careful researcher writes with smp and no framework: the quickstart's VOC-layout
shapes tree decoded once into memory, the same training recipe as ``experiments/segmentation/quickstart.yaml``
(horizontal flip, ImageNet normalisation, batch 8, AdamW 2e-3 with weight decay 1e-4 off norms and biases,
cosine per step with a 25-step linear warm-up from 0.001, cross-entropy ignoring 255) and smp's DeepLabV3+ on a
ResNet-18 at output stride 16 with the quickstart's ASPP settings (rates 6/12/18, dropout 0.1). Validation
mIoU after every epoch from a whole-set confusion matrix (classes absent from both truth and prediction left
out of the mean, as lit_vision's metric does). No checkpoint, log file or progress bar. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time

T0 = time.time()  # before the imports: the process's own start-up is part of the measurement

import numpy as np  # noqa: E402
import segmentation_models_pytorch as smp  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
NUM_CLASSES, IGNORE = 4, 255


class Scenes(Dataset):
    def __init__(self, voc: str, split: str, flip: bool) -> None:
        ids = open(f"{voc}/ImageSets/Segmentation/{split}.txt").read().split()
        self.images = [torch.from_numpy(np.array(Image.open(f"{voc}/JPEGImages/{i}.jpg").convert("RGB")))
                       .permute(2, 0, 1).contiguous() for i in ids]
        self.masks = [torch.from_numpy(np.array(Image.open(f"{voc}/SegmentationClass/{i}.png"))) for i in ids]
        self.flip = flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.images[i], self.masks[i]
        if self.flip and torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return (image.float() / 255 - MEAN) / STD, mask.long()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--voc", required=True, help="the VOC2012 folder the quickstart's shapes writer made")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--output", required=True)
    parser.add_argument("--fused", action="store_true", help="AdamW(fused=True): the kernel lit-vision picks")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    train = DataLoader(Scenes(args.voc, "train", flip=True), batch_size=8, shuffle=True, drop_last=False,
                       num_workers=args.num_workers, persistent_workers=args.num_workers > 0)
    val = DataLoader(Scenes(args.voc, "val", flip=False), batch_size=8)
    model = smp.DeepLabV3Plus(encoder_name="resnet18", encoder_weights=None, encoder_output_stride=16,
                              decoder_atrous_rates=(6, 12, 18), decoder_aspp_dropout=0.1, classes=NUM_CLASSES)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=2e-3,
                            weight_decay=1e-4, fused=True if args.fused else None)
    total, warmup = args.epochs * len(train), 25
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)) * (0.001 + 0.999 * min(1.0, s / warmup)))
    t_first, train_time, images, mious = None, 0.0, 0, []
    for _ in range(args.epochs):
        model.train()
        t = time.perf_counter()
        for x, y in train:
            loss = F.cross_entropy(model(x), y, ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            images += len(y)
            if t_first is None:
                t_first = time.time()
        train_time += time.perf_counter() - t
        model.eval()
        confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
        with torch.no_grad():
            for x, y in val:
                pred, keep = model(x).argmax(1), y != IGNORE
                confusion += torch.bincount(y[keep] * NUM_CLASSES + pred[keep],
                                            minlength=NUM_CLASSES ** 2).view(NUM_CLASSES, NUM_CLASSES)
        tp = confusion.diag().double()
        union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
        mious.append(float((tp[union > 0] / union[union > 0]).mean()))
    with open(args.output, "w") as f:
        json.dump({"start": T0, "first_step": t_first, "train_time": train_time, "train_images": images,
                   "val_miou": mious[-1], "val_miou_per_epoch": mious, "end": time.time()}, f)


if __name__ == "__main__":
    main()
