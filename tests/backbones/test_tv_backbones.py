"""tv/ backbones: stage tables, shapes, and equality with torchvision's own forward."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision.models as tvm
from backbone_testutils import (
    FAST_KWARGS,
    TV_CANON,
    TV_NODES,
    classifier_logits,
    expected_spatial,
    hooked_forward,
    reference_model,
)

from lit_vision.backbones import Backbone, create_backbone
from lit_vision.backbones._fx_probe import generic_stage_nodes, probe_graph
from lit_vision.backbones.torchvision_backbone import stage_nodes


@pytest.mark.parametrize("arch", list(TV_CANON))
def test_canon_family_stages_and_classifier_path(arch: str) -> None:
    size, channels, reductions, spatial = TV_CANON[arch]
    bb = create_backbone(f"tv/{arch}", **FAST_KWARGS.get(arch, {})).eval()
    assert isinstance(bb, Backbone) and bb.name == f"tv/{arch}"
    assert bb.channels == channels and bb.reductions == reductions
    assert bb.out_indices == tuple(range(len(channels)))
    if arch in TV_NODES:
        assert bb.nodes == TV_NODES[arch]

    x = torch.randn(1, 3, size, size)
    feats = bb(x)
    assert [f.shape[1] for f in feats] == channels
    sizes = expected_spatial(size, reductions, spatial)
    assert [tuple(f.shape[2:]) for f in feats] == [(s, s) for s in sizes]

    # Independent reference: torchvision's forward with the same weights, eval mode.
    ref = reference_model(arch, bb.body.state_dict())
    logits, hooked = hooked_forward(ref, bb.nodes, x)
    torch.testing.assert_close(classifier_logits(arch, ref, feats[-1]), logits, rtol=1e-4, atol=1e-4)
    # Intermediate maps equal the named torchvision modules' outputs (hooked on ref).
    assert hooked, "expected some return nodes to be module names"
    for node, feat in zip(bb.nodes, feats):
        if node in hooked:
            torch.testing.assert_close(feat, hooked[node], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arch", ["resnet50", "vgg16_bn", "alexnet", "googlenet", "inception_v3",
                                  "densenet121", "efficientnet_b0", "convnext_tiny"])
def test_generic_fallback_agrees_with_family_tables(arch: str) -> None:
    """The probe-based fallback, run on canon families, finds the hand-written nodes."""
    kwargs = {"aux_logits": False, "init_weights": False} if arch in FAST_KWARGS else {}
    with torch.device("meta"):  # structure only: free to build
        model = tvm.get_model(arch, weights=None, **kwargs)
    graph = probe_graph(model)
    assert generic_stage_nodes(graph) == stage_nodes(arch, graph)


@pytest.mark.parametrize(
    ("arch", "channels"),
    [("mobilenet_v3_small", [16, 16, 24, 48, 576]), ("regnet_y_400mf", [32, 48, 104, 208, 440])],
)
def test_generic_fallback_families(arch: str, channels: list[int]) -> None:
    bb = create_backbone(f"tv/{arch}").eval()
    assert bb.channels == channels and bb.reductions == [2, 4, 8, 16, 32]
    x = torch.randn(1, 3, 64, 64)
    feats = bb(x)
    expected = [(c, 64 // r, 64 // r) for c, r in zip(channels, bb.reductions)]
    assert [tuple(f.shape[1:]) for f in feats] == expected
    ref = reference_model(arch, bb.body.state_dict())
    torch.testing.assert_close(classifier_logits(arch, ref, feats[-1]), ref(x), rtol=1e-4, atol=1e-4)


def test_mobilenet_fallback_returns_block_outputs_not_expansions() -> None:
    bb = create_backbone("tv/mobilenet_v3_small")
    assert bb.nodes == ["features.0", "features.1", "features.3", "features.8", "features"]


def test_swin_channels_last_stages_are_permuted() -> None:
    bb = create_backbone("tv/swin_t").eval()
    assert bb.channels == [96, 192, 384, 768] and bb.reductions == [4, 8, 16, 32]
    x = torch.randn(1, 3, 64, 64)
    feats = bb(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(96, 16, 16), (192, 8, 8), (384, 4, 4), (768, 2, 2)]
    ref = reference_model("swin_t", bb.body.state_dict())
    logits = ref.head(torch.flatten(ref.avgpool(feats[-1]), 1))
    torch.testing.assert_close(logits, ref(x), rtol=1e-4, atol=1e-4)


def test_plain_vit_is_rejected_with_a_pointer_to_timm() -> None:
    with pytest.raises(ValueError, match="timm/vit"):
        create_backbone("tv/vit_b_16")


@pytest.mark.parametrize(
    ("out_indices", "expected"),
    [([1, 2, 3, 4], [1, 2, 3, 4]), ([-1], [4]), ([-1, 0], [0, 4]), ((2,), [2]), (-2, [3])],
)
def test_out_indices_select_and_describe_stages(out_indices, expected: list[int]) -> None:
    all_channels, all_reductions = [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]
    bb = create_backbone("tv/resnet50", out_indices=out_indices).eval()
    assert bb.out_indices == tuple(expected)
    assert bb.channels == [all_channels[i] for i in expected]
    assert bb.reductions == [all_reductions[i] for i in expected]
    feats = bb(torch.randn(1, 3, 64, 64))
    expected = [(c, 64 // r) for c, r in zip(bb.channels, bb.reductions)]
    assert [(f.shape[1], f.shape[2]) for f in feats] == expected


@pytest.mark.parametrize(
    ("out_indices", "error"), [([5], IndexError), ([-6], IndexError), ([1, 1], ValueError), ([], ValueError)]
)
def test_bad_out_indices(out_indices, error) -> None:
    with pytest.raises(error):
        create_backbone("tv/resnet18", out_indices=out_indices)


def test_kwargs_reach_the_torchvision_constructor() -> None:
    bb = create_backbone("tv/resnet18", norm_layer=torch.nn.Identity)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bb.modules())
    with pytest.raises(TypeError):
        create_backbone("tv/resnet18", no_such_argument=1)


def test_deepcopy_keeps_modes_and_weights() -> None:
    """EMA/SWA deep-copy backbones; torchvision's DualGraphModule would reset it to train mode."""
    bb = create_backbone("tv/resnet18").eval()
    bb.body.layer1.train()  # e.g. partially frozen BN
    clone = copy.deepcopy(bb)
    assert [m.training for m in clone.modules()] == [m.training for m in bb.modules()]
    bb.eval(), clone.eval()
    x = torch.randn(2, 3, 32, 32)
    for a, b in zip(bb(x), clone(x)):
        torch.testing.assert_close(a, b)


def test_backbone_trains() -> None:
    bb = create_backbone("tv/resnet18", out_indices=[-1]).train()
    with torch.enable_grad():
        bb(torch.randn(2, 3, 32, 32))[-1].mean().backward()
    assert bb.body.conv1.weight.grad is not None
