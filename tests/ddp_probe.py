"""A callback the DDP test loads into ``lit-vision`` subprocesses: each rank dumps what it ended with."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class RankDump(Callback):
    """Saves, per rank, the final weights (EMA-averaged when EMA is on), the epoch-level metrics and what the
    validation pictures showed last (gathered on rank 0)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "world_size": trainer.world_size,
                "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
                "state_dict": {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
                "pictures": [{"panel": c.last_panel, "worst": c.last_worst, "confusion": pl_module.eval_reports["val"].confusion}
                             for c in trainer.callbacks if type(c).__name__ == "ValidationPictures"],
            },
            self.out_dir / f"rank{trainer.global_rank}.pt",
        )
