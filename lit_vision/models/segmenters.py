"""Semantic segmentation models: FCN, U-Net, DeepLabv3 and DeepLabv3+ on any registry backbone.

:func:`build_segmenter` builds a registry backbone (optionally dilated to ``output_stride`` 8 or 16),
a head from :mod:`lit_vision.heads` and, with ``aux_loss=True``, torchvision's auxiliary FCN head on
the penultimate (natural stride 16) map, and wraps them in :class:`Segmenter`. Whatever the
architecture, ``Segmenter(x)`` returns ``{"out": [B, K, H, W]}`` (plus ``"aux"``) at exactly the
input's ``H x W``, in training and evaluation alike; any input size works.

``backbone=None`` with ``"unet"`` is the classic U-Net trained from scratch (its own encoder,
:class:`~lit_vision.models.unet.UNetEncoder`). No Lightning here: plain ``nn.Module`` compositions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Literal

from torch import Tensor, nn

from lit_vision.backbones import Backbone, create_backbone
from lit_vision.heads.deeplab import DeepLabV3Head, DeepLabV3PlusHead, default_atrous_rates
from lit_vision.heads.segmentation import FCN, FCNHead, resize_to
from lit_vision.heads.unet import UNetDecoder
from lit_vision.models.unet import UNetEncoder

__all__ = ["SEGMENTATION_ARCHITECTURES", "Segmenter", "build_segmenter"]

SegmentationArchitecture = Literal["fcn", "unet", "deeplabv3", "deeplabv3plus"]
SEGMENTATION_ARCHITECTURES: tuple[str, ...] = ("fcn", "unet", "deeplabv3", "deeplabv3plus")


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

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``x``: normalised images ``[B, 3, H, W]`` -> ``{"out": logits [B, K, H, W], "aux": ...}``."""
        size = x.shape[-2:]
        features = self.backbone(x)
        out = {"out": resize_to(self.head(features), size)}
        if self.aux_head is not None:
            out["aux"] = resize_to(self.aux_head(features[-2]), size)
        return out


def _fcn(body: Backbone, num_classes: int, fcn_variant: Literal["32s", "16s", "8s"] = "8s",
         upsampling: Literal["bilinear", "learned"] = "bilinear") -> nn.Module:
    return FCN(body.channels, body.reductions, num_classes, fcn_variant, upsampling)


def _unet(body: Backbone, num_classes: int, decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
          upsampling: Literal["bilinear", "nearest", "transposed"] = "bilinear") -> nn.Module:
    return UNetDecoder(body.channels, num_classes, decoder_channels, upsampling)


def _deeplabv3(body: Backbone, num_classes: int, atrous_rates: Sequence[int] | None = None,
               aspp_channels: int = 256, dropout: float = 0.1) -> nn.Module:
    rates = atrous_rates or default_atrous_rates(max(body.reductions))
    return DeepLabV3Head(body.channels, num_classes, rates, aspp_channels, dropout)


def _deeplabv3plus(body: Backbone, num_classes: int, atrous_rates: Sequence[int] | None = None,
                   aspp_channels: int = 256, low_level_channels: int = 48, decoder_channels: int = 256,
                   dropout: float = 0.1) -> nn.Module:
    rates = atrous_rates or default_atrous_rates(max(body.reductions))
    return DeepLabV3PlusHead(body.channels, body.reductions, num_classes, rates, aspp_channels,
                             low_level_channels, decoder_channels, dropout)


def _classic_unet(num_classes: int, base_channels: int = 64, depth: int = 4, decoder_channels: Sequence[int] | None = None,
                  upsampling: Literal["bilinear", "nearest", "transposed"] = "transposed") -> tuple[Backbone, nn.Module]:
    encoder = UNetEncoder(3, base_channels, depth)
    widths = decoder_channels or encoder.channels[-2::-1]  # the mirror image: 512 256 128 64
    return encoder, UNetDecoder(encoder.channels, num_classes, widths, upsampling)


_HEADS: dict[str, Callable[..., nn.Module]] = {
    "fcn": _fcn, "unet": _unet, "deeplabv3": _deeplabv3, "deeplabv3plus": _deeplabv3plus,
}


def _check_kwargs(builder: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Name the valid options: a typo in a YAML should not surface as a bare TypeError deep inside."""
    params = [p for p in inspect.signature(builder).parameters.values() if p.default is not inspect.Parameter.empty]
    unknown = sorted(set(kwargs) - {p.name for p in params})
    if unknown:
        options = ", ".join(f"{p.name}={p.default!r}" for p in params)
        raise TypeError(f"{what} does not take {unknown}; its options are: {options}")


def build_segmenter(
    architecture: SegmentationArchitecture,
    backbone: str | None,
    num_classes: int,
    pretrained: bool | str = False,
    backbone_kwargs: dict[str, Any] | None = None,
    output_stride: int | None = None,
    aux_loss: bool = False,
    **kwargs: Any,
) -> Segmenter:
    """Build a semantic segmentation model.

    Args:
        architecture: ``"fcn"`` (FCN-8s/16s/32s skip fusion), ``"unet"``, ``"deeplabv3"`` (ASPP) or
            ``"deeplabv3plus"`` (separable ASPP + stride-4 decoder).
        backbone: registry name (``"tv/resnet50"``, ``"timm/efficientnet_b0"``, ...); every stage is
            requested, heads take what they need. ``None`` only with ``"unet"``: the classic U-Net
            with its own encoder (``base_channels=64``, ``depth=4``: widths 64..1024), from scratch.
        num_classes: classes including background; logits have ``num_classes`` channels.
        pretrained, backbone_kwargs: see :func:`~lit_vision.backbones.create_backbone`
            (``backbone_kwargs`` may hold ``out_indices`` to restrict the stages).
        output_stride: ``None`` (natural, 32 for CNNs), 16 or 8: dilate the backbone's last stages
            (ResNets, most timm CNNs; others raise ``ValueError``). DeepLab is usually trained at 16.
        aux_loss: add ``"aux"`` logits from an FCN head on the penultimate map (for an auxiliary loss).
        **kwargs: the architecture's options, checked by name:

            * fcn: ``fcn_variant="8s"`` (``"16s"``, ``"32s"``), ``upsampling="bilinear"`` (or ``"learned"``).
            * unet: ``decoder_channels=(256, 128, 64, 32, 16)``, ``upsampling="bilinear"`` (``"nearest"``,
              ``"transposed"``); classic (``backbone=None``): ``base_channels=64``, ``depth=4``,
              ``decoder_channels`` = the encoder's widths mirrored, ``upsampling="transposed"``.
            * deeplabv3: ``atrous_rates`` (default (6, 12, 18) x 16 / deep stride), ``aspp_channels=256``,
              ``dropout=0.1``.
            * deeplabv3plus: those plus ``low_level_channels=48``, ``decoder_channels=256``.
    """
    if architecture not in SEGMENTATION_ARCHITECTURES:
        raise ValueError(f"architecture must be one of {SEGMENTATION_ARCHITECTURES}, got {architecture!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    backbone_kwargs = dict(backbone_kwargs or {})
    if "output_stride" in backbone_kwargs:
        raise TypeError("pass output_stride to build_segmenter, not in backbone_kwargs")

    if backbone is None:
        if architecture != "unet":
            raise ValueError(f"backbone=None selects the classic U-Net; {architecture!r} needs a registry backbone")
        if pretrained not in (False, None) or backbone_kwargs or output_stride is not None:
            raise ValueError(
                "the classic U-Net (backbone=None) trains from scratch: it takes no pretrained weights, "
                "backbone_kwargs or output_stride (use base_channels= / depth= to size it)"
            )
        _check_kwargs(_classic_unet, kwargs, "the classic U-Net (backbone=None)")
        body, head = _classic_unet(num_classes, **kwargs)
    else:
        builder = _HEADS[architecture]
        _check_kwargs(builder, kwargs, f"architecture {architecture!r}")
        out_indices = backbone_kwargs.pop("out_indices", None)
        body = create_backbone(backbone, pretrained=pretrained, out_indices=out_indices,
                               output_stride=output_stride, **backbone_kwargs)
        head = builder(body, num_classes, **kwargs)

    aux_head = None
    if aux_loss:
        if len(body.channels) < 2:
            raise ValueError(f"aux_loss needs at least two backbone maps; {body.name} returns {len(body.channels)}")
        aux_head = FCNHead(body.channels[-2], num_classes)
    return Segmenter(body, head, num_classes, aux_head, architecture)
