"""Building blocks shared by the segmentation decoders: exact resizes, padding to a skip, separable and
bilinear-initialised transposed convolutions.

Every segmentation head takes the backbone's list of maps (shallow to deep) and returns class logits at some
stride; :class:`~lit_vision.models.segmentation.Segmenter` resizes them to the input. Heads pick maps by
*position* (``features[-1]``, ``features[-2]``), never by stride, because a dilated backbone reports
repeated strides (``[2, 4, 8, 8, 8]`` at output stride 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.ops import Conv2dNormActivation

__all__ = [
    "FCNHead",
    "SeparableConvBNReLU",
    "BilinearConvTranspose2d",
    "bilinear_kernel",
    "resize_to",
    "pad_to",
]



def _tracing() -> bool:
    """Whether an exporter is recording the graph: a branch on a shape would be frozen at the example's size (a
    U-Net exported at 64 px skipped its last resize, and padding, for every other size)."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or bool(exporting and exporting())


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize to an exact ``(h, w)`` (no-op when already there): any input size works. While an exporter
    traces, always resized (to the same size it is exact), so the graph works at every size."""
    if not _tracing() and tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def pad_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Zero-pad or crop the bottom/right edges to ``(h, w)``.

    After a 2x upsampling the map is at most one pixel off its skip: a max-pool floors (the
    skip is one longer) and a padded strided conv ceils (one shorter). Either way the odd
    pixel is the last row/column, so the edit belongs there, keeping pixel grids aligned.
    """
    dh, dw = size[0] - x.shape[-2], size[1] - x.shape[-1]
    return F.pad(x, [0, dw, 0, dh]) if dh or dw or _tracing() else x


class SeparableConvBNReLU(nn.Sequential):
    """Depthwise (dilated) ``k x k`` -> BN -> ReLU, then pointwise 1x1 -> BN -> ReLU.

    DeepLabv3+'s atrous separable convolution, with the BN + ReLU after the depthwise step that
    the paper's reference (``split_separable_conv2d`` in tensorflow/models/research/deeplab)
    uses. It costs about ``1/C_out + 1/9`` of a dense 3x3 at the same width.
    ``depthwise_norm=False`` is the Xception / Keras ``SeparableConv2D`` form that
    segmentation_models_pytorch uses: depthwise -> pointwise -> BN -> ReLU (one BN fewer on the
    widest map: cheaper on the CPU, where BatchNorm is memory-bound).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
                 depthwise_norm: bool = True) -> None:
        if depthwise_norm:
            # Flat (conv, BN, ReLU, conv, BN, ReLU): index 0 is the depthwise conv, 3 the pointwise one.
            super().__init__(
                *Conv2dNormActivation(in_channels, in_channels, kernel_size, dilation=dilation, groups=in_channels),
                *Conv2dNormActivation(in_channels, out_channels, 1),
            )
            return
        # Flat (conv, conv, BN, ReLU): index 0 is the depthwise conv, 1 the pointwise one.
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                      dilation=dilation, groups=in_channels, bias=False),
            *Conv2dNormActivation(in_channels, out_channels, 1),
        )


def bilinear_kernel(channels: int, factor: int) -> Tensor:
    """``ConvTranspose2d`` weight ``[C, 1, 2f, 2f]`` that upsamples each channel bilinearly by ``f``.

    The FCN paper's initialisation. With stride ``f`` and padding ``f // 2`` it reproduces
    ``F.interpolate(scale_factor=f, mode="bilinear", align_corners=False)`` away from the borders.
    """
    k = 2 * factor
    centre = (k - 1) / 2
    ramp = 1 - (torch.arange(k, dtype=torch.float32) - centre).abs() / factor
    return (ramp[:, None] * ramp[None, :]).expand(channels, 1, k, k).clone()


class BilinearConvTranspose2d(nn.ConvTranspose2d):
    """Learnable per-channel ``f``-times upsampling, initialised to bilinear interpolation.

    Depthwise (``groups=channels``) so the initial state is exactly bilinear per class score;
    training may then sharpen it, as in FCN's learned 2x layers. Output is ``f`` times the input.
    """

    def __init__(self, channels: int, factor: int) -> None:
        if factor < 2 or factor % 2:
            raise ValueError(f"learned upsampling needs an even factor >= 2, got {factor}")
        super().__init__(channels, channels, 2 * factor, stride=factor, padding=factor // 2,
                         groups=channels, bias=False)
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(channels, factor))
