"""The mosaic's image cache: the same items as decoding every time, fewer decodes, bounded memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_vision.data.detection import detection_train_transforms
from lit_vision.data.detection.mosaic import MosaicDataset
from lit_vision.data.resumable import SeededDataset
from tests.data.detection.test_mosaic import shapes_module, write_rectangles

S = 96  # every rectangle image's longer side is 96 or 120: resized to 96 for the mosaic


class Counter:
    """Counts the images a source decodes: wraps its ``raw_item``."""

    def __init__(self, source) -> None:  # noqa: ANN001 - any DetectionSource
        self.decoded, read = 0, source.raw_item

        def counted(index: int):  # noqa: ANN202
            self.decoded += 1
            return read(index)

        source.raw_item = counted


def mosaic(tmp_path: Path, cache_mb: float) -> tuple[SeededDataset, Counter]:
    dataset = MosaicDataset(write_rectangles(tmp_path), detection_train_transforms(S, True, None, False, True), 1.0,
                            cache_mb=cache_mb)
    return SeededDataset(dataset), Counter(dataset.plain)


KEYS = [(seed, epoch, index) for seed in (0, 1) for epoch in (0, 1, 2) for index in range(6)]


def test_cached_items_equal_decoded_ones_and_decode_each_image_once(tmp_path: Path) -> None:
    plain, plain_source = mosaic(tmp_path, cache_mb=0)
    cached, cached_source = mosaic(tmp_path, cache_mb=64)
    for key in KEYS:
        a, b = plain[key], cached[key]
        assert torch.equal(a["image"], b["image"]), key
        for name in ("boxes", "labels", "masks"):
            assert torch.equal(a["target"][name], b["target"][name]), (key, name)
        assert a["target"]["orig_size"] == b["target"]["orig_size"] and a["path"] == b["path"]
    assert plain_source.decoded == 4 * len(KEYS)  # four images a mosaic, every time
    assert cached_source.decoded == 6  # each of the six images once
    # Held: each image at longer side 96 as 3 uint8 channels plus its two 1-byte masks, and a few small tensors.
    resized = [(96, 96), (64, 96), (96, 64), (67, 96), (96, 64), (72, 96)]  # (h, w) of SIZES' (w, h) at 96
    expected = sum(5 * h * w for h, w in resized)
    assert expected <= cached.dataset._cached_bytes <= expected + 6 * 256


def test_the_cache_keeps_to_its_budget_least_recently_used_out(tmp_path: Path) -> None:
    one_image = 3 * 96 * 96 + 2 * 96 * 96  # pixels and two uint8 masks of the largest image, roughly
    budget_mb = 2.5 * one_image / 2**20
    cached, source = mosaic(tmp_path, cache_mb=budget_mb)
    dataset = cached.dataset
    for key in KEYS:
        cached[key]
        assert dataset._cached_bytes <= dataset.cache_bytes
        assert dataset._cached_bytes == sum(p.nbytes() for p in dataset._cache.values())
    assert 1 <= len(dataset._cache) <= 3
    assert 6 < source.decoded < 4 * len(KEYS)  # some draws hit the cache, most of them evicted
    oldest, decoded = next(iter(dataset._cache)), source.decoded
    dataset._piece(oldest)  # a hit: nothing decoded, and it becomes the most recently used
    assert source.decoded == decoded and next(reversed(dataset._cache)) == oldest


@pytest.mark.parametrize("value", [-1, -0.5])
def test_a_negative_budget_is_refused(tmp_path: Path, value: float) -> None:
    with pytest.raises(ValueError, match="mosaic_cache_mb .* >= 0"):
        shapes_module(tmp_path, mosaic_cache_mb=value)


def test_the_datamodule_passes_its_budget_to_the_training_set(tmp_path: Path) -> None:
    dm = shapes_module(tmp_path, mosaic_cache_mb=8)
    dm.setup("fit")
    assert dm.datasets["train"].cache_bytes == 8 * 2**20
    assert "cache_mb=8" in repr(dm.datasets["train"])
