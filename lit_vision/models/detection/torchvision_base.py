"""Options shared by the torchvision detectors (Faster R-CNN, RetinaNet, FCOS): FPN width, resizing, anchors.

torchvision's detectors accept any backbone module with ``out_channels`` that returns an ``OrderedDict`` of
equally wide maps; :class:`~lit_vision.necks.BackboneWithFPN` makes that from a registry backbone.

**Resizing.** torchvision's ``GeneralizedRCNNTransform`` normalises (with the backbone's pretrained mean/std:
ImageNet's for ``tv/`` backbones, :func:`normalization_kwargs`) and resizes the
shorter side to ``min_size`` (capped so the longer side is at most ``max_size``). Our DataModules already
resize (longer side = ``image_size``, linked into the model by the CLI), so by default the detector uses
``min_size = max_size = image_size``, which makes the evaluation resize the identity for any aspect ratio,
and skips the training resize (torchvision's ``_skip_resize``) so the DataModule's scale jitter survives.
Give ``min_size``/``max_size`` explicitly to have torchvision resize again (its COCO reference: 800/1333).
Predictions always come back in the coordinates of the images given to ``forward``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchvision.models.detection.anchor_utils import AnchorGenerator

from lit_vision.backbones import Backbone, input_normalization
from lit_vision.models.detection.base import DetectorArchitecture
from lit_vision.necks import BackboneWithFPN


class TorchvisionDetectorArchitecture(DetectorArchitecture):
    """Base of the torchvision architectures (see the module docstring).

    Args:
        fpn_channels: width of the pyramid.
        min_size, max_size: torchvision's internal resize; ``None`` (default): follow ``image_size`` and do
            not resize again (without an ``image_size``: 800 / 1333).
        torchvision_kwargs: further arguments of the torchvision constructor (e.g. Faster R-CNN's
            ``rpn_post_nms_top_n_train``), passed as they are.
        **kwargs: see :class:`~lit_vision.models.detection.base.DetectorArchitecture`
            (``backbone_out_indices``, ``score_thresh``, ``nms_thresh``, ``detections_per_img``).
    """

    extra_levels: str = "p6p7"  # FPN levels above the backbone's: "maxpool" (Faster R-CNN) or "p6p7"

    def __init__(
        self,
        fpn_channels: int = 256,
        min_size: int | None = None,
        max_size: int | None = None,
        torchvision_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.fpn_channels, self.min_size, self.max_size = fpn_channels, min_size, max_size
        self.torchvision_kwargs = dict(torchvision_kwargs or {})

    def neck(self, backbone: Any) -> BackboneWithFPN:
        return BackboneWithFPN(backbone, out_channels=self.fpn_channels, extra=self.extra_levels)  # type: ignore[arg-type]

    def resize_kwargs(self, image_size: int | None) -> dict[str, Any]:
        """``min_size``/``max_size`` (and ``_skip_resize``) for the torchvision constructor."""
        if self.min_size is not None or self.max_size is not None or image_size is None:
            return {"min_size": self.min_size or 800, "max_size": self.max_size or 1333}
        return {"min_size": image_size, "max_size": image_size, "_skip_resize": True}

    def common_kwargs(self, image_size: int | None, backbone: Backbone | None = None) -> dict[str, Any]:
        """Resizing, the backbone's input normalisation, then ``torchvision_kwargs`` (which win)."""
        return self.resize_kwargs(image_size) | normalization_kwargs(backbone) | self.torchvision_kwargs


def normalization_kwargs(backbone: Backbone | None) -> dict[str, Any]:
    """``image_mean``/``image_std`` for torchvision's ``GeneralizedRCNNTransform``: what the backbone's pretrained
    weights expect (:func:`~lit_vision.backbones.pretrained_config`; ImageNet's, torchvision's default, for ``tv/``
    backbones, but e.g. 0.5/0.5 for many timm ViTs). Empty (torchvision's default) outside the registry."""
    normalization = input_normalization(backbone)
    return {} if normalization is None else {"image_mean": normalization[0], "image_std": normalization[1]}


class AnchorBasedArchitecture(TorchvisionDetectorArchitecture):
    """A torchvision detector with anchor boxes (Faster R-CNN's RPN, RetinaNet).

    Args:
        anchor_sizes: per-level base sizes (one number per level, expanded by ``scales_per_octave``) or
            per-level size tuples; default the architecture's own, torchvision's: ``anchor_factor x stride``
            (Faster R-CNN 8, so 32 .. 512 on P2-P6; RetinaNet 4, so 32 .. 512 on P3-P7).
        aspect_ratios: anchor ratios per location.
        scales_per_octave: anchor scales per level; default the architecture's (Faster R-CNN 1, RetinaNet 3).
            Size ``k`` of a level is ``int(base * 2 ** (k / scales_per_octave))``, truncated as torchvision does.
        **kwargs: see :class:`TorchvisionDetectorArchitecture`.
    """

    anchor_factor: int = 4  # default base anchor size = anchor_factor x the level's stride
    default_scales_per_octave: int = 3

    def __init__(
        self,
        anchor_sizes: Sequence[Any] | None = None,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        scales_per_octave: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.anchor_sizes = list(anchor_sizes) if anchor_sizes is not None else None
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.scales_per_octave = scales_per_octave

    def anchor_generator(self, strides: Sequence[int]) -> AnchorGenerator:
        scales = self.scales_per_octave or self.default_scales_per_octave
        base = self.anchor_sizes if self.anchor_sizes is not None else [self.anchor_factor * s for s in strides]
        sizes = anchor_sizes(strides, base, scales)
        return AnchorGenerator(sizes, (self.aspect_ratios,) * len(strides))


def anchor_sizes(strides: Sequence[int], sizes: Sequence[Any], scales_per_octave: int) -> tuple[tuple[float, ...], ...]:
    """Per-level anchor sizes: each base size times ``2**(k / scales_per_octave)``, ``k = 0 .. scales - 1``.

    The intermediate sizes are truncated to integers as torchvision's RetinaNet does
    (``int(x * 2 ** (1 / 3))``: 32, 40, 50 on P3), so default anchors are exactly the reference's.
    ``sizes`` may give the base sizes (one number per level) or the full per-level tuples.
    """
    if len(sizes) != len(strides):
        raise ValueError(f"anchor_sizes has {len(sizes)} entries but the pyramid has {len(strides)} levels")
    out = []
    for size in sizes:
        if isinstance(size, (int, float)):
            out.append(tuple(float(size if k == 0 else int(size * 2 ** (k / scales_per_octave)))
                             for k in range(scales_per_octave)))
        else:
            out.append(tuple(float(s) for s in size))
    return tuple(out)
