"""Writes ``predict_step`` outputs as JSON lines, one object per image, under the run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter


class JsonlPredictionWriter(BasePredictionWriter):
    """Appends each batch's predictions to ``<output_dir>/predictions.jsonl`` as it goes.

    Writing per batch keeps memory flat on large prediction sets. ``output_dir`` defaults to the
    trainer's ``log_dir`` (the run directory). Under DDP each rank writes ``predictions.rank<R>.jsonl``
    since ranks see disjoint samples.

    Args:
        output_dir: folder for the file; default: the run directory.
        filename: file name (without the rank suffix).
    """

    def __init__(self, output_dir: str | None = None, filename: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.filename = filename
        self.path: Path | None = None

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        folder = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = self.filename
        if trainer.world_size > 1:
            stem, dot, ext = name.rpartition(".")
            name = f"{stem}.rank{trainer.global_rank}{dot}{ext}" if dot else f"{name}.rank{trainer.global_rank}"
        self.path = folder / name
        self.path.write_text("")

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        assert self.path is not None
        rows = prediction if isinstance(prediction, list) else [prediction]
        with self.path.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
