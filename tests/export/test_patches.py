"""The export-friendly torchvision functions compute what torchvision's do (also for no boxes)."""

from __future__ import annotations

import pytest
import torch
import torchvision.ops.boxes as boxes_module
from torchvision.ops import MultiScaleRoIAlign

from lit_vision.export.patches import batched_nms, export_friendly_torchvision


def _boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 40], 1)


@pytest.mark.parametrize("n", [0, 1, 50, 2000])  # 2000 boxes: torchvision switches to its per-class loop
def test_batched_nms_equals_torchvision(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    boxes, scores, idxs = _boxes(n, n), torch.rand(n, generator=g), torch.randint(0, 5, (n,), generator=g)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), boxes_module.batched_nms(boxes, scores, idxs, 0.5))


def test_multiscale_roi_align_equals_torchvision_and_patches_are_undone() -> None:
    pool = MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2)
    g = torch.Generator().manual_seed(0)
    features = {str(i): torch.randn(1, 8, 64 // 2**i, 64 // 2**i, generator=g) for i in range(3)}
    proposals = [_boxes(30, 1) * 2]
    sizes = [(256, 256)]
    expected = pool(features, proposals, sizes)
    original = boxes_module.batched_nms
    with export_friendly_torchvision():
        assert boxes_module.batched_nms is batched_nms
        got = pool(features, proposals, sizes)
    assert boxes_module.batched_nms is original
    torch.testing.assert_close(got, expected)
