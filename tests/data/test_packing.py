"""PackedBatch: a plain dict to its readers; through a loader worker, its tensors travel as one buffer per dtype."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors

from lit_vision.data.detection.transforms import detection_collate
from lit_vision.data.packing import PackedBatch, pack, unpack


def _sample(i: int, h: int = 8, w: int = 10) -> dict[str, Any]:
    g = torch.Generator().manual_seed(i)
    n = i % 3  # 0, 1 or 2 objects: an empty box tensor too
    return {
        "image": torch.rand(3, h + i, w, generator=g),  # sizes differ per image
        "target": {"boxes": torch.rand(n, 4, generator=g) * 8, "labels": torch.arange(n) + i,
                   "iscrowd": torch.zeros(n, dtype=torch.bool), "scale": (0.5, 0.25), "pad": (1, 2, 3, 4),
                   "image_id": i, "canvas": tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0, 2, 2]]), format="XYXY",
                                                                       canvas_size=(8, 10))},
        "path": f"img_{i}.jpg",
    }


class _Samples(Dataset):
    def __init__(self, h: int = 8, w: int = 10) -> None:
        self.h, self.w = h, w

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict[str, Any]:
        return _sample(i, self.h, self.w)


def _assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        if isinstance(a, tv_tensors.BoundingBoxes):
            assert a.format == b.format and a.canvas_size == b.canvas_size
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def test_pack_unpack_round_trip_keeps_structure_values_and_subclasses() -> None:
    batch = detection_collate([_sample(i) for i in range(4)])
    batch["transposed"] = torch.arange(6.0).view(2, 3).t()  # non-contiguous: comes back equal, contiguous
    buffers, skeleton = pack(dict(batch))
    assert set(buffers) == {torch.float32, torch.int64, torch.bool}
    # float32: 4 images + 4 box tensors + the transposed one; the BoundingBoxes subclass is left to pickle.
    assert buffers[torch.float32].numel() == sum(3 * (8 + i) * 10 + (i % 3) * 4 for i in range(4)) + 6
    out = unpack(buffers, skeleton)
    assert isinstance(out, PackedBatch)
    _assert_same(out, batch)
    for via in (pickle.loads(pickle.dumps(batch)), copy.deepcopy(batch)):
        _assert_same(via, batch)
    shallow = copy.copy(batch)  # what torch's pin-memory thread does before replacing the values
    assert type(shallow) is PackedBatch and shallow is not batch
    assert all(shallow[k] is batch[k] for k in batch)


def test_through_loader_workers_a_batch_arrives_as_one_storage_per_dtype() -> None:
    """One transfer per dtype; the images arrive as views of it, the small targets as copies of their own (a view
    would keep every image of the batch alive as long as anything kept its boxes)."""
    loader = DataLoader(_Samples(100, 100), batch_size=3, num_workers=2, collate_fn=detection_collate)
    batches = list(loader)
    assert len(batches) == 2
    for k, got in enumerate(batches):
        _assert_same(got, detection_collate([_sample(i, 100, 100) for i in range(3 * k, 3 * k + 3)]))
        assert len({t.untyped_storage().data_ptr() for t in got["image"]}) == 1  # 120 KB each: views, one buffer
        small = [t for tg in got["target"] for t in (tg["boxes"], tg["labels"], tg["iscrowd"])]
        assert all(t.untyped_storage().nbytes() == t.nbytes for t in small)  # nothing more is held for them
        got["target"][0]["boxes"].mul_(0)  # writing one leaves its neighbours alone
        assert torch.equal(got["image"][0], _sample(3 * k, 100, 100)["image"])
