"""output_stride: dilated backbones report capped reductions that match the maps they return."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.models as tvm

from lit_vision.backbones import Backbone, create_backbone

SIZE = (75, 53)  # odd on purpose: ceil(H / r) must hold on both sides
EXPECTED = {None: [2, 4, 8, 16, 32], 16: [2, 4, 8, 16, 16], 8: [2, 4, 8, 8, 8]}


@pytest.mark.parametrize("output_stride", [16, 8, None, 32])
@pytest.mark.parametrize("name", ["tv/resnet18", "timm/resnet18", "timm/test_efficientnet"])
def test_reductions_match_the_returned_maps(name: str, output_stride: int | None) -> None:
    bb = create_backbone(name, output_stride=output_stride).eval()
    expected = EXPECTED[None if output_stride == 32 else output_stride]
    assert bb.reductions == expected
    assert bb.output_stride == (None if output_stride == 32 else output_stride)
    feats = bb(torch.randn(1, 3, *SIZE))
    assert [f.shape[1] for f in feats] == bb.channels
    assert [tuple(f.shape[-2:]) for f in feats] == [(math.ceil(SIZE[0] / r), math.ceil(SIZE[1] / r)) for r in expected]


def test_out_indices_select_dilated_stages_by_position() -> None:
    bb = create_backbone("tv/resnet18", out_indices=[-3, -2, -1], output_stride=8).eval()
    assert bb.nodes == ["layer2", "layer3", "layer4"]  # the stride-based probe is not involved
    assert bb.channels == [128, 256, 512] and bb.reductions == [8, 8, 8]
    assert [tuple(f.shape[1:]) for f in bb(torch.randn(1, 3, 64, 64))] == [(128, 8, 8), (256, 8, 8), (512, 8, 8)]


@pytest.mark.parametrize("output_stride", [16, 8])
def test_tv_dilation_equals_torchvisions_replace_stride_with_dilation(output_stride: int) -> None:
    """Independent reference: torchvision's own dilated ResNet-50 with the same weights."""
    bb = create_backbone("tv/resnet50", output_stride=output_stride).eval()
    flags = [False, output_stride == 8, True]
    ref = tvm.resnet50(replace_stride_with_dilation=flags).eval()
    missing = ref.load_state_dict(bb.body.state_dict(), strict=False).missing_keys
    assert missing == ["fc.weight", "fc.bias"]  # every other weight is shared
    x = torch.randn(1, 3, 64, 64)
    ref_out = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))
    torch.testing.assert_close(bb(x)[-1], ref_out, rtol=1e-4, atol=1e-4)
    dilated = {n: m.dilation for n, m in bb.body.named_modules() if isinstance(m, torch.nn.Conv2d)}
    ref_dilated = {n: m.dilation for n, m in ref.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert dilated == ref_dilated


def test_dilated_tv_backbone_still_loads_a_weight_file(tmp_path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(tvm.resnet18().state_dict(), path)
    bb = create_backbone("tv/resnet18", pretrained=path, output_stride=8)
    assert bb.reductions == [2, 4, 8, 8, 8]


@pytest.mark.parametrize("output_stride", [4, 12, 64, 0, True, "16"])
def test_bad_output_stride_is_rejected(output_stride: object) -> None:
    with pytest.raises(ValueError, match="output_stride must be one of"):
        create_backbone("tv/resnet18", output_stride=output_stride)


@pytest.mark.parametrize("name", ["tv/vgg11", "tv/densenet121", "tv/efficientnet_b0", "timm/vgg11", "timm/densenet121"])
def test_non_dilatable_backbones_say_which_can(name: str) -> None:
    with pytest.raises(ValueError, match=rf"{name} cannot be dilated to output_stride=16.*resnet"):
        create_backbone(name, output_stride=16)


def test_torchvision_dilation_kwarg_points_to_output_stride() -> None:
    with pytest.raises(TypeError, match="output_stride"):
        create_backbone("tv/resnet50", replace_stride_with_dilation=[False, True, True])


def test_backbone_contract_allows_repeats_only_at_the_cap() -> None:
    assert Backbone("x", [1, 2, 3], [4, 8, 8], [0, 1, 2], output_stride=8).reductions == [4, 8, 8]
    with pytest.raises(ValueError, match="output_stride=16"):
        Backbone("x", [1, 2, 3], [4, 8, 8], [0, 1, 2], output_stride=16)  # repeat below the cap
    with pytest.raises(ValueError, match="output_stride=8"):
        Backbone("x", [1, 2], [8, 16], [0, 1], output_stride=8)  # deeper than the cap
    with pytest.raises(ValueError, match="not strictly increasing"):
        Backbone("x", [1, 2], [8, 8], [0, 1])  # undilated: unchanged contract
