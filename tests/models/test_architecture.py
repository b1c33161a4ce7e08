"""The architecture registries: choices derived from subclasses, short names, configs, a researcher's own class."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_vision.backbones import Backbone, create_backbone
from lit_vision.models.detection import DetectorArchitecture, FasterRCNN, RetinaNet, build_detector
from lit_vision.models.segmentation import DeepLabV3, SegmentationArchitecture, build_segmenter


def _named_subclasses(family: type, package: str = "") -> set[str]:
    found, stack = set(), list(family.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__dict__.get("name") and cls.__module__.startswith(package):
            found.add(cls.name)
    return found


def test_choices_are_the_defined_subclasses() -> None:
    for family, builtin in ((DetectorArchitecture, {"faster_rcnn", "fcos", "retinanet", "yolo"}),
                            (SegmentationArchitecture, {"deeplabv3", "deeplabv3plus", "fcn", "unet"})):
        # No list to keep: the package's named subclasses are the choices (plus any a user defined).
        assert _named_subclasses(family, "lit_vision.") == builtin
        assert builtin <= set(family.choices()) <= _named_subclasses(family)
    # Intermediate bases (no name) are not choices, and the families do not share a registry.
    assert "anchor_based" not in DetectorArchitecture.registry
    assert set(DetectorArchitecture.registry).isdisjoint(SegmentationArchitecture.registry)


def test_defining_a_subclass_registers_it_in_its_family_only() -> None:
    class OneConvHead(SegmentationArchitecture):
        name = "test_one_conv"

        def __init__(self, width: int = 8) -> None:
            self.width = width

        def build_head(self, backbone: Backbone, num_classes: int) -> nn.Module:
            return _LastMapConv(backbone.channels[-1], num_classes)

    try:
        assert SegmentationArchitecture.resolve("test_one_conv").width == 8
        assert "test_one_conv" not in DetectorArchitecture.registry
        model = build_segmenter("test_one_conv", "timm/test_resnet", 3)
        assert model(torch.rand(1, 3, 40, 56))["out"].shape == (1, 3, 40, 56)  # Segmenter resizes any head's output
    finally:
        SegmentationArchitecture.registry.pop("test_one_conv")


class _LastMapConv(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.conv(features[-1])


def test_resolve_takes_a_name_an_object_or_a_config() -> None:
    assert type(DetectorArchitecture.resolve("retinanet")) is RetinaNet
    arch = RetinaNet(focal_gamma=1.5, fpn_channels=64)
    assert DetectorArchitecture.resolve(arch) is arch
    config = arch.config()
    assert config == {"class_path": "lit_vision.models.detection.retinanet.RetinaNet", "init_args": vars(arch)}
    again = DetectorArchitecture.resolve(config)
    assert type(again) is RetinaNet and vars(again) == vars(arch)


def test_config_of_an_object_with_injected_parts_is_the_object() -> None:
    from functools import partial

    from torchvision.models.detection.rpn import RPNHead

    arch = FasterRCNN(rpn_head=partial(RPNHead, conv_depth=2))
    assert arch.config() is arch  # not plain data: it travels pickled instead of as a config


def test_unknown_name_lists_the_choices_and_the_close_match() -> None:
    with pytest.raises(ValueError, match=r"unknown detector architecture 'retina'.*\['faster_rcnn', 'fcos', "
                                         r"'retinanet', 'yolo'\].*Did you mean 'retinanet'"):
        DetectorArchitecture.resolve("retina")
    with pytest.raises(TypeError, match="is not a SegmentationArchitecture"):
        SegmentationArchitecture.resolve({"class_path": "lit_vision.models.detection.RetinaNet"})


def test_options_belong_to_the_architecture() -> None:
    with pytest.raises(TypeError, match="anchor_sizes"):
        build_detector("yolo", "tv/resnet18", 3, anchor_sizes=[16, 32, 64])
    with pytest.raises(TypeError, match=r"does not take \['fcn_variant'\].*atrous_rates=None"):
        build_segmenter("deeplabv3", "timm/test_resnet", 3, fcn_variant="8s")
    with pytest.raises(TypeError, match="go to the architecture's constructor"):
        build_segmenter(DeepLabV3(), "timm/test_resnet", 3, aspp_channels=8)


def test_injected_rpn_head_is_the_one_built() -> None:
    from torchvision.models.detection.rpn import RPNHead

    made: list[tuple[int, int]] = []

    def rpn_head(in_channels: int, num_anchors: int) -> nn.Module:
        made.append((in_channels, num_anchors))
        return RPNHead(in_channels, num_anchors, conv_depth=2)

    arch = FasterRCNN(rpn_head=rpn_head, fpn_channels=32, aspect_ratios=(1.0,), scales_per_octave=2)
    body = create_backbone("tv/resnet18", out_indices=list(arch.backbone_out_indices))
    model = arch.build(body, 2, image_size=64)
    assert made == [(32, 2)]  # 2 scales x 1 ratio
    assert len(model.model.rpn.head.conv) == 2  # conv_depth=2: the injected head, not torchvision's default
