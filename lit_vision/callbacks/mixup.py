"""Batch-level MixUp / CutMix as a callback, applied on the training device.

Why a callback and not a collate function: it runs after the batch reached the accelerator (no CPU cost in the
workers), it only touches training batches, and it needs ``num_classes`` which lives on the LightningModule.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torchvision.transforms import v2

__all__ = ["MixupCutmix"]


class MixupCutmix(Callback):
    """Mix training batches with MixUp or CutMix (``torchvision.transforms.v2``) and turn labels into soft targets.

    For every training batch (a dict with ``"image"`` ``[N, C, H, W]`` and ``"label"`` ``[N]`` or ``[N, K]``), in
    ``on_train_batch_start`` and in place:

    1. with probability ``1 - prob`` the batch is left completely untouched (hard ``LongTensor`` labels stay hard;
       the task's ``F.cross_entropy`` accepts both, and gives the same value for a hard label and its one-hot);
    2. otherwise CutMix is chosen with probability ``switch_prob`` when both are enabled (else the enabled one), and
       ``batch["image"]``/``batch["label"]`` are replaced by the mixed images and ``FloatTensor[N, num_classes]``
       targets whose rows sum to 1.

    Pairing (torchvision's convention): sample ``i`` is mixed with sample ``i - 1`` (``x.roll(1, 0)``), so the batch
    must be shuffled. MixUp: ``x' = lam * x + (1 - lam) * x.roll(1, 0)``, ``y' = lam * y + (1 - lam) * y.roll(1, 0)``
    with ``lam ~ Beta(mixup_alpha, mixup_alpha)``. CutMix pastes one random box from the rolled image and sets ``lam``
    to the fraction of pixels *not* pasted. One ``lam``/box per batch. Randomness comes from torch's global CPU RNG
    (seeded by ``seed_everything``), so runs are reproducible. Other keys (``"path"``...) are left alone.

    Label smoothing is deliberately not done here: the task applies it in its loss.

    Args:
        mixup_alpha: Beta parameter for MixUp; ``0`` disables MixUp.
        cutmix_alpha: Beta parameter for CutMix; ``0`` disables CutMix.
        switch_prob: probability of using CutMix instead of MixUp when both are enabled.
        prob: probability of mixing a given batch at all.
    """

    def __init__(
        self,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        switch_prob: float = 0.5,
        prob: float = 1.0,
    ) -> None:
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(
                f"MixupCutmix alphas must be >= 0 (0 disables), got mixup_alpha={mixup_alpha}, "
                f"cutmix_alpha={cutmix_alpha}."
            )
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise ValueError("MixupCutmix needs mixup_alpha > 0 or cutmix_alpha > 0; remove the callback to disable it.")
        if not 0.0 <= switch_prob <= 1.0:
            raise ValueError(f"MixupCutmix switch_prob must be in [0, 1], got {switch_prob}.")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"MixupCutmix prob must be in [0, 1], got {prob}.")
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.switch_prob = float(switch_prob)
        self.prob = float(prob)
        self._mixup: v2.MixUp | None = None
        self._cutmix: v2.CutMix | None = None
        self.num_classes: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Build the transforms lazily: ``num_classes`` is only known from the module."""
        num_classes = getattr(pl_module, "num_classes", None)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                "MixupCutmix needs the LightningModule to expose a positive int attribute `num_classes`, "
                f"got {num_classes!r} on {type(pl_module).__name__}."
            )
        self.num_classes = num_classes
        self._mixup = v2.MixUp(alpha=self.mixup_alpha, num_classes=num_classes) if self.mixup_alpha > 0 else None
        self._cutmix = v2.CutMix(alpha=self.cutmix_alpha, num_classes=num_classes) if self.cutmix_alpha > 0 else None

    def _choose(self) -> v2.MixUp | v2.CutMix | None:
        """Draw whether to mix this batch and with which transform (``None``: leave it alone)."""
        if self.prob < 1.0 and float(torch.rand(())) >= self.prob:
            return None
        if self._mixup is not None and self._cutmix is not None:
            return self._cutmix if float(torch.rand(())) < self.switch_prob else self._mixup
        return self._mixup if self._mixup is not None else self._cutmix

    @torch.no_grad()
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        """Mix the (already on-device) batch in place; the same dict object is then given to ``training_step``."""
        if self._mixup is None and self._cutmix is None:
            raise RuntimeError("MixupCutmix.setup() was not called before training.")
        if not isinstance(batch, dict) or "image" not in batch or "label" not in batch:
            raise TypeError(
                "MixupCutmix expects dict batches with 'image' and 'label' keys, got "
                f"{type(batch).__name__}{' with keys ' + str(list(batch)) if isinstance(batch, dict) else ''}."
            )
        transform = self._choose()
        if transform is None:
            return
        batch["image"], batch["label"] = transform(batch["image"], batch["label"])
