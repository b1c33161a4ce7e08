"""A callback the DDP test loads into ``lit-vision`` subprocesses: each rank dumps what it ended with."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class RankDump(Callback):
    """Saves, per rank, the final weights (EMA-averaged when EMA is on) and the epoch-level metrics."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "world_size": trainer.world_size,
                "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
                "state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
            },
            self.out_dir / f"rank{trainer.global_rank}.pt",
        )
