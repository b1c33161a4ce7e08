"""The lit_vision side's probe in ``benchmarks/yolo_vs_ultralytics.py``: epoch clock, threads, parameters, FLOPs.

Loaded by ``lit-vision fit`` as a callback (``PYTHONPATH`` = this folder). It sets torch's intra-op threads in the
training process (as the Ultralytics side does in its own), stamps the wall clock at each epoch's start and end
(the end after that epoch's validation) and counts parameters and forward FLOPs with torch's counter, the same
counter the Ultralytics side uses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.flop_counter import FlopCounterMode


class EpochClock(Callback):
    """Writes ``{"fit_start", "epoch_start": [...], "epoch_end": [...], "fit_end", "params", "gflops", "threads"}``
    (``time.time()`` stamps) to ``path`` after every epoch, so even a killed run leaves its timings."""

    def __init__(self, path: str, threads: int, image_size: int) -> None:
        torch.set_num_threads(threads)
        self.path, self.image_size = Path(path), image_size
        self.info: dict[str, Any] = {"epoch_start": [], "epoch_end": [], "threads": torch.get_num_threads()}

    def _dump(self) -> None:
        self.path.write_text(json.dumps(self.info))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.info["fit_start"] = time.time()
        self.info["params"] = sum(p.numel() for p in pl_module.parameters())
        was_training = pl_module.training
        try:  # one image through the eval forward (post-processing has no counted FLOPs)
            pl_module.eval()
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                pl_module([torch.zeros(3, self.image_size, self.image_size, device=pl_module.device)])
            self.info["gflops"] = counter.get_total_flops() / 1e9
        except Exception:  # noqa: BLE001 -- a statistic, not a reason to fail the run
            self.info["gflops"] = None
        pl_module.train(was_training)
        self._dump()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.info["epoch_start"].append(time.time())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.info["epoch_end"].append(time.time())  # Lightning runs the epoch's validation before this hook
        self._dump()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.info["fit_end"] = time.time()
        self._dump()
