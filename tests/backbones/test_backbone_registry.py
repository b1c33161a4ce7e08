"""Names, listing and error messages of the backbone registry (no model is built here)."""

from __future__ import annotations

import pytest

from lit_vision.backbones import (
    UnknownBackboneError,
    create_backbone,
    list_backbones,
    parse_backbone_name,
)


def test_list_backbones_patterns() -> None:
    resnets = list_backbones("tv/resnet*")
    assert resnets == ["tv/resnet101", "tv/resnet152", "tv/resnet18", "tv/resnet34", "tv/resnet50"]
    assert "timm/convnext_tiny" in list_backbones("timm/convnext*")
    assert all(n.startswith("timm/convnext") for n in list_backbones("timm/convnext*"))
    everything = list_backbones()
    assert everything == sorted(everything)
    assert {"tv/alexnet", "tv/inception_v3", "timm/resnet50", "timm/vgg16"} <= set(everything)
    assert {n.split("/")[0] for n in everything} == {"tv", "timm", "lv"}
    assert list_backbones("*/densenet121") == ["timm/densenet121", "tv/densenet121"]
    assert list_backbones("tv/no_such_model*") == []


def test_list_backbones_tv_is_classification_only() -> None:
    tv = list_backbones("tv/*")
    assert "tv/resnet50" in tv and "tv/mobilenet_v3_small" in tv
    assert not any(n in tv for n in ("tv/fasterrcnn_resnet50_fpn", "tv/deeplabv3_resnet50", "tv/raft_large"))


def test_parse_names() -> None:
    assert parse_backbone_name("tv/resnet50") == ("tv", "resnet50")
    assert parse_backbone_name("torchvision/resnet50") == ("tv", "resnet50")
    assert parse_backbone_name("timm/convnext_tiny") == ("timm", "convnext_tiny")
    assert parse_backbone_name("timm/resnet50.a1_in1k") == ("timm", "resnet50.a1_in1k")  # pretrained tag


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownBackboneError) as info:
        create_backbone("tv/resnet15")
    msg = str(info.value)
    assert "tv/resnet15" in msg and "tv/resnet18" in msg and "tv/resnet152" in msg
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="timm/convnext_tiny"):
        create_backbone("timm/convnxt_tiny")


def test_missing_prefix_suggests_prefixed_forms() -> None:
    with pytest.raises(ValueError) as info:
        create_backbone("resnet50")
    msg = str(info.value)
    assert "prefix" in msg and "'tv/resnet50'" not in msg  # suggestions are listed unquoted
    assert "tv/resnet50" in msg and "timm/resnet50" in msg
    with pytest.raises(ValueError, match="tv/alexnet"):  # only torchvision has it
        create_backbone("alexnet")


def test_unknown_source() -> None:
    with pytest.raises(ValueError, match="'tv/'.*'timm/'"):
        create_backbone("hf/resnet50")


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        create_backbone(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pretrained"):
        create_backbone("tv/resnet18", pretrained=3)  # type: ignore[arg-type]


def test_reserved_kwargs_point_to_pretrained() -> None:
    for kwargs in ({"weights": "DEFAULT"}, {"features_only": True}):
        with pytest.raises(TypeError, match="pretrained="):
            create_backbone("tv/resnet18", **kwargs)


def test_out_indices_resolution() -> None:
    import numpy as np

    from lit_vision.backbones.base import resolve_out_indices

    assert resolve_out_indices(None, 4, "x") == [0, 1, 2, 3]
    assert resolve_out_indices([np.int64(-1), 0], 4, "x") == [0, 3]
    assert resolve_out_indices(-2, 4, "x") == [2]
    with pytest.raises(TypeError):
        resolve_out_indices([1.0], 4, "x")
    with pytest.raises(TypeError):
        resolve_out_indices([True], 4, "x")
