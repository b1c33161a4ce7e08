"""Training data whose order and augmentation are a function of (seed, epoch, position): resumable exactly.

Why not only torchdata's ``StatefulDataLoader``: it restores the loader's position and its own seeds, but with
``num_workers=0`` the augmentations draw from the process-wide RNG that the model shares (dropout, MixUp, the
detectors' proposal sampling), and that interleaving cannot be rebuilt from a checkpoint taken between two steps.
Here every training sample is augmented under its own seed, ``(seed, epoch, index)``, inside a forked RNG, so the
data neither reads nor disturbs the global stream; the epoch's order is torch's ``DistributedSampler`` permutation
of ``seed + epoch``; and the loader's state is just ``(seed, epoch, batches served)``. The same batches come out
whatever ``num_workers`` is, and a run resumed mid-epoch serves exactly the batches the killed run had not used.
"""

from __future__ import annotations

import os
import random
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

__all__ = ["ResumableDataLoader", "ResumableSampler", "SeededDataset", "default_data_seed", "run_seeded",
           "sample_seed"]

T = TypeVar("T")


def default_data_seed() -> int:
    """``seed_everything``'s seed when one was set (``PL_GLOBAL_SEED``), else a fresh random one.

    The seed is saved with the loader's state, so even an unseeded run resumes exactly.
    """
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed is not None else secrets.randbits(31)


_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """SplitMix64's finaliser: a cheap, well-mixed 64-bit hash (~1 us here; numpy's SeedSequence takes ~25 us)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch."""
    return _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ epoch) ^ index) >> 1


_CPU = torch.default_generator


def _seed_torch_python(s: int) -> None:
    _CPU.manual_seed(s)
    random.seed(s)


def _seed_all(s: int) -> None:
    _seed_torch_python(s)
    np.random.seed(s % (1 << 32))


@contextmanager
def _forked_rng() -> Iterator[None]:
    """Torch's CPU and Python's random states saved on entry and restored on exit (NumPy's: see run_seeded)."""
    torch_state, py_state = _CPU.get_state(), random.getstate()
    try:
        yield
    finally:
        _CPU.set_state(torch_state)
        random.setstate(py_state)


def run_seeded(s: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` under RNG seed ``s``, without reading or disturbing the random state of the training process.

    In loader workers, torch's, Python's and NumPy's generators are seeded. In the training process
    (``num_workers=0``) torch's and Python's are forked around the call (saved, seeded, restored).
    :class:`SeededDataset` reads every training sample through it, and so do the streaming datasets
    (:mod:`lit_vision.data.streaming`), whose per-sample augmentation is then the same function of
    ``(seed, epoch, index)``.
    """
    if get_worker_info() is not None:
        # A worker's own random state is used by nothing but its samples: seed it, no need to save it.
        # (torch.manual_seed would also seed every CUDA device: ~0.4 ms; the CPU generator alone: ~2 us.)
        _seed_all(s)
        return fn(*args)
    # In the training process the model draws from the same generators: fork torch's and Python's (what
    # torchvision and timm transforms use) around the item. NumPy's global state is left alone: saving it
    # costs ~0.1 ms a sample; a NumPy-drawing transform then draws from the process's stream, which the
    # checkpoint saves too (lit_vision/resume.py), so resuming stays exact; only its draws then depend on
    # num_workers.
    with _forked_rng():
        _seed_torch_python(s)
        return fn(*args)


class SeededDataset(Dataset):
    """Wraps a dataset so that item ``(seed, epoch, index)`` is transformed under its own RNG seed.

    In loader workers, torch's, Python's and NumPy's generators are seeded per item. In the training process
    (``num_workers=0``) torch's and Python's are forked around the item (saved, seeded, restored), so reading a
    sample neither depends on nor changes the random state the model uses. Plain integer keys (evaluation
    loaders) read the item unchanged.

    A dataset that defines ``getitem_at(epoch, index)`` is read through it: loader workers hold their own copy
    of the dataset (persistent ones for the whole fit), so an attribute changed in the training process later
    never reaches them, but the epoch in the key does. Per-epoch behaviour (e.g. mosaic closing for the last
    epochs) is then decided per sample, exactly under resume and whatever ``num_workers``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int, int]) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        seed, epoch, index = key
        return run_seeded(sample_seed(seed, epoch, index), self._read, epoch, index)

    def __getitems__(self, keys: list[Any]) -> list[Any]:
        """``[self[k] for k in keys]`` (what the loader's fetcher calls for a batch). In the training process the
        random states are saved before the batch and restored after it, not around every item (Python's
        ``getstate``/``setstate`` alone cost ~17 us an item); each item is still read under its own seed."""
        if get_worker_info() is not None or not all(isinstance(k, tuple) for k in keys):
            return [self[k] for k in keys]
        items = []
        with _forked_rng():
            for seed, epoch, index in keys:
                _seed_torch_python(sample_seed(seed, epoch, index))
                items.append(self._read(epoch, index))
        return items

    def _read(self, epoch: int, index: int) -> Any:
        getitem_at = getattr(self.dataset, "getitem_at", None)
        return getitem_at(epoch, index) if getitem_at is not None else self.dataset[index]

    def __getattr__(self, name: str) -> Any:  # class_names, samples ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class ResumableSampler(DistributedSampler):
    """torch's ``DistributedSampler`` (order from ``seed + epoch``, one shard per rank) yielding sample keys.

    Being a ``DistributedSampler`` already, Lightning neither replaces it under DDP nor needs to; it calls
    :meth:`set_epoch` at every epoch start. Keys are ``(seed, epoch, index)`` so workers, which hold their own
    copy of the dataset, know the epoch too. ``skip`` positions are dropped once, at the start of the epoch
    ``skip_epoch`` (a resumed run's partly done epoch).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
        self.skip, self.skip_epoch = 0, -1

    def __iter__(self) -> Iterator[tuple[int, int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())
        if self.skip and self.epoch == self.skip_epoch:
            indices = indices[self.skip:]
        self.skip, self.skip_epoch = 0, -1
        return iter([(self.seed, self.epoch, i) for i in indices])


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ResumableSampler` whose ``state_dict`` Lightning saves with the loops.

    Lightning keeps a checkpoint's loader state and hands it back (``load_state_dict``) before the first batch
    of the resumed run; for a loader with a length it fetches batch ``k`` just before step ``k`` (no look-ahead),
    so "batches served" is exactly what the killed run had consumed when the checkpoint was written.

    ``epoch_length`` returns how many batches the trainer takes per epoch (``limit_train_batches`` may be below
    ``len(self)``); a state saved at that count means the epoch was finished.
    """

    def __init__(self, dataset: Dataset, *, sampler: ResumableSampler,
                 epoch_length: Callable[[], int | float] | None = None, **kwargs: Any) -> None:
        # A private generator: creating an iterator draws a base seed from it, not from the global RNG the
        # model uses (the per-sample seeds make that base seed irrelevant to the data).
        kwargs.setdefault("generator", torch.Generator().manual_seed(sampler.seed))
        super().__init__(SeededDataset(dataset), sampler=sampler, **kwargs)
        self.epoch_length = epoch_length
        self._served, self._epoch = 0, -1

    def __iter__(self) -> Iterator[Any]:
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        self._epoch = sampler.epoch
        self._served = sampler.skip // self.batch_size if sampler.skip and sampler.skip_epoch == sampler.epoch else 0
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        length = self.epoch_length() if self.epoch_length is not None else len(self)
        epoch = self._epoch if self._epoch >= 0 else sampler.epoch  # -1: not iterated yet
        return {"seed": sampler.seed, "epoch": epoch, "batches": self._served, "epoch_length": length,
                "batch_size": self.batch_size, "num_replicas": sampler.num_replicas, "dataset_size": len(self.dataset)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where the saved state stopped: same seed; the rest of its epoch, or the next epoch."""
        sampler: ResumableSampler = self.sampler  # type: ignore[assignment]
        changed = [f"{k} {state[k]} -> {now}" for k, now in (("num_replicas", sampler.num_replicas),
                                                                ("batch_size", self.batch_size),
                                                                ("dataset_size", len(self.dataset)))
                   if k in state and state[k] != now]
        if changed:
            rank_zero_warn("resuming with a different data setup (" + ", ".join(changed) + "): the order of the "
                           "remaining samples differs from the interrupted run's, so the resumed run is not exact")
        sampler.seed = int(state["seed"])
        epoch, done = int(state["epoch"]), int(state["batches"])
        if done >= state.get("epoch_length", len(self)):
            sampler.set_epoch(epoch + 1)  # the saved epoch was complete: start the next one from its beginning
        else:
            sampler.set_epoch(epoch)
            sampler.skip, sampler.skip_epoch = done * self.batch_size, epoch
