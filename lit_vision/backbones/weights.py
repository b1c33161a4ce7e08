"""Offline weight files: reading them and checking they fit before anything is copied.

Clusters without internet get weights as files, so ``pretrained=<path>`` must read what
torchvision/timm publish (a classification model's state dict) and the usual wrappers
around it (``{"state_dict": ...}``, ``{"model": ...}``, timm's training checkpoints with their EMA
weights, DDP's ``module.`` prefix). The
check is stricter than ``load_state_dict(strict=False)``: a file for another architecture
must fail loudly here rather than train from a half-random backbone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["IncompatibleWeightsError", "load_weight_file", "check_state_dict", "WeightSource"]

WeightSource = str | os.PathLike | Mapping[str, Tensor]

_TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt", ".tar"}  # .pth.tar: what timm's train.py writes
# timm's ``load_state_dict`` order (``use_ema=True``, its default and what ``--initial-checkpoint`` and
# ``create_model(checkpoint_path=...)`` use): a training checkpoint's EMA weights first.
_NESTING_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile (either order), as timm strips
_SHOW = 5  # how many offending keys an error message lists


class IncompatibleWeightsError(ValueError):
    """A weight file does not match the architecture it is loaded into."""


def _describe(source: WeightSource) -> str:
    return "the given state dict" if isinstance(source, Mapping) else f"weight file '{source}'"


def load_weight_file(source: WeightSource) -> dict[str, Tensor]:
    """Read a state dict from a file (or take a mapping) and normalise its keys.

    ``.safetensors`` goes through ``safetensors.torch.load_file``; ``.pth/.pt/.bin/.ckpt`` (and timm's
    ``.pth.tar``) through ``torch.load(weights_only=True)`` so a checkpoint cannot run code. Training checkpoints
    are unwrapped as timm's loader does: ``state_dict_ema`` / ``model_ema`` (the EMA weights) before
    ``state_dict`` / ``model``, then DDP's ``module.`` and ``torch.compile``'s ``_orig_mod.`` prefixes.
    """
    if isinstance(source, Mapping):
        state: object = dict(source)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Weight file not found: '{path}'")
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif suffix in _TORCH_SUFFIXES:
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ValueError(
                f"Unsupported weight file '{path}': expected .safetensors or one of "
                f"{sorted(_TORCH_SUFFIXES)}"
            )
    # Unwrap training checkpoints: {"state_dict": {...}, "epoch": ...}, {"model": {...}}, timm's EMA entries.
    while isinstance(state, Mapping):
        nested = next((state[k] for k in _NESTING_KEYS if isinstance(state.get(k), Mapping)), None)
        if nested is None:
            break
        state = nested
    if not isinstance(state, Mapping):
        raise IncompatibleWeightsError(f"{_describe(source)} does not hold a state dict")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise IncompatibleWeightsError(f"{_describe(source)} holds no tensors")
    return {_unwrapped(k): v for k, v in tensors.items()}


def _unwrapped(key: str) -> str:
    """``key`` without the prefixes DDP and ``torch.compile`` add (timm's ``clean_state_dict``)."""
    while key.startswith(_WRAPPER_PREFIXES):
        key = key.removeprefix("module.").removeprefix("_orig_mod.")
    return key


def _matches(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def check_state_dict(
    state: Mapping[str, Tensor],
    needed: Mapping[str, torch.Size],
    known: Iterable[str],
    *,
    source: WeightSource,
    arch: str,
    ignore_unexpected: Iterable[str] = (),
    ignore_shape: Iterable[str] = (),
) -> None:
    """Raise :class:`IncompatibleWeightsError` unless ``state`` fits the backbone.

    Args:
        needed: key -> shape of every tensor the backbone uses (must be present).
        known: every key of the full source model; keys outside it are unexpected,
            except those under ``ignore_unexpected`` (e.g. auxiliary heads we do not build).
            Keys in ``known`` but not in ``needed`` (the classifier) are simply dropped.
        ignore_shape: keys whose shape may differ because the builder adapts them
            (timm's first conv when ``in_chans`` changes).
    """
    known = set(known)
    ignore_unexpected, ignore_shape = tuple(ignore_unexpected), set(ignore_shape)
    # Old checkpoints predate BatchNorm's num_batches_tracked; torch fills it in itself.
    missing = [k for k in needed if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in known and not _matches(k, ignore_unexpected)]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(needed[k])}"
        for k in needed
        if k in state and k not in ignore_shape and tuple(state[k].shape) != tuple(needed[k])
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
        if keys:
            more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
            problems.append(f"{len(keys)} {label} key(s): {', '.join(keys[:_SHOW])}{more}")
    if problems:
        raise IncompatibleWeightsError(
            f"{_describe(source)} does not fit {arch}: " + "; ".join(problems)
            + ". Is it the state dict of this exact architecture?"
        )
