"""WandbLogger: offline without credentials, and it records hyper-parameters and metrics."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest

from lit_vision.data import ImageFolderDataModule
from lit_vision.loggers import WandbLogger, wandb_has_credentials
from lit_vision.tasks import ImageClassifier


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_offline_without_an_api_key(no_credentials: None, tmp_path: Path) -> None:
    assert not wandb_has_credentials()
    assert WandbLogger(save_dir=str(tmp_path))._offline is True


def test_online_when_a_key_or_netrc_entry_exists(no_credentials: None, tmp_path: Path, monkeypatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_has_credentials() and WandbLogger(save_dir=str(tmp_path))._offline is False
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert WandbLogger(save_dir=str(tmp_path))._offline is True
    assert WandbLogger(save_dir=str(tmp_path), offline=True)._offline is True


def test_offline_run_records_hyperparameters_and_metrics(
    no_credentials: None, imagefolder_root: Path, tmp_path: Path
) -> None:
    import wandb

    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    model = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names, label_smoothing=0.1)
    logger = WandbLogger(save_dir=str(tmp_path / "runs"), project="lit-vision-test")
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=logger, log_every_n_steps=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data)
    run = logger.experiment
    assert run.config["backbone"] == "tv/resnet18" and run.config["label_smoothing"] == 0.1
    assert list(run.config["class_names"]) == ["cat", "dog", "eel"]
    assert {"val/acc1", "val/loss", "train/loss_step"} <= set(run.summary.keys())
    assert run.summary["val/acc1"] == pytest.approx(float(trainer.callback_metrics["val/acc1"]))
    wandb.finish()
    # Offline runs keep everything in one transaction log, which `wandb sync` uploads later.
    record = next((tmp_path / "runs" / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
    assert b"tv/resnet18" in record and b"val/acc1" in record
