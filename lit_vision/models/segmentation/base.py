"""What every segmentation architecture shares: the registry of choices, the model wrapper, the one-call builder.

An architecture is one class in one file (``fcn.py``, ``unet.py``, ``deeplabv3.py``, ``deeplabv3plus.py``): its
constructor takes the architecture's options, typed, and :meth:`SegmentationArchitecture.build_head` builds
the decoder for a backbone's maps (``features -> logits`` at some stride). Subclasses with a ``name`` are
registered by being defined, so ``--model.architecture deeplabv3`` (short name) and ``--model.architecture
DeepLabV3`` (the class, with options) both work, and a researcher's own decoder is one subclass or a
``class_path`` in YAML.

:class:`Segmenter` composes ``backbone -> head`` (+ an auxiliary FCN head) and resizes logits to the input:
whatever the architecture, ``Segmenter(x)`` returns ``{"out": [B, K, H, W]}`` (plus ``"aux"``) at exactly
the input's ``H x W``, in training and evaluation alike; any input size works. No Lightning here.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from lit_vision.backbones import Backbone, create_backbone
from lit_vision.heads.segmentation.common import FCNHead, resize_to
from lit_vision.models.architecture import Architecture


class SegmentationArchitecture(Architecture):
    """Base of the segmentation architectures: the registry and the two building steps."""

    registry: ClassVar[dict[str, type[Architecture]]] = {}
    kind = "segmentation architecture"

    def own_backbone(self) -> Backbone:
        """The encoder of an architecture that brings its own (``backbone=None``); others need a registry one."""
        raise ValueError(f"backbone=None selects an architecture's own encoder (the classic U-Net's); "
                         f"{self.name or type(self).__name__!r} has none and needs a registry backbone")

    def build_head(self, backbone: Backbone, num_classes: int) -> nn.Module:
        """The decoder over ``backbone``'s maps (``list[Tensor] -> logits [B, num_classes, h, w]``)."""
        raise NotImplementedError



class Segmenter(nn.Module):
    """``backbone -> head`` (+ an auxiliary head), logits resized to the input.

    Heads return logits at their own stride (8 for FCN-8s, 4 for DeepLabv3+, the deep map's for
    DeepLabv3, 1 for U-Net); the final bilinear resize lives here once, so every head honours the
    same contract for odd sizes. The auxiliary head reads ``features[-2]`` (torchvision's
    reference puts it on ResNet's ``layer3``) and is returned in eval mode too, so validation can
    log its loss; it costs little and is dropped at export by building with ``aux_loss=False``.

    Attributes:
        backbone, head, aux_head: the parts (``aux_head`` is ``None`` without ``aux_loss``); a
            task can give the backbone its own learning rate through them.
        num_classes, architecture: as built.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, num_classes: int, aux_head: nn.Module | None = None,
                 architecture: str = "") -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head
        self.num_classes = num_classes
        self.architecture = architecture
        # What loading another dataset's segmenter re-initialises (lit_vision/models/weights.py): the heads'
        # tensors sized by the class count (final 1x1 convs, class-wise upsampling).
        self.class_dependent = tuple(
            f"{part}.{name}" for part, module in (("head", head), ("aux_head", aux_head)) if module is not None
            for name, tensor in module.state_dict().items() if tensor.ndim and tensor.shape[0] == num_classes)

    def reference_key(self, key: str) -> str | None:
        """This module's name for a key of torchvision's segmenter (``deeplabv3_resnet50``, ``fcn_resnet50``):
        ``backbone.*`` is our torchvision backbone's ``body``, ``aux_classifier`` our ``aux_head``, and
        ``classifier`` the head that declares itself torchvision's (``reference_prefix``)."""
        head, _, rest = key.partition(".")
        if head == "backbone" and hasattr(self.backbone, "body"):
            return "backbone.body." + rest
        if head == "aux_classifier":
            return "aux_head." + rest
        prefix = getattr(self.head, "reference_prefix", None)
        if head == "classifier" and prefix is not None:
            return "head." + prefix + rest
        return None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x``: normalised images ``[B, 3, H, W]`` -> ``{"out": logits [B, K, H, W], "aux": ...}``."""
        size = x.shape[-2:]
        features = self.backbone(x)
        out = {"out": resize_to(self.head(features), size)}
        if self.aux_head is not None:
            out["aux"] = resize_to(self.aux_head(features[-2]), size)
        return out


def build_segmenter(
    architecture: SegmentationArchitecture | str,
    backbone: str | None,
    num_classes: int,
    pretrained: bool | str = False,
    backbone_kwargs: dict[str, Any] | None = None,
    output_stride: int | None = None,
    aux_loss: bool = False,
    **options: Any,
) -> Segmenter:
    """Build a semantic segmentation model.

    Args:
        architecture: ``"fcn"``, ``"unet"``, ``"deeplabv3"``, ``"deeplabv3plus"`` (or a name of your own), or an
            architecture object (then ``options`` must be empty).
        backbone: registry name (``"tv/resnet50"``, ``"timm/efficientnet_b0"``, ...); every stage is
            requested, heads take what they need. ``None`` only with ``"unet"``: the classic U-Net
            with its own encoder, from scratch.
        num_classes: classes including background; logits have ``num_classes`` channels.
        pretrained, backbone_kwargs: see :func:`~lit_vision.backbones.create_backbone`
            (``backbone_kwargs`` may hold ``out_indices`` to restrict the stages).
        output_stride: ``None`` (natural, 32 for CNNs), 16 or 8: dilate the backbone's last stages
            (ResNets, most timm CNNs; others raise ``ValueError``). DeepLab is usually trained at 16.
        aux_loss: add ``"aux"`` logits from an FCN head on the penultimate map (for an auxiliary loss).
        **options: the architecture's constructor arguments, checked by name (see each class).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    arch = SegmentationArchitecture.with_options(architecture, options)
    backbone_kwargs = dict(backbone_kwargs or {})
    if "output_stride" in backbone_kwargs:
        raise TypeError("pass output_stride to build_segmenter, not in backbone_kwargs")
    if backbone is None:
        if pretrained not in (False, None) or backbone_kwargs or output_stride is not None:
            raise ValueError(f"the {arch.name or type(arch).__name__} encoder (backbone=None) trains from scratch: "
                             "it takes no pretrained weights, backbone_kwargs or output_stride")
        body = arch.own_backbone()
    else:
        out_indices = backbone_kwargs.pop("out_indices", None)
        body = create_backbone(backbone, pretrained=pretrained, out_indices=out_indices,
                               output_stride=output_stride, **backbone_kwargs)
    head = arch.build_head(body, num_classes)
    aux_head = None
    if aux_loss:
        if len(body.channels) < 2:
            raise ValueError(f"aux_loss needs at least two backbone maps; {body.name} returns {len(body.channels)}")
        aux_head = FCNHead(body.channels[-2], num_classes)
    return Segmenter(body, head, num_classes, aux_head, arch.name or type(arch).__name__)
