"""WandB: offline without credentials; hyper-parameters, metrics, checkpoints (log_model) and the full CLI
config with run info all reach the offline run (read back with tests/wandb_offline.py)."""

from __future__ import annotations

import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_vision.callbacks import LastCheckpoint
from lit_vision.data import ImageFolderDataModule
from lit_vision.loggers import WandB, wandb_has_credentials
from lit_vision.tasks import ImageClassifier
from tests.wandb_offline import isolate_wandb, read_offline_run


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_offline_without_an_api_key(no_credentials: None, tmp_path: Path) -> None:
    assert not wandb_has_credentials()
    assert WandB(save_dir=str(tmp_path))._offline is True


def test_online_when_a_key_or_netrc_entry_exists(no_credentials: None, tmp_path: Path, monkeypatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_has_credentials() and WandB(save_dir=str(tmp_path))._offline is False
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert WandB(save_dir=str(tmp_path))._offline is True
    assert WandB(save_dir=str(tmp_path), offline=True)._offline is True


def test_offline_run_records_hyperparameters_and_metrics(
    no_credentials: None, imagefolder_root: Path, tmp_path: Path
) -> None:
    import wandb

    data = ImageFolderDataModule(root=str(imagefolder_root), image_size=32, batch_size=4, num_workers=0)
    model = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names, label_smoothing=0.1)
    logger = WandB(save_dir=str(tmp_path / "runs"), project="lit-vision-test")
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=logger, log_every_n_steps=1, limit_train_batches=2,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data)
    run = logger.experiment
    assert run.config["backbone"] == "tv/resnet18" and run.config["label_smoothing"] == 0.1
    assert list(run.config["class_names"]) == ["cat", "dog", "eel"]
    assert {"val/acc1", "val/loss", "train/loss_step"} <= set(run.summary.keys())
    assert run.summary["val/acc1"] == pytest.approx(float(trainer.callback_metrics["val/acc1"]))
    wandb.finish()
    # Offline runs keep everything in one transaction log, which `wandb sync` uploads later.
    recorded = read_offline_run(tmp_path / "runs")
    assert recorded.config["backbone"] == "tv/resnet18" and recorded.config["label_smoothing"] == 0.1
    assert recorded.metric("val/acc1") == [pytest.approx(float(trainer.callback_metrics["val/acc1"]))]


# --- the short name, log_model offline, the full config and run info -------------------------------------------

def _cli_args(root: Path, save_dir: Path, *extra: str) -> list[str]:
    return ["--model", "ImageClassifier", "--model.backbone", "tv/resnet18",
            "--data", "ImageFolderDataModule", "--data.root", str(root), "--data.image_size", "32",
            "--data.batch_size", "4", "--data.num_workers", "0", "--trainer.accelerator", "cpu",
            "--trainer.enable_model_summary", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.logger", "WandB", "--trainer.logger.save_dir", str(save_dir), *extra]


def test_short_name_wandb_is_ours_on_the_command_line_and_in_yaml(
    imagefolder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

    import lit_vision.loggers
    from lit_vision.cli import run_cli

    save_dir = isolate_wandb(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    cli = run_cli(_cli_args(imagefolder_root, save_dir, "--trainer.logger.log_model", "true"), run=False)
    assert type(cli.trainer.logger) is WandB and cli.trainer.logger._log_model is True
    assert cli.trainer.logger._offline is True and cli.trainer.logger.save_dir == str(save_dir)

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"trainer:\n  logger:\n    class_path: WandB\n    init_args:\n      save_dir: {save_dir}\n"
                      f"      project: from-yaml\n")
    args = [a for a in _cli_args(imagefolder_root, save_dir) if a not in ("--trainer.logger", "WandB")]
    args = args[:args.index("--trainer.logger.save_dir")]
    cli = run_cli(["--config", str(recipe), *args], run=False)
    assert type(cli.trainer.logger) is WandB and cli.trainer.logger.name == "from-yaml"
    # The former name stays importable from Python; as a short name it is Lightning's class (use WandB).
    assert lit_vision.loggers.WandbLogger is WandB and WandB.__name__ == "WandB"
    cli = run_cli([*args, "--trainer.logger", "WandbLogger", "--trainer.logger.offline", "true"], run=False)
    assert type(cli.trainer.logger) is LightningWandbLogger


def _fit(logger: WandB, root: Path, tmp_path: Path, epochs: int = 2) -> tuple[pl.Trainer, ModelCheckpoint]:
    data = ImageFolderDataModule(root=str(root), image_size=32, batch_size=4, num_workers=0)
    model = ImageClassifier(backbone="tv/resnet18", class_names=data.class_names)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/acc1", mode="max", save_top_k=1,
                           filename="best-{epoch}")
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, limit_train_batches=2, logger=logger,
                         callbacks=[LastCheckpoint(dirpath=str(tmp_path / "ckpt")), best],  # last first on purpose
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data)
    return trainer, best


def _staged(artifact: dict) -> bytes:
    assert artifact["files"] == ["model.ckpt"]
    return Path(artifact["local_paths"][0]).read_bytes()


def test_log_model_true_offline_logs_best_and_last(
    imagefolder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    save_dir = isolate_wandb(monkeypatch, tmp_path)
    logger = WandB(save_dir=str(save_dir), project="lit-vision-test", log_model=True)
    assert logger._offline is True
    trainer, best = _fit(logger, imagefolder_root, tmp_path)
    run_id = logger.experiment.id
    wandb.finish()
    models = [a for a in read_offline_run(save_dir).artifacts if a["type"] == "model"]
    assert [a["name"] for a in models] == [f"model-{run_id}"] * 2, models  # one collection, two versions
    by_file = {a["metadata"]["original_filename"]: a for a in models}
    best_path, last_path = Path(best.best_model_path), tmp_path / "ckpt" / "last.ckpt"
    assert set(by_file) == {best_path.name, "last.ckpt"}
    assert sorted(by_file[best_path.name]["aliases"]) == ["best", "latest"]
    assert by_file["last.ckpt"]["aliases"] == ["latest"]  # never "best", and logged after it: "latest" ends here
    assert models[-1]["metadata"]["original_filename"] == "last.ckpt"
    assert by_file[best_path.name]["metadata"]["score"] == pytest.approx(float(best.best_model_score))
    assert _staged(by_file[best_path.name]) == best_path.read_bytes()
    assert _staged(by_file["last.ckpt"]) == last_path.read_bytes()


def test_log_model_all_offline_logs_every_checkpoint(
    imagefolder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    save_dir = isolate_wandb(monkeypatch, tmp_path)
    logger = WandB(save_dir=str(save_dir), log_model="all")
    _fit(logger, imagefolder_root, tmp_path, epochs=2)
    wandb.finish()
    models = [a for a in read_offline_run(save_dir).artifacts if a["type"] == "model"]
    lasts = [a for a in models if a["metadata"]["original_filename"] == "last.ckpt"]
    assert len(lasts) == 2 and all(a["aliases"] == ["latest"] for a in lasts)  # one per epoch end
    assert any("best" in a["aliases"] for a in models if a["metadata"]["original_filename"].startswith("best-"))


def _git_repo(path: Path) -> str:
    """A repository with one commit; returns its hash (as ``git log`` reports it)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              check=True, capture_output=True, text=True).stdout.strip()
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q")
    (path / "recipe.txt").write_text("v1\n")
    git("add", "recipe.txt")
    git("commit", "-q", "-m", "first")
    return git("log", "-1", "--format=%H")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_run_info_git_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lit_vision
    from lit_vision.cli.run_info import run_info

    monkeypatch.chdir(tmp_path)
    assert run_info()["git"] is None  # not in a repository
    commit = _git_repo(tmp_path / "repo")
    monkeypatch.chdir(tmp_path / "repo")
    info = run_info()
    assert info["git"] == {"root": str((tmp_path / "repo").resolve()), "commit": commit, "dirty": False}
    (tmp_path / "repo" / "output.txt").write_text("untracked files do not count\n")
    assert run_info()["git"]["dirty"] is False
    (tmp_path / "repo" / "recipe.txt").write_text("v2\n")
    assert run_info()["git"]["dirty"] is True
    package_root = Path(lit_vision.__file__).resolve().parents[1]
    if (package_root / ".git").exists():  # an editable checkout: its own state is recorded too
        assert info["package_git"]["root"] == str(package_root) and len(info["package_git"]["commit"]) == 40
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["wandb"] == wandb_version()
    assert info["python"] == platform.python_version() and info["command"] == sys.argv


def wandb_version() -> str:
    import wandb

    return wandb.__version__


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_cli_fit_and_validate_put_the_full_config_and_run_info_on_wandb(
    imagefolder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    from lit_vision.cli import run_cli

    save_dir = isolate_wandb(monkeypatch, tmp_path)
    commit = _git_repo(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    argv = ["lit-vision", "fit", *_cli_args(imagefolder_root, save_dir, "--trainer.logger.log_model", "true"),
            "--trainer.precision", "32-true", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
            "--trainer.callbacks+=EMA", "--trainer.callbacks.decay", "0.5", "--seed_everything", "7",
            "--model.label_smoothing", "0.1"]
    monkeypatch.setattr(sys, "argv", argv)
    cli = run_cli(None)  # reads sys.argv, as the console script does
    wandb.finish()
    run = read_offline_run(save_dir)
    config = run.config
    assert config["trainer"]["precision"] == "32-true" and config["trainer"]["max_epochs"] == 1
    [ema] = config["trainer"]["callbacks"]
    assert ema["class_path"] == "lit_vision.callbacks.EMA" and ema["init_args"]["decay"] == 0.5
    assert config["trainer"]["logger"]["init_args"]["log_model"] is True
    assert config["model"]["class_path"] == "lit_vision.tasks.ImageClassifier"
    assert config["model"]["init_args"]["label_smoothing"] == 0.1 and "optimizer" in config["model"]["init_args"]
    assert config["data"]["init_args"]["image_size"] == 32 and config["data"]["init_args"]["root"] == str(imagefolder_root)
    assert config["seed_everything"] == 7 and config["ckpt_path"] is None
    assert config["backbone"] == "tv/resnet18" and config["label_smoothing"] == 0.1  # the flat hparams stay
    info = config["lit_vision"]
    assert info["git"] == {"root": str((tmp_path / "project").resolve()), "commit": commit, "dirty": False}
    assert info["command"] == argv and info["subcommand"] == "fit" and info["hostname"] == socket.gethostname()
    assert info["versions"]["lightning"] == pl.__version__
    assert info["in_effect"]["precision"] == "32-true"
    assert {"EMA", "ModelCheckpoint", "LastCheckpoint"} <= set(info["in_effect"]["callbacks"])
    assert sorted(a["metadata"]["original_filename"].split("-")[0] for a in run.artifacts if a["type"] == "model") \
        == ["best", "last.ckpt"]
    # the same, as files that travel with the run and sit next to Lightning's config.yaml
    assert yaml.safe_load((run.files_dir / "run_info.yaml").read_text())["git"]["commit"] == commit
    assert yaml.safe_load((run.files_dir / "config.yaml").read_text())["trainer"]["precision"] == "32-true"
    assert (Path(cli.trainer.log_dir) / "run_info.yaml").is_file()

    best = cli.trainer.checkpoint_callback.best_model_path
    monkeypatch.setattr(sys, "argv", ["lit-vision", "validate", *_cli_args(imagefolder_root, save_dir),
                                      "--ckpt_path", best])
    run_cli(None)
    wandb.finish()
    again = read_offline_run(save_dir)
    assert again.run_id != run.run_id and again.config["ckpt_path"] == best
    assert again.config["lit_vision"]["subcommand"] == "validate" and "val/acc1" in again.summary


def test_csv_runs_get_run_info_and_keep_their_hparams(
    imagefolder_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lit_vision.cli import run_cli

    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("trainer:\n  max_epochs: 1\n  limit_train_batches: 1\n  limit_val_batches: 1\n")
    args = [a for a in _cli_args(imagefolder_root, tmp_path) if a not in ("--trainer.logger", "WandB")]
    args = args[:args.index("--trainer.logger.save_dir")]
    cli = run_cli(["fit", "--config", str(recipe), *args])
    log_dir = Path(cli.trainer.log_dir).resolve()
    assert log_dir.parent.parent == (tmp_path / "runs").resolve()
    info = yaml.safe_load((log_dir / "run_info.yaml").read_text())
    assert info["subcommand"] == "fit" and info["versions"]["torch"] == torch.__version__ and info["git"] is None
    assert info["recipes"] == [str(recipe)] and "CSVLogger" not in info["in_effect"]["callbacks"]
    hparams = yaml.safe_load((log_dir / "hparams.yaml").read_text())
    assert hparams["backbone"] == "tv/resnet18" and "trainer" not in hparams and "lit_vision" not in hparams
    assert yaml.safe_load((log_dir / "config.yaml").read_text())["trainer"]["max_epochs"] == 1
