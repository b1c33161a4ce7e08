"""Loggers with defaults that suit a machine without network access."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


def wandb_has_credentials() -> bool:
    """True when an API key is available (environment or ``~/.netrc``), i.e. an online run can log in."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` that runs offline when no API key is set.

    ``offline=None`` (default) means: online if ``WANDB_API_KEY`` or a netrc entry exists or
    ``WANDB_MODE=online``, else offline (sync later with ``wandb sync <dir>``). Hyper-parameters
    (the whole model and data config) and every logged metric are recorded either way.
    """

    def __init__(self, offline: bool | None = None, save_dir: str = "runs", **kwargs: Any) -> None:
        if offline is None:
            mode = os.environ.get("WANDB_MODE")
            offline = mode in ("offline", "disabled") or (mode != "online" and not wandb_has_credentials())
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        super().__init__(offline=offline, save_dir=save_dir, **kwargs)
