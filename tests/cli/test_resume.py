"""Kill ``lit-vision fit`` with SIGKILL mid-epoch, resume with ``--ckpt_path last``: the same run, bit for bit.

Each case runs three subprocesses on the same data and seed (one thread each, so float reductions happen in
one order): the uninterrupted run, a run killed after a step checkpoint, and its resumption. The resumed run
must continue in the killed run's directory and end with the uninterrupted run's ``last.ckpt`` (weights,
EMA and live weights, optimizer state) and the same ``metrics.csv``, row for row.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.cli.test_detection import MODEL as DETECTOR
from tests.cli.test_detection import SIZE

BIN = Path(sys.executable).parent / "lit-vision"
REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(BIN), "fit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect, f"exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def tensors_equal(a: object, b: object, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            tensors_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            tensors_equal(x, y, f"{where}[{i}]")


def kill_resume_and_compare(args: list[str], kill_at: int, saved_at: int, tmp_path: Path, resume: str = "last") -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    run(args, whole)
    run([*args, "--trainer.callbacks+=tests.resume_probe.KillAt", f"--trainer.callbacks.step={kill_at}"], killed,
        expect=-9)
    run_dir = killed / "runs" / "lightning_logs" / "version_0"
    interrupted = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert interrupted["global_step"] == saved_at  # a mid-epoch step checkpoint is what survived
    assert interrupted["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] > 0
    proc = run([*args, "--ckpt_path", resume if resume == "last" else str(run_dir)], killed)
    assert "Restored all states" in proc.stdout + proc.stderr
    assert [p.name for p in (killed / "runs" / "lightning_logs").iterdir()] == ["version_0"]  # same directory
    expected = torch.load(whole / "runs/lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"]
    for key in ("state_dict", "current_model_state", "optimizer_states", "lr_schedulers"):
        if key in expected:
            tensors_equal(expected[key], resumed[key], key)
    assert (run_dir / "metrics.csv").read_text() == (whole / "runs/lightning_logs/version_0/metrics.csv").read_text()
    assert not list(run_dir.rglob(".*.tmp-*"))  # no partial files left behind


def classifier(root: Path, *extra: str) -> list[str]:
    return ["--model", "ImageClassifier", "--model.backbone", "tv/resnet18", "--model.label_smoothing", "0.1",
            "--data", "ImageFolderDataModule", "--data.root", str(root), "--data.image_size", "32",
            "--data.batch_size", "4", "--data.num_workers", "0", "--trainer.accelerator", "cpu",
            "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.log_every_n_steps", "1", "--seed_everything", "0", "--trainer.max_epochs", "2",
            "--trainer.callbacks+=EMA", "--trainer.callbacks.decay", "0.9",
            "--trainer.callbacks+=MixupCutmix", "--trainer.callbacks+=LRWarmup", "--trainer.callbacks.warmup_steps", "5",
            *extra]


@pytest.mark.slow
def test_classifier_with_ema_mixup_and_warmup_resumes_exactly(imagefolder_root: Path, tmp_path: Path) -> None:
    # 24 images / 4 = 6 steps per epoch; last.ckpt every 2 steps; killed after step 9 -> resumes from step 8.
    args = classifier(imagefolder_root, "--trainer.callbacks+=LastCheckpoint", "--trainer.callbacks.every_n_train_steps=2")
    kill_resume_and_compare(args, kill_at=9, saved_at=8, tmp_path=tmp_path)


@pytest.mark.slow
def test_detector_resumes_exactly_from_its_run_directory(tmp_path: Path) -> None:
    # 8 scenes / 4 = 2 steps per epoch, with flips and scale jitter; killed after step 4 -> resumes from step 3.
    cache = tmp_path / "shapes"
    args = [*DETECTOR, "--data", "ShapesDetectionDataModule", "--data.cache_dir", str(cache), "--data.num_train", "8",
            "--data.num_val", "4", "--data.scene_size", str(SIZE), "--data.image_size", str(SIZE),
            "--data.batch_size", "4", "--data.num_workers", "0", "--trainer.accelerator", "cpu",
            "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.log_every_n_steps", "1", "--seed_everything", "0", "--trainer.max_epochs", "3",
            "--model.optimizer", "torch.optim.Adam", "--model.optimizer.lr", "1e-3",
            "--trainer.callbacks+=LastCheckpoint", "--trainer.callbacks.every_n_train_steps=1"]
    kill_resume_and_compare(args, kill_at=4, saved_at=3, tmp_path=tmp_path, resume="run directory")


@pytest.mark.slow
@pytest.mark.ddp
def test_two_process_ddp_resumes_exactly(imagefolder_root: Path, tmp_path: Path) -> None:
    # 24 images / 2 ranks / 4 = 3 steps per epoch; every rank is killed after step 5 -> resumes from step 4.
    args = classifier(imagefolder_root, "--trainer.devices", "2", "--trainer.strategy", "ddp",
                      "--trainer.callbacks+=LastCheckpoint", "--trainer.callbacks.every_n_train_steps=1")
    kill_resume_and_compare(args, kill_at=5, saved_at=4, tmp_path=tmp_path)


def test_last_with_nothing_to_resume_starts_a_new_run(imagefolder_root: Path, tmp_path: Path, monkeypatch) -> None:
    from lit_vision.cli import run_cli

    monkeypatch.chdir(tmp_path)
    cli = run_cli(["fit", *classifier(imagefolder_root, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"),
                   "--ckpt_path", "last"])
    assert cli.trainer.global_step == 1 and cli.trainer.ckpt_path is None
    assert (tmp_path / "runs/lightning_logs/version_0/checkpoints/last.ckpt").is_file()


def _quick(root: Path, *extra: str) -> list[str]:
    return ["fit", "--model", "ImageClassifier", "--model.backbone", "tv/resnet18", "--data", "ImageFolderDataModule",
            "--data.root", str(root), "--data.image_size", "32", "--data.batch_size", "4", "--data.num_workers", "0",
            "--trainer.accelerator", "cpu", "--trainer.enable_model_summary", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "0", "--pictures", "false", *extra]


def test_last_resumes_without_a_logger_and_with_wandb(imagefolder_root: Path, tmp_path: Path, monkeypatch) -> None:
    """``last`` looked only under CSV/TensorBoard run folders: without a logger, or with W&B, every restart trained
    from scratch (and overwrote the previous run's last.ckpt)."""
    from lit_vision.cli import run_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    import wandb

    for logger in (["--trainer.logger", "false"], ["--trainer.logger", "lit_vision.loggers.WandB",
                                                     "--trainer.logger.init_args.project", "p"]):
        try:
            first = run_cli(_quick(imagefolder_root, *logger, "--trainer.max_steps", "1"))
            wandb.finish()  # in one process a W&B run stays open after fit; the next logger would reuse it
            second = run_cli(_quick(imagefolder_root, *logger, "--trainer.max_steps", "2", "--ckpt_path", "last"))
        finally:
            wandb.finish()
        assert second.trainer.ckpt_path is not None and Path(second.trainer.ckpt_path).name == "last.ckpt"
        assert second.trainer.global_step == 2  # continued from step 1, not trained 2 steps from scratch
        if logger[1] != "false":
            assert second.trainer.logger.version == first.trainer.logger.version  # the same W&B run id
            assert Path(second.trainer.ckpt_path).parent.parent.name == first.trainer.logger.version


def test_a_runs_checkpoints_folder_resumes_into_that_run(imagefolder_root: Path, tmp_path: Path, monkeypatch) -> None:
    from lit_vision.cli import run_cli

    monkeypatch.chdir(tmp_path)
    run_cli(_quick(imagefolder_root, "--trainer.max_steps", "1"))
    folder = tmp_path / "runs/lightning_logs/version_0/checkpoints"
    again = run_cli(_quick(imagefolder_root, "--trainer.max_steps", "2", "--ckpt_path", str(folder)))
    assert again.trainer.global_step == 2 and Path(again.trainer.log_dir) == folder.parent  # not checkpoints/ itself
    assert not (folder / "checkpoints").exists()
    # The first session's config is kept beside the resumed one's (which turns initial weights off).
    first, resumed = (yaml.safe_load((folder.parent / n).read_text()) for n in ("config.session1.yaml", "config.yaml"))
    assert first["trainer"]["max_steps"] == 1 and resumed["trainer"]["max_steps"] == 2
