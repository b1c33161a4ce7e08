"""Class-index masks as palette PNGs: the PASCAL VOC palette and the PNG writer used by data and writers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image


def voc_palette() -> list[int]:
    """The 256-colour PASCAL VOC palette (bit-interleaved), as a flat ``[r, g, b, ...]`` list."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def pil_mask(mask: torch.Tensor, palette: Sequence[int]) -> Image.Image:
    """A class-index mask as a palette PNG image (``.save(path)``), the format VOC masks are read from."""
    array = mask.to(torch.uint8).cpu().contiguous().numpy()
    image = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
    image.putpalette(list(palette))
    return image
