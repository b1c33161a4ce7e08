"""Options shared by the torchvision detectors (Faster R-CNN, RetinaNet, FCOS): FPN width, resizing, anchors.

torchvision's detectors accept any backbone module with ``out_channels`` that returns an ``OrderedDict`` of
equally wide maps; :class:`~lit_vision.necks.BackboneWithFPN` makes that from a registry backbone.

**Resizing.** torchvision's ``GeneralizedRCNNTransform`` normalises (ImageNet mean/std, kept) and resizes the
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

    def common_kwargs(self, image_size: int | None) -> dict[str, Any]:
        return self.resize_kwargs(image_size) | self.torchvision_kwargs


class AnchorBasedArchitecture(TorchvisionDetectorArchitecture):
    """A torchvision detector with anchor boxes (Faster R-CNN's RPN, RetinaNet).

    Args:
        anchor_sizes: per-level base sizes (one number per level, expanded by ``scales_per_octave``) or
            per-level size tuples; default ``4 x stride``.
        aspect_ratios: anchor ratios per location.
        scales_per_octave: anchor scales per level (default 3 scales x 3 ratios).
        **kwargs: see :class:`TorchvisionDetectorArchitecture`.
    """

    def __init__(
        self,
        anchor_sizes: Sequence[Any] | None = None,
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        scales_per_octave: int = 3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.anchor_sizes = list(anchor_sizes) if anchor_sizes is not None else None
        self.aspect_ratios = tuple(float(r) for r in aspect_ratios)
        self.scales_per_octave = scales_per_octave

    def anchor_generator(self, strides: Sequence[int]) -> AnchorGenerator:
        sizes = anchor_sizes(strides, self.anchor_sizes, self.scales_per_octave)
        return AnchorGenerator(sizes, (self.aspect_ratios,) * len(strides))


def anchor_sizes(strides: Sequence[int], sizes: Sequence[Any] | None, scales_per_octave: int) -> tuple[tuple[float, ...], ...]:
    """Per-level anchor sizes: a base size per level (default 4 x stride) times ``2**(k / scales_per_octave)``.

    ``sizes`` may give the base sizes (one number per level) or the full per-level tuples.
    """
    if sizes is None:
        sizes = [4 * s for s in strides]
    if len(sizes) != len(strides):
        raise ValueError(f"anchor_sizes has {len(sizes)} entries but the pyramid has {len(strides)} levels")
    out = []
    for size in sizes:
        if isinstance(size, (int, float)):
            out.append(tuple(float(size) * 2 ** (k / scales_per_octave) for k in range(scales_per_octave)))
        else:
            out.append(tuple(float(s) for s in size))
    return tuple(out)
