"""A diverging ``lit-vision fit`` fails (exit code 3) with one message and leaves no non-finite checkpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent / "lit-vision"
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_at_lr_1e6_exits_3_naming_the_step_and_writes_no_nan_checkpoint(tmp_path: Path) -> None:
    # Issue 9's report (lr 1e6: NaN from the first steps; it used to exit 0 with a NaN "best" checkpoint),
    # shortened to 12 training batches; the recipe's log_every_n_steps=10 is the read interval.
    args = [str(BIN), "fit", "--config", str(REPO / "experiments/classification/quickstart.yaml"),
            "--model.optimizer.lr", "1e6", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "12",
            "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # LIT_VISION_CACHE: the session's (tests/conftest.py)
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-3000:]
    match = re.search(r"lit-vision fit: error: non-finite (loss|gradient).* at global step (\d+) \(epoch 0, batch \d+\)",
                      proc.stderr)
    assert match, proc.stderr[-3000:]
    assert int(match.group(2)) < 10  # the first read (batch 10) stops it
    assert "batch samples: " in proc.stderr and "digits" in proc.stderr
    assert "Traceback" not in proc.stderr and "Validation summary" not in proc.stdout
    for path in (tmp_path / "runs").rglob("*.ckpt"):  # none is expected; any that exists must be finite
        state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path
