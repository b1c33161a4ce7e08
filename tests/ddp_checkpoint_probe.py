"""Run by ``tests/callbacks/test_checkpoint_io.py`` as a script: a 2-process DDP fit (gloo, CPU) with slow
background checkpoint writes; each rank prints what ``last.ckpt`` holds the moment ``fit`` returns."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import torch
from lightning.pytorch import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # Lightning re-runs this file for rank 1

from lit_vision.callbacks.checkpoint import LastCheckpoint  # noqa: E402
from tests.callbacks.test_checkpoint import Tiny  # noqa: E402

if __name__ == "__main__":
    out = Path(sys.argv[1])
    real_save = torch.save
    torch.save = lambda obj, f: (threading.Event().wait(1.0), real_save(obj, f))  # a slow disk: 1 s a write
    trainer = Trainer(default_root_dir=out, max_epochs=2, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, accelerator="cpu", devices=2, strategy="ddp",
                      callbacks=[LastCheckpoint(dirpath=str(out))])
    trainer.fit(Tiny())
    last = out / "last.ckpt"
    step = torch.load(last, weights_only=True)["global_step"] if last.exists() else None
    print(json.dumps({"rank": trainer.global_rank, "last_step": step, "final_step": trainer.global_step}), flush=True)
