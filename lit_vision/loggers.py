"""Loggers with defaults that suit a machine without network access.

On the command line and in recipes the W&B logger is ``WandB`` (``--trainer.logger WandB``): Lightning's
``WandbLogger`` is importable under the same short name, so that one name would mean Lightning's class.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lit_vision.callbacks.checkpoint import LastCheckpoint

__all__ = ["WandB", "WandbLogger", "wandb_has_credentials"]


def wandb_has_credentials() -> bool:
    """True when an API key is available (environment or ``~/.netrc``), i.e. an online run can log in."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


class WandB(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` that runs offline when no API key is set, and logs checkpoints offline too.

    ``offline=None`` (default) means: online if ``WANDB_API_KEY`` or a netrc entry exists or
    ``WANDB_MODE=online``, else offline (sync later with ``wandb sync <save_dir>/wandb/offline-run-*``).
    Hyper-parameters, the full resolved CLI config (:mod:`lit_vision.cli.run_info`) and every logged metric are
    recorded either way.

    ``log_model`` as in Lightning (``True``: the best and the last checkpoint when training ends; ``"all"``:
    every checkpoint as it is written), also offline: wandb stages the artifact files (under
    ``WANDB_DATA_DIR``, default ``~/.local/share/wandb``) and ``wandb sync`` uploads them. Lightning refuses
    ``log_model`` offline only because it cannot upload at once. ``last.ckpt`` (:class:`LastCheckpoint`) gets
    the alias ``latest`` and never ``best``; the monitored best checkpoint gets ``best``.
    """

    def __init__(self, offline: bool | None = None, save_dir: str = "runs",
                 log_model: Literal["all"] | bool = False, **kwargs: Any) -> None:
        if offline is None:
            mode = os.environ.get("WANDB_MODE")
            offline = mode in ("offline", "disabled", "dryrun") or (mode != "online" and not wandb_has_credentials())
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(offline=offline, save_dir=save_dir, log_model=False, **kwargs)
        self._log_model = log_model  # set after Lightning's offline check, which it would fail

    @rank_zero_only
    def finalize(self, status: str) -> None:
        # Log the best checkpoint(s) before last.ckpt, so the moving "latest" alias ends on the latest state.
        self._checkpoint_callbacks = dict(
            sorted(self._checkpoint_callbacks.items(), key=lambda item: isinstance(item[1], LastCheckpoint)))
        super().finalize(status)

    def _scan_and_log_checkpoints(self, checkpoint_callback: ModelCheckpoint) -> None:
        if not isinstance(checkpoint_callback, LastCheckpoint):
            super()._scan_and_log_checkpoints(checkpoint_callback)
            return
        # LastCheckpoint keeps one unmonitored file, which ModelCheckpoint files as its "best_model_path", and
        # Lightning would alias it "best". Presented as the callback's last_model_path it is aliased "latest" only.
        best, last = checkpoint_callback.best_model_path, checkpoint_callback.last_model_path
        checkpoint_callback.best_model_path, checkpoint_callback.last_model_path = "", best or last
        try:
            super()._scan_and_log_checkpoints(checkpoint_callback)
        finally:
            checkpoint_callback.best_model_path, checkpoint_callback.last_model_path = best, last


WandbLogger = WandB  # the former name, for Python imports; on the command line `WandbLogger` is Lightning's
