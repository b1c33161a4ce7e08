"""timm/ backbones: the canon builds, describes its maps correctly, and honours kwargs."""

from __future__ import annotations

import math

import pytest
import torch

from lit_vision.backbones import Backbone, create_backbone

# arch -> (input size, channels, reductions, spatial sizes or None for ceil(size / r))
TIMM_CANON = {
    "resnet18": (64, [64, 64, 128, 256, 512], [2, 4, 8, 16, 32], None),
    "resnet50": (64, [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32], None),
    "convnext_tiny": (64, [96, 192, 384, 768], [4, 8, 16, 32], None),
    "efficientnet_b0": (64, [16, 24, 40, 112, 320], [2, 4, 8, 16, 32], None),
    "densenet121": (64, [64, 256, 512, 1024, 1024], [2, 4, 8, 16, 32], None),
    "vgg16": (64, [64, 128, 256, 512, 512, 512], [1, 2, 4, 8, 16, 32], None),
    "inception_v3": (160, [64, 192, 288, 768, 2048], [2, 4, 8, 16, 32], [77, 36, 17, 8, 3]),
}


@pytest.mark.parametrize("arch", list(TIMM_CANON))
def test_timm_canon(arch: str) -> None:
    size, channels, reductions, spatial = TIMM_CANON[arch]
    bb = create_backbone(f"timm/{arch}").eval()
    assert isinstance(bb, Backbone) and bb.name == f"timm/{arch}"
    assert bb.channels == channels and bb.reductions == reductions
    feats = bb(torch.randn(1, 3, size, size))
    sizes = spatial or [math.ceil(size / r) for r in reductions]
    assert [tuple(f.shape[1:]) for f in feats] == [(c, s, s) for c, s in zip(channels, sizes)]


def test_timm_out_indices_are_normalised_and_ordered() -> None:
    """timm alone labels [-1, 1] as [512, 64] but returns maps shallow-to-deep."""
    bb = create_backbone("timm/resnet18", out_indices=[-1, 1]).eval()
    assert bb.out_indices == (1, 4) and bb.channels == [64, 512] and bb.reductions == [4, 32]
    feats = bb(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == bb.channels
    with pytest.raises(IndexError):
        create_backbone("timm/resnet18", out_indices=[5])


def test_timm_kwargs_pass_through() -> None:
    bb = create_backbone("timm/resnet18", in_chans=1, drop_path_rate=0.1, out_indices=[-1]).eval()
    assert bb.model.conv1.in_channels == 1
    assert bb.model.layer4[1].drop_path.drop_prob == pytest.approx(0.1)
    assert bb(torch.randn(1, 1, 32, 32))[0].shape == (1, 512, 1, 1)


def test_timm_channels_last_features_are_permuted() -> None:
    bb = create_backbone("timm/swin_tiny_patch4_window7_224", img_size=64).eval()
    feats = bb(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(96, 16, 16), (192, 8, 8), (384, 4, 4), (768, 2, 2)]


def test_single_resolution_vit_needs_out_indices() -> None:
    with pytest.raises(ValueError, match="out_indices"):
        create_backbone("timm/vit_tiny_patch16_224")
    bb = create_backbone("timm/vit_tiny_patch16_224", out_indices=[-1]).eval()
    assert bb.channels == [192] and bb.reductions == [16]
    assert bb(torch.randn(1, 3, 224, 224))[0].shape == (1, 192, 14, 14)
