"""The one "are we running with several processes?" test shared by tasks and callbacks that gather by hand."""

from __future__ import annotations

import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank (DDP), else False."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


__all__ = ["is_distributed"]
