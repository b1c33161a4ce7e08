"""``lit-vision`` as a user runs it: a subprocess for fit / validate / test / predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lit_vision.callbacks import LastCheckpoint
from lit_vision.cli import run_cli

BIN = Path(sys.executable).parent / "lit-vision"


def lit_vision(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(BIN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"lit-vision {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def common(root: Path) -> list[str]:
    return [
        "--model", "ImageClassifier", "--model.backbone", "tv/resnet18",
        "--data", "ImageFolderDataModule", "--data.root", str(root), "--data.image_size", "32",
        "--data.batch_size", "4", "--data.num_workers", "0", "--trainer.accelerator", "cpu",
        "--trainer.enable_model_summary", "false",
    ]


@pytest.fixture(scope="module")
def trained(imagefolder_root: Path, module_tmp: Callable[[str], Path]) -> tuple[Path, Path]:
    """One real (tiny) fit that writes a best checkpoint, shared by the tests below."""
    cwd = module_tmp("cli")
    proc = lit_vision(
        "fit", *common(imagefolder_root), "--trainer.max_epochs", "2", "--trainer.log_every_n_steps", "1",
        "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.monitor", "val/acc1",
        "--trainer.callbacks.mode", "max", "--trainer.callbacks+=EMA", "--trainer.callbacks.decay", "0.9",
        cwd=cwd,
    )
    assert "Validation summary" in proc.stdout and "val/acc1" in proc.stdout
    ckpts = sorted((cwd / "runs").rglob("*.ckpt"))
    assert [c.name for c in ckpts if c.name == "last.ckpt"] == ["last.ckpt"], ckpts  # the latest state, for resuming
    best = [c for c in ckpts if c.name != "last.ckpt"]
    assert len(best) == 1, ckpts
    return cwd, best[0]


def test_fit_fast_dev_run_with_short_class_names(imagefolder_root: Path, tmp_path: Path) -> None:
    proc = lit_vision("fit", *common(imagefolder_root), "--trainer.fast_dev_run", "2",
                      "--trainer.callbacks+=LRWarmup", "--trainer.callbacks.warmup_steps", "2",
                      "--trainer.callbacks+=MixupCutmix", "--trainer.callbacks.mixup_alpha", "0.2", cwd=tmp_path)
    assert "val/acc1" in proc.stdout


def test_fit_writes_config_metrics_and_a_best_checkpoint(trained: tuple[Path, Path]) -> None:
    cwd, ckpt = trained
    run_dir = ckpt.parent.parent
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.csv").is_file()
    run_info = (run_dir / "run_info.yaml").read_text()  # lit_vision.cli.run_info: the command line, versions, git
    assert "- fit\n" in run_info and "torchvision:" in run_info
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "val/acc1" in header and "train/loss_step" in header
    hparams = torch.load(ckpt, weights_only=True, map_location="cpu")["hyper_parameters"]
    assert hparams["class_names"] == ["cat", "dog", "eel"] and hparams["num_classes"] == 3


@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_from_a_checkpoint(trained: tuple[Path, Path], imagefolder_root: Path, command: str) -> None:
    cwd, ckpt = trained
    proc = lit_vision(command, *common(imagefolder_root), "--ckpt_path", str(ckpt), cwd=cwd)
    assert f"{'val' if command == 'validate' else 'test'}/acc1" in proc.stdout


def test_fast_dev_run_validate_test_predict(imagefolder_root: Path, tmp_path: Path) -> None:
    for command in ("validate", "test", "predict"):
        lit_vision(command, *common(imagefolder_root), "--trainer.fast_dev_run", "1", cwd=tmp_path)


def test_predict_from_checkpoint_alone_writes_top5_names(trained: tuple[Path, Path], imagefolder_root: Path) -> None:
    """No data root: the class names come from the checkpoint."""
    cwd, ckpt = trained
    proc = lit_vision(
        "predict", "--model", "ImageClassifier", "--data", "ImageFolderDataModule",
        "--data.predict_paths", str(imagefolder_root / "test"), "--data.image_size", "32",
        "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--ckpt_path", str(ckpt), cwd=cwd,
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("Predictions written to ")][-1]
    out = Path(line.removeprefix("Predictions written to ").strip())
    out = out if out.is_absolute() else cwd / out
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert len(rows) == 6 and out.suffix == ".jsonl"
    for row in rows:
        assert Path(row["path"]).is_file()
        assert sorted(row["top_k"]) == ["cat", "dog", "eel"]  # top-5 capped at the 3 classes
        assert row["probs"] == sorted(row["probs"], reverse=True) and abs(sum(row["probs"]) - 1) < 1e-4


def test_class_count_is_linked_from_the_data(imagefolder_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = run_cli(common(imagefolder_root), run=False)
    assert cli.model.num_classes == 3 and cli.model.class_names == ["cat", "dog", "eel"]
    assert cli.model.model.head.fc.out_features == 3


def test_print_config_shows_the_resolved_recipe(imagefolder_root: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", *common(imagefolder_root), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "backbone: tv/resnet18" in printed and "class_path: lit_vision.tasks.ImageClassifier" in printed


def test_unknown_backbone_fails_before_training_with_suggestions(imagefolder_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="resnet18"):
        run_cli([*common(imagefolder_root), "--model.backbone", "tv/resnet19"], run=False)


def test_bad_data_root_fails_before_the_model_is_built(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="no train/ folder"):
        run_cli(common(tmp_path), run=False)


def test_default_checkpoint_keeps_the_best_epoch_by_the_task_metric(imagefolder_root: Path, tmp_path: Path,
                                                                      monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = run_cli(common(imagefolder_root), run=False)
    ckpt = cli.trainer.checkpoint_callback
    assert ckpt.monitor == "val/acc1" and ckpt.mode == "max" and not ckpt.save_last
    assert any(isinstance(c, LastCheckpoint) for c in cli.trainer.callbacks)  # last.ckpt: every epoch, not on improvement
    explicit = run_cli([*common(imagefolder_root), "--trainer.callbacks+=ModelCheckpoint",
                        "--trainer.callbacks.every_n_epochs=2"], run=False)
    assert explicit.trainer.checkpoint_callback.monitor is None  # what the user configured is kept


def test_progress_bar_is_rich(imagefolder_root: Path, tmp_path: Path, monkeypatch) -> None:
    """Lightning picks its RichProgressBar when rich is installed (a runtime dependency of ours)."""
    from lightning.pytorch.callbacks import RichProgressBar

    monkeypatch.chdir(tmp_path)
    assert isinstance(run_cli(common(imagefolder_root), run=False).trainer.progress_bar_callback, RichProgressBar)
