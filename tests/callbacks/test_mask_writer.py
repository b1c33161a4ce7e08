"""SegmentationMaskWriter's file names: unique in dataset order, the same on every DDP rank."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from lit_vision.callbacks import SegmentationMaskWriter

PATHS = ["a/x.jpg", "b/x.jpg", "c/y.jpg", "d/x.jpg"]  # three images share the stem "x"


def _write_share(out: Path, rank: int, indices: list[int]) -> list[str]:
    """What one of two DDP ranks writes: its share of the dataset (DistributedSampler: every other index)."""
    writer = SegmentationMaskWriter(output_dir=str(out))
    loader = SimpleNamespace(dataset=SimpleNamespace(image_paths=PATHS))
    trainer = SimpleNamespace(world_size=2, global_rank=rank, predict_dataloaders=[loader])
    writer.on_predict_start(trainer, SimpleNamespace(data_info=None))
    rows = [{"path": PATHS[i], "mask": np.full((2, 3), i, dtype=np.uint8)} for i in indices]
    writer.write_on_batch_end(trainer, None, rows, indices, None, 0, 0)
    return [json.loads(line)["mask"] for line in writer.path.read_text().splitlines()]


def test_ranks_name_masks_as_one_process_would_without_overwriting_each_other(tmp_path: Path) -> None:
    rank0 = _write_share(tmp_path, 0, [0, 2])
    rank1 = _write_share(tmp_path, 1, [1, 3])
    names = [Path(p).name for p in (rank0[0], rank1[0], rank0[1], rank1[1])]  # dataset order
    assert names == ["x.png", "x_1.png", "y.png", "x_2.png"]  # one process, in order, names them so too
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == sorted(names)  # four files, none lost
    from PIL import Image

    for i, path in enumerate((rank0[0], rank1[0], rank0[1], rank1[1])):
        assert np.array(Image.open(path)).max() == i  # each file holds its own image's mask
