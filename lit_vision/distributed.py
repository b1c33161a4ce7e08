"""Helpers for several processes: the one "are we running distributed?" test shared by tasks and callbacks that
gather by hand, and what a multi-node launch (``torchrun``, SLURM ``srun``) must agree on with the trainer."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank (DDP), else False."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def launch_mismatch(num_nodes: object, devices: object, env: Mapping[str, str] | None = None) -> str | None:
    """One line saying how ``trainer.num_nodes``/``devices`` disagree with the ``torchrun`` launch, else ``None``.

    torchrun sets ``WORLD_SIZE`` (all processes) and ``LOCAL_WORLD_SIZE`` (this node's); Lightning needs
    ``devices * num_nodes == WORLD_SIZE`` and fails later with a message that does not say which flags to pass.
    ``devices`` other than a number (``auto``, a list of ids) is left to Lightning.
    """
    env = os.environ if env is None else env
    if "TORCHELASTIC_RUN_ID" not in env:
        return None
    world, local = _as_int(env.get("WORLD_SIZE")), _as_int(env.get("LOCAL_WORLD_SIZE"))
    nodes, per_node = _as_int(num_nodes if num_nodes is not None else 1), _as_int(devices)
    if not world or not local or nodes is None or per_node is None or world % local:
        return None
    launched_nodes = world // local
    if (nodes, per_node) == (launched_nodes, local):
        return None
    return (f"torchrun started {launched_nodes} node(s) x {local} process(es) (WORLD_SIZE={world}, "
            f"LOCAL_WORLD_SIZE={local}) but the trainer is set for num_nodes={nodes} x devices={per_node}: "
            f"pass --trainer.num_nodes {launched_nodes} --trainer.devices {local}")


__all__ = ["is_distributed", "launch_mismatch"]
