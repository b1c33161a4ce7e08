"""Two-process DDP on the CPU (gloo): metrics and EMA weights agree across ranks and with one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lit_vision.data import ImageFolderDataModule
from lit_vision.tasks import ImageClassifier

REPO = Path(__file__).resolve().parents[1]


def ddp_fit(root: Path) -> list[str]:
    """``lit-vision fit`` of a tiny classifier on 2 CPU processes (gloo), 2 epochs."""
    return [str(Path(sys.executable).parent / "lit-vision"), "fit",
            "--model", "ImageClassifier", "--model.backbone", "tv/resnet18",
            "--data", "ImageFolderDataModule", "--data.root", str(root), "--data.image_size", "32",
            "--data.batch_size", "4", "--data.num_workers", "0",
            "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--trainer.max_epochs", "2"]


@pytest.mark.ddp
def test_ddp_two_processes_agree_on_metrics_and_ema_weights(imagefolder_root: Path, tmp_path: Path) -> None:
    dump = tmp_path / "dump"
    args = [
        *ddp_fit(imagefolder_root), "--trainer.enable_checkpointing", "false",
        "--trainer.enable_model_summary", "false", "--trainer.logger", "false",
        "--trainer.callbacks+=EMA", "--trainer.callbacks.decay", "0.8",
        "--trainer.callbacks+=tests.ddp_probe.RankDump", f"--trainer.callbacks.out_dir={dump}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(dump / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2

    # Every rank ends with bit-identical EMA weights (each averages identical, all-reduced weights).
    assert r0["state_dict"].keys() == r1["state_dict"].keys()
    for key, value in r0["state_dict"].items():
        assert torch.equal(value, r1["state_dict"][key]), key

    # Epoch metrics are synchronised: both ranks report the same validation numbers ...
    for key in ("val/acc1", "val/acc5", "val/loss"):
        assert r0["metrics"][key] == pytest.approx(r1["metrics"][key], abs=1e-6), key

    # ... and they equal a single-process evaluation of the same weights on the whole validation set
    # (12 images split 6 + 6 by the DistributedSampler, so no padding duplicates).
    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=12, num_workers=0)
    data.setup("validate")
    model = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names)
    model.load_state_dict(r0["state_dict"])
    model.eval()
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        logits = model(batch["image"])
    acc1 = (logits.argmax(1) == batch["label"]).float().mean().item()
    assert r0["metrics"]["val/acc1"] == pytest.approx(acc1, abs=1e-6)

    # Validation pictures (added by the CLI): rank 0 drew the whole set, gathered from both shards - all 12 images
    # in the fixed panel, and the worst 8 (more than one rank's 6) as a single process ranks them.
    [pictures] = r0["pictures"]
    assert pictures["panel"] == list(range(12))
    losses = torch.nn.functional.cross_entropy(logits, batch["label"], reduction="none")
    assert [i for _, i in pictures["worst"]] == losses.topk(8).indices.tolist()
    assert pictures["confusion"].sum() == 12 and torch.equal(pictures["confusion"], r1["pictures"][0]["confusion"])
    assert (tmp_path / "pictures" / "val_epoch001.png").is_file()


@pytest.mark.ddp
def test_an_exception_on_one_rank_ends_both_processes_with_its_message(imagefolder_root: Path, tmp_path: Path) -> None:
    """Rank 1 alone meets a bad batch: rank 0 must not wait for it forever, and the message must be shown."""
    args = [
        *ddp_fit(imagefolder_root), "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks+=tests.resume_probe.FailOnRank", "--trainer.callbacks.rank=1", "--trainer.callbacks.step=2",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "RuntimeError: bad batch on rank 1 at step 2" in proc.stdout + proc.stderr
    # No rank outlives the launcher (the other rank's command line names this test's folder).
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path / "runs") not in ps
