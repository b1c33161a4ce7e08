"""The whole run on the dashboard: the full resolved CLI config and where the code came from.

Lightning's W&B logger records only the model's and the data's hyper-parameters, so two runs that differ in
precision, callbacks, devices, seed or checkpoint look identical there. :class:`RunConfigCallback` (the
``save_config_callback`` of ``lit-vision fit/validate/test/predict``) adds, on rank 0 when the run sets up:

* to every W&B logger's config: the resolved config under its own top-level keys (``trainer``, ``model``,
  ``data``, ``seed_everything``, ``ckpt_path``, ...), next to the flat hyper-parameters Lightning logs, and
  :func:`run_info` under ``lit_vision``;
* for every logger: ``run_info.yaml`` next to Lightning's ``config.yaml`` in the trainer's ``log_dir`` (for W&B
  also in the run's ``files/``, so both travel with ``wandb sync``).

Run info = :func:`run_info` (git state, versions, host, command line) plus the subcommand, the ``--config``
files and :func:`in_effect` (what ``auto`` resolved to; every callback that runs, also those the CLI adds).

Other loggers' hyper-parameters are left alone: CSV's ``hparams.yaml`` stays the model's and data's.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

__all__ = ["RUN_INFO_FILENAME", "RunConfigCallback", "git_state", "in_effect", "run_info"]

RUN_INFO_FILENAME = "run_info.yaml"
PACKAGES = ("lit_vision", "torch", "torchvision", "lightning", "timm", "torchmetrics", "wandb")
_GIT_TIMEOUT_S = 5.0


def _git(directory: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):  # no git, or a huge/slow repository
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(directory: str | Path) -> dict[str, Any] | None:
    """``{"root", "commit", "dirty"}`` of the git checkout holding ``directory``; ``None`` outside one.

    ``dirty`` counts tracked files only (an untracked output folder does not make the code differ); it is
    ``None`` when ``git status`` could not answer in time.
    """
    root = _git(Path(directory), "rev-parse", "--show-toplevel")
    if not root:
        return None
    commit = _git(Path(root), "rev-parse", "HEAD")  # None in a repository without commits
    status = _git(Path(root), "status", "--porcelain", "--untracked-files=no")
    return {"root": root, "commit": commit, "dirty": None if status is None else bool(status)}


def _version(package: str) -> str | None:
    """The imported module's ``__version__`` when there is one (torch's says which CUDA build: ``+cu130``)."""
    module_version = getattr(sys.modules.get(package), "__version__", None)
    if isinstance(module_version, str):
        return str(module_version)  # torch: a str subclass that safe_dump refuses
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def run_info() -> dict[str, Any]:
    """Where this run's code came from and what ran it: git state, package versions, host and command line.

    ``git`` is the checkout of the current directory (where a recipe usually lives), ``package_git`` that of
    the imported ``lit_vision`` when it is another one (an editable install elsewhere), else ``None``.
    """
    import lit_vision

    cwd_git = git_state(Path.cwd())
    package_git = git_state(Path(lit_vision.__file__).resolve().parent)
    if package_git is not None and cwd_git is not None and package_git["root"] == cwd_git["root"]:
        package_git = None
    return {
        "git": cwd_git,
        "package_git": package_git,
        "versions": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "command": list(sys.argv),
        "cwd": str(Path.cwd()),
    }


def in_effect(trainer: Trainer) -> dict[str, Any]:
    """What the trainer resolved ``auto``/``null`` settings to, and every callback it runs (including those the
    CLI adds: the best-checkpoint ``ModelCheckpoint``, ``LastCheckpoint``), which the config alone does not say."""
    return {
        "precision": str(trainer.precision),
        "accelerator": type(trainer.accelerator).__name__,
        "strategy": type(trainer.strategy).__name__,
        "num_devices": trainer.num_devices,
        "num_nodes": trainer.num_nodes,
        "world_size": trainer.world_size,
        "callbacks": [type(c).__name__ for c in trainer.callbacks],
    }


def _plain(config_yaml: str) -> dict[str, Any]:
    """The parser's YAML dump as plain dicts/lists (what a W&B config and a YAML file hold)."""
    loaded = yaml.safe_load(config_yaml)
    return loaded if isinstance(loaded, dict) else {}


def _keep_earlier_config(log_dir: Path, filename: str) -> None:
    """A resumed fit writes its config over the run's ``config.yaml``: keep the earlier session's next to it as
    ``config.session1.yaml``, ``config.session2.yaml``, ... (its recipe said, e.g., ``pretrained: weights.pth``,
    which a resumed session turns off: the checkpoint's tensors replace the initial weights)."""
    current = log_dir / filename
    if not current.is_file():
        return
    stem, dot, ext = filename.rpartition(".")
    n = 1
    while (log_dir / f"{stem}.session{n}{dot}{ext}").exists():
        n += 1
    current.rename(log_dir / f"{stem}.session{n}{dot}{ext}")


class RunConfigCallback(SaveConfigCallback):
    """Lightning's ``SaveConfigCallback`` (``config.yaml`` in the log dir) that also puts the full config and
    :func:`run_info` on the dashboard (W&B config) and ``run_info.yaml`` next to ``config.yaml``."""

    _log_dir: str | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.already_saved:  # the same on every rank (Lightning broadcasts it)
            # trainer.log_dir is a collective call: every rank here, not in save_config (rank 0 only; it would hang)
            self._log_dir = trainer.log_dir
            resuming = bool(self.config.get("ckpt_path"))  # trainer.ckpt_path is set only after setup
            if trainer.is_global_zero and stage == "fit" and resuming and self._log_dir is not None:
                _keep_earlier_config(Path(self._log_dir), self.config_filename)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # As config.yaml (the recipe files merged in). Lightning's save just validated this config; a second
        # validation costs ~0.3 s of every start on the CI machine.
        dumped = self.parser.dump(self.config, skip_none=False, skip_validation=True)
        full = _plain(dumped)
        info = run_info()
        info["subcommand"] = str(getattr(stage, "value", stage))  # TrainerFn.FITTING -> "fit"
        info["recipes"] = [str(path) for path in (self.config.get("config") or [])]  # the --config files given
        info["in_effect"] = in_effect(trainer)
        info_yaml = yaml.safe_dump(info, sort_keys=False)
        if self._log_dir is not None and self.save_to_log_dir:
            fs = get_filesystem(self._log_dir)  # a remote log dir (s3://...) too, as Lightning's config.yaml
            fs.makedirs(self._log_dir, exist_ok=True)
            with fs.open(f"{str(self._log_dir).rstrip('/')}/{RUN_INFO_FILENAME}", "w") as f:
                f.write(info_yaml)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                run = logger.experiment
                run.config.update({**full, "lit_vision": info}, allow_val_change=True)
                files = Path(run.dir) if getattr(run, "dir", None) else None
                if files is not None and files.is_dir():
                    (files / RUN_INFO_FILENAME).write_text(info_yaml)
                    (files / self.config_filename).write_text(dumped)
