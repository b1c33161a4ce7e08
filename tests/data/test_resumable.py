"""The training loader: order and augmentation from (seed, epoch, position), a resumable position, no global RNG."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from lit_vision.data.resumable import (
    ResumableDataLoader,
    ResumableSampler,
    SeededDataset,
)


class RandomAug(Dataset):
    """Item i = (i, a torch draw, a Python draw, a NumPy draw): what a random transform would consume."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), torch.rand(()).item(), random.random(), float(np.random.rand())])


def loader(seed: int = 3, num_workers: int = 0, batch_size: int = 4, world: int = 1, rank: int = 0) -> ResumableDataLoader:
    sampler = ResumableSampler(RandomAug(), num_replicas=world, rank=rank, seed=seed)
    return ResumableDataLoader(RandomAug(), sampler=sampler, batch_size=batch_size, num_workers=num_workers)


def epoch(dl: ResumableDataLoader, e: int) -> list[torch.Tensor]:
    """The batches of epoch ``e``, without the NumPy column (in the training process NumPy draws from the
    process's own stream, which checkpoints save: see SeededDataset)."""
    dl.sampler.set_epoch(e)
    return [b[:, :3] for b in dl]


def test_order_is_a_permutation_per_epoch_and_augmentation_depends_on_seed_epoch_and_index() -> None:
    dl = loader()
    e0, e1 = torch.cat(epoch(dl, 0)), torch.cat(epoch(dl, 1))
    assert sorted(e0[:, 0].tolist()) == list(range(40)) == sorted(e1[:, 0].tolist())
    assert not torch.equal(e0[:, 0], e1[:, 0])  # reshuffled each epoch
    by_index0 = {int(r[0]): r[1:] for r in e0}
    by_index1 = {int(r[0]): r[1:] for r in e1}
    assert all(not torch.equal(by_index0[i], by_index1[i]) for i in range(40))  # fresh draws every epoch
    again = torch.cat(epoch(loader(), 0))
    assert torch.equal(e0, again)  # a function of (seed, epoch, index) only
    assert not torch.equal(e0, torch.cat(epoch(loader(seed=4), 0)))


def test_reading_samples_neither_uses_nor_changes_the_global_random_state() -> None:
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    first = epoch(loader(), 0)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    torch.manual_seed(123)  # a different global state gives the same batches
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(loader(), 0)))


def test_workers_give_the_same_batches_as_the_main_process() -> None:
    assert all(torch.equal(a, b) for a, b in zip(epoch(loader(), 2), epoch(loader(num_workers=2), 2)))


def test_workers_seed_numpy_per_sample_too() -> None:
    def with_numpy(workers: int) -> torch.Tensor:
        dl = loader(num_workers=workers)
        dl.sampler.set_epoch(1)
        return torch.cat(list(dl))

    assert torch.equal(with_numpy(2), with_numpy(1))


@pytest.mark.parametrize("served", [0, 3, 9])
def test_a_loader_restored_mid_epoch_serves_exactly_the_remaining_batches(served: int) -> None:
    full = epoch(loader(), 1)
    dl = loader(seed=999)  # the saved seed wins over the new run's
    dl.sampler.set_epoch(1)
    it = iter(dl)
    for _ in range(served):
        next(it)
    state = dl.state_dict()
    assert state["seed"] == 999 and state["epoch"] == 1 and state["batches"] == served
    state["seed"] = 3
    resumed = loader(seed=7)
    resumed.load_state_dict(state)
    rest = [b[:, :3] for b in resumed]  # Lightning calls set_epoch(1) again: harmless
    assert len(rest) == len(full) - served
    assert all(torch.equal(a, b) for a, b in zip(rest, full[served:]))
    assert resumed.state_dict()["batches"] == len(full)  # counts from where it resumed
    assert len(list(resumed)) == len(full)  # the skip applies once


def test_a_state_saved_at_the_end_of_an_epoch_resumes_at_the_next_epoch() -> None:
    dl = loader()
    epoch(dl, 0)
    resumed = loader()
    resumed.load_state_dict(dl.state_dict())
    assert resumed.sampler.epoch == 1
    assert all(torch.equal(a[:, :3], b) for a, b in zip(list(resumed), epoch(loader(), 1)))


def test_ranks_get_disjoint_shards_and_a_changed_world_size_warns() -> None:
    shards = [torch.cat(epoch(loader(world=2, rank=r), 0))[:, 0] for r in (0, 1)]
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist()) and len(shards[0]) + len(shards[1]) == 40
    dl = loader(world=2)
    dl.sampler.set_epoch(0)
    next(iter(dl))
    with pytest.warns(UserWarning, match="num_replicas 2 -> 1.*not exact"):
        loader().load_state_dict(dl.state_dict())


def test_evaluation_keys_read_the_item_unchanged() -> None:
    assert SeededDataset(RandomAug())[5][0] == 5.0


def test_a_batch_read_equals_its_items_read_one_by_one_and_leaves_the_global_state_alone() -> None:
    """The loader reads a batch through ``__getitems__`` (random states saved once per batch): the same items as
    ``dataset[key]`` one at a time (each under its own seed), and the global streams continue as if untouched."""
    ds = SeededDataset(RandomAug())
    keys = [(3, 1, i) for i in (5, 0, 17, 5, 39)]
    torch.manual_seed(7)
    random.seed(7)
    expected = (torch.rand(2), random.random())
    torch.manual_seed(7)
    random.seed(7)
    batch = ds.__getitems__(keys)
    assert torch.equal(torch.rand(2), expected[0]) and random.random() == expected[1]
    one_by_one = [ds[k] for k in keys]  # NumPy's column is the process's own stream here (see SeededDataset)
    assert all(torch.equal(a[:3], b[:3]) for a, b in zip(batch, one_by_one))
    assert torch.equal(batch[0][:3], batch[3][:3])  # the same key twice in a batch: the same draws
    assert not torch.equal(batch[0][1:3], batch[2][1:3])
    assert [int(item[0]) for item in ds.__getitems__([2, 4])] == [2, 4]  # evaluation keys: plain items
