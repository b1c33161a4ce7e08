"""Batches of many small tensors sent from a loader worker as a few: one flat buffer per dtype.

A ``DataLoader`` worker hands every tensor of a batch to the training process through shared memory, one file
descriptor per tensor, each fetched over a socket with an authentication handshake (``torch.multiprocessing``'s
``file_descriptor`` strategy, the default on Linux). Stacked batches hold a handful of tensors, but a detection
batch is lists (images differ in size, targets in object count): 8 images are 24 tensors, which took the
training process 8.9 ms a batch to receive on the 2-core CI machine, ~4 % of a YOLO-n step at 128 px.
:class:`PackedBatch` is a plain ``dict`` to everything that reads it; only when pickled (the worker-to-process
transfer) does it travel as one flat buffer per dtype plus the structure, and it is rebuilt as views into them.
Written here because neither torch nor Lightning offers it: torch's collate stacks same-shape tensors only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["SMALL_BYTES", "PackedBatch", "pack", "unpack"]

SMALL_BYTES = 64 * 1024  # unpacked tensors under this size are copies, not views of the batch's buffer


@dataclass(frozen=True)
class _Slot:
    """Where a packed tensor lives: its dtype's buffer, element offset and shape."""

    dtype: torch.dtype
    offset: int
    shape: tuple[int, ...]


class PackedBatch(dict):
    """A ``dict`` batch that pickles its plain CPU tensors as one buffer per dtype (see the module docstring).

    Only exact ``torch.Tensor`` instances on the CPU (strided, no grad) inside nested ``dict``/``list``/``tuple``
    are packed; tensor subclasses (``tv_tensors``, with their metadata), other containers and non-tensor values
    travel as they would in a plain dict. Unpickled tensors are contiguous views of the shared buffers, except small
    ones (under :data:`SMALL_BYTES`: boxes, labels), which are copied out: a view would keep its whole buffer
    alive, i.e. code that keeps a batch's targets (a metric accumulating them over an epoch) would hold every
    image of every batch. Tensors that shared storage in the worker arrive as separate copies (a collated batch
    has none).
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return unpack, pack(dict(self))

    def __copy__(self) -> PackedBatch:
        """Shallow, like ``dict.copy`` (torch's pin-memory thread copies a batch, then replaces its values)."""
        return PackedBatch(self)


def _packable(x: Any) -> bool:
    return (type(x) is Tensor and x.layout == torch.strided and x.device.type == "cpu" and not x.requires_grad
            and not x.is_quantized)


def _map(x: Any, leaf: Any) -> Any:
    """``leaf`` applied to everything inside nested plain ``dict``/``list``/``tuple`` (rebuilt), and to ``x``
    itself when it is none of them."""
    if type(x) is dict:
        return {k: _map(v, leaf) for k, v in x.items()}
    if type(x) is list:
        return [_map(v, leaf) for v in x]
    if type(x) is tuple:
        return tuple(_map(v, leaf) for v in x)
    return leaf(x)


def pack(obj: Any) -> tuple[dict[torch.dtype, Tensor], Any]:
    """``(buffers, skeleton)``: the packable tensors of ``obj`` concatenated per dtype, and ``obj`` with each
    replaced by its :class:`_Slot`."""
    parts: dict[torch.dtype, list[Tensor]] = {}
    sizes: dict[torch.dtype, int] = {}

    def slot(x: Any) -> Any:
        if not _packable(x):
            return x
        offset = sizes.get(x.dtype, 0)
        parts.setdefault(x.dtype, []).append(x.reshape(-1))
        sizes[x.dtype] = offset + x.numel()
        return _Slot(x.dtype, offset, tuple(x.shape))

    skeleton = _map(obj, slot)
    return {dtype: torch.cat(chunks) for dtype, chunks in parts.items()}, skeleton


def unpack(buffers: dict[torch.dtype, Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`pack`: the structure back, each packed tensor a view of its dtype's buffer
    (a top-level ``dict`` comes back as a :class:`PackedBatch`)."""

    def view(x: Any) -> Any:
        if not isinstance(x, _Slot):
            return x
        buffer, numel = buffers[x.dtype], math.prod(x.shape)
        out = buffer[x.offset:x.offset + numel].view(x.shape)
        return out.clone() if numel < buffer.numel() and numel * buffer.element_size() < SMALL_BYTES else out

    out = _map(skeleton, view)
    return PackedBatch(out) if type(out) is dict else out
