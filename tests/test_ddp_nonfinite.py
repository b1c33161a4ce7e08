"""Two-process DDP (gloo): a NaN loss on rank 1 alone ends both ranks together, promptly, with the message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120


# Where the flags are read: at the logging interval (batch 3), or only at the end of the epoch, after the
# rank-0 progress bar has synchronised the epoch metrics (a collective the other rank makes later).
READS = {
    "log_interval": (["--trainer.log_every_n_steps", "3"], "last step 2"),
    "epoch_end": (["--trainer.log_every_n_steps", "50", "--trainer.limit_val_batches", "0",
                   "--trainer.enable_checkpointing", "false"], "last step 5"),
}


@pytest.mark.ddp
@pytest.mark.parametrize("read", list(READS))
def test_nan_on_one_rank_stops_every_rank_with_the_message(imagefolder_root: Path, tmp_path: Path, read: str) -> None:
    dump = tmp_path / "dump"
    read_args, last_step = READS[read]
    args = [
        str(Path(sys.executable).parent / "lit-vision"), "fit",
        "--model", "tests.nonfinite_probe.NaNLossOnRank", "--model.backbone", "tv/resnet18",
        "--model.nan_rank", "1", "--model.nan_step", "1",
        "--data", "ImageFolderDataModule", "--data.root", str(imagefolder_root), "--data.image_size", "32",
        "--data.batch_size", "2", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.max_epochs", "3", "--trainer.num_sanity_val_steps", "0", *read_args,
        "--trainer.enable_model_summary", "false",  # the progress bar stays on: rank 0 syncs metrics in it
        "--trainer.callbacks+=tests.nonfinite_probe.ExceptionDump", f"--trainer.callbacks.out_dir={dump}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    start = time.monotonic()
    # A session of its own: on a hang, the whole group (rank 0 and the rank 1 it launched) is killed.
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        # communicate() returns once both ranks have closed the pipes they share, i.e. both have exited.
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"DDP run still going after {TIMEOUT_S} s (a hang):\n{out[-2000:]}\n{err[-3000:]}")
    elapsed = time.monotonic() - start
    assert proc.returncode == 3, out[-2000:] + err[-3000:]
    assert elapsed < TIMEOUT_S

    # Both ranks stopped with the error at the same read, naming rank 1's step 1 (6 batches per rank and epoch).
    for rank in (0, 1):
        kind, last, message = (dump / f"rank{rank}.txt").read_text().split("\n", 2)
        assert kind == "NonFiniteLossError" and last == last_step, (rank, kind, last)
        assert "non-finite loss at global step 1 (epoch 0, batch 1) on rank 1 of 2: loss=nan" in message
        assert "batch samples: " in message
    # Each rank's lit-vision printed the one-message error (and so returned exit code 3).
    assert err.count("lit-vision fit: error: non-finite loss at global step 1") == 2, err[-3000:]
    assert not list((tmp_path / "runs").rglob("*.ckpt"))
