"""Mosaic augmentation, as the Ultralytics YOLOv8 training recipe uses it, and its close-off in the last epochs.

**What a mosaic sample is** (the published recipe, described here in our own words and written from that
description; ``s`` is the training ``image_size``):

1. Four images: the sample's own and three drawn uniformly from the split. Each is resized so that its
   longer side is ``s`` (aspect kept).
2. They are placed around a random junction ``(xc, yc)``, each coordinate ``~ U(s/2, 3s/2)``, on a
   ``2s x 2s`` canvas filled with grey 114: the first image ends at the junction (above and to the left of
   it), the second starts there horizontally (above, right), the third vertically (below, left), the
   fourth starts there on both axes (below, right). Parts falling off the canvas are cut.
3. A random affine maps the canvas to the ``s x s`` output: scale gain ``g ~ U(0.5, 1.5)`` about the canvas
   centre and a translation of ``U(-0.1, 0.1) * s`` per axis; no rotation, shear or perspective.
4. Boxes follow the pixels and are kept, as YOLOv8's box-candidate rule does, when after clipping to the
   output their width and height exceed 2 px, more than 10 % of their area before clipping survives (the
   part of the box on the canvas, times ``g^2``) and their aspect ratio is under 100. Masks follow their box.

Without rotation or shear, step 3 is a crop of a square window of side ``s / g`` (centred on the canvas
centre moved by the translation) resized to ``s x s``; that is how it is computed: only the window is
composed (the images pasted into a grey square, uint8 throughout), then one ``F.resize`` on tv_tensors moves
image and masks together; boxes are moved by the same factor by hand, because the filter needs the boxes
*before* clipping, which v2's box ops would clamp.

After the mosaic the normal training preset's flip and photometric ops run, then ``ToDtype`` and
``SanitizeBoundingBoxes`` (see :func:`~lit_vision.data.detection.transforms.detection_train_transforms`).

**Close-off.** YOLOv8 trains its last 10 epochs without mosaic (``close_mosaic``), so the model ends on
images like the ones it will see. The decision is taken per sample from the epoch in the sample key
``(seed, epoch, index)`` (:class:`~lit_vision.data.resumable.SeededDataset` calls :meth:`MosaicDataset.getitem_at`),
inside the loader workers: persistent workers never see attributes changed after they started, but they
see every key, so the switch is exact under resume and identical for any ``num_workers``.

**Cache.** A mosaic reads four images, so an epoch decodes each photo about four times; decoding and the resize
to ``s`` were over half of an epoch's loading on small photo sets (people benchmark, 256 px). Ultralytics keeps
recent resized images in a buffer; ``cache_mb`` keeps them too (least recently used first out, per loader
process). It holds exactly what :meth:`Mosaic.fit` returns, so mosaics are the same pixels with or without it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from lit_vision.data.detection.base import DetectionSource, finish_item
from lit_vision.data.detection.transforms import (
    LETTERBOX_FILL,
    DetectionTransform,
    box_candidates,
)

__all__ = ["Mosaic", "MosaicDataset", "MosaicParams"]

# Masks are resized with pixel-centre-aligned nearest: torch's legacy "nearest" (v2's default for masks) samples
# source pixel floor(i * scale), which shifts a mask by up to a source pixel off its box when the mosaic zooms in.
NEAREST_EXACT = F.InterpolationMode.NEAREST_EXACT


@dataclass(frozen=True)
class MosaicParams:
    """One mosaic's random draws: the junction on the ``2s`` canvas, the scale gain, the translation (in ``s``)."""

    centre: tuple[int, int]
    gain: float
    translate: tuple[float, float]


class Mosaic:
    """Four raw ``(image, target)`` pairs -> one ``s x s`` uint8 image and its target (see the module docstring).

    Args:
        image_size: ``s``, the output side.
        scale: range of the scale gain ``g`` (YOLOv8: ``scale=0.5``, i.e. ``(0.5, 1.5)``).
        translate: translation range, a fraction of ``s`` per axis (YOLOv8: 0.1).
        min_size, min_area_fraction, max_aspect: the box filter (YOLOv8's rule, :func:`.transforms.box_candidates`).
    """

    def __init__(self, image_size: int, scale: tuple[float, float] = (0.5, 1.5), translate: float = 0.1,
                 min_size: float = 2.0, min_area_fraction: float = 0.1, max_aspect: float = 100.0) -> None:
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (lo, hi) with 0 < lo <= hi, got {scale}")
        self.image_size, self.scale, self.translate = image_size, tuple(scale), translate
        self.min_size, self.min_area_fraction, self.max_aspect = min_size, min_area_fraction, max_aspect

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(image_size={self.image_size}, scale={self.scale}, translate={self.translate})")

    def draw(self) -> MosaicParams:
        """Random parameters from torch's generator (seeded per sample by the resumable loader)."""
        s = self.image_size
        u = torch.rand(5).tolist()
        centre = (int(s / 2 + u[0] * s), int(s / 2 + u[1] * s))
        gain = self.scale[0] + u[2] * (self.scale[1] - self.scale[0])
        translate = ((2 * u[3] - 1) * self.translate, (2 * u[4] - 1) * self.translate)
        return MosaicParams(centre, gain, translate)

    def fit(self, image: Image.Image | Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """Longer side to ``s``, on the PIL image (cheap, uint8) before it becomes a tensor; an image already
        fitted (what :class:`MosaicDataset` caches) passes through unchanged."""
        h, w = F.get_size(image)
        ratio = self.image_size / max(h, w)
        size = [max(1, round(h * ratio)), max(1, round(w * ratio))]
        if size != [h, w]:
            image = F.resize(image, size, antialias=True)
            target = dict(target, boxes=F.resize(target["boxes"], size))
            if "masks" in target:
                target["masks"] = F.resize(target["masks"], size, interpolation=NEAREST_EXACT)
        return F.to_image(image), target

    def __call__(self, samples: Sequence[tuple[Any, dict[str, Any]]],
                 params: MosaicParams | None = None) -> tuple[tv_tensors.Image, dict[str, Any]]:
        if len(samples) != 4:
            raise ValueError(f"a mosaic takes 4 images, got {len(samples)}")
        params = params if params is not None else self.draw()
        s = self.image_size
        side = max(1, round(s / params.gain))
        left = round(s - (0.5 + params.translate[0]) * s / params.gain)  # window in canvas pixels
        top = round(s - (0.5 + params.translate[1]) * s / params.gain)
        xc, yc = params.centre
        window = torch.full((3, side, side), LETTERBOX_FILL, dtype=torch.uint8)
        with_masks = "masks" in samples[0][1]
        boxes, labels, pieces = [], [], []
        for k, (image, target) in enumerate(samples):
            pixels, target = self.fit(image, target)
            h, w = pixels.shape[-2:]
            x0, y0 = (xc - w if k in (0, 2) else xc), (yc - h if k in (0, 1) else yc)
            # The part of this image that is both on the 2s canvas and in the window.
            cx0, cx1 = max(x0, 0, left), min(x0 + w, 2 * s, left + side)
            cy0, cy1 = max(y0, 0, top), min(y0 + h, 2 * s, top + side)
            region = None
            if cx1 > cx0 and cy1 > cy0:
                region = (slice(cy0 - top, cy1 - top), slice(cx0 - left, cx1 - left),
                          slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
                window[:, region[0], region[1]] = pixels[:, region[2], region[3]]
            b = target["boxes"].as_subclass(Tensor).float() + torch.tensor([x0, y0, x0, y0])
            boxes.append(b.clamp(0, 2 * s) - torch.tensor([left, top, left, top]))  # on the canvas, in the window
            labels.append(target["labels"])
            pieces.append((target["masks"].as_subclass(Tensor) if with_masks else None, region, len(b)))
        factor = s / side  # what F.resize applies to the pixels below
        before = torch.cat(boxes) * factor
        after = before.clamp(0, s)
        keep = box_candidates(before, after, self.min_size, self.min_area_fraction, self.max_aspect)
        out: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(after[keep], format="XYXY", canvas_size=(s, s)),
            "labels": torch.cat(labels)[keep],
        }
        if with_masks:
            out["masks"] = self._masks(pieces, keep, side)
        image = tv_tensors.Image(window)
        return (F.resize(image, [s, s], antialias=True) if side != s else image), out

    def _masks(self, pieces: list[tuple[Tensor | None, tuple[slice, ...] | None, int]], keep: Tensor,
               side: int) -> tv_tensors.Mask:
        """The kept objects' masks pasted into the window like their images, then resized to ``s``."""
        masks = torch.zeros((int(keep.sum()), side, side), dtype=torch.uint8)
        start = filled = 0
        for image_masks, region, n in pieces:
            kept = keep[start:start + n]
            start += n
            count = int(kept.sum())
            if count and region is not None and image_masks is not None:
                masks[filled:filled + count, region[0], region[1]] = image_masks[kept][:, region[2], region[3]]
            filled += count
        mask = tv_tensors.Mask(masks)
        if side == self.image_size:
            return mask
        return F.resize(mask, [self.image_size, self.image_size], interpolation=NEAREST_EXACT)


@dataclass(frozen=True)
class _Piece:
    """One image as a mosaic uses it: resized pixels and target, and what the item reports of the original."""

    pixels: Tensor
    target: dict[str, Any]
    image_id: int
    path: str
    orig_size: tuple[int, int]

    def nbytes(self) -> int:
        tensors = [self.pixels, *(v for v in self.target.values() if isinstance(v, Tensor))]
        return sum(t.numel() * t.element_size() for t in tensors)


class MosaicDataset(Dataset):
    """Training items: a mosaic with probability ``probability`` before epoch ``stop_epoch``, else ``transform``.

    Args:
        source: the checked split (its :meth:`~DetectionSource.raw_item` feeds the mosaics).
        transform: the normal training preset; its ``ops`` (flip, photometric, dtype, sanitize) also run
            after each mosaic, whose output replaces the preset's resize/letterbox and ``scale_range``.
        probability: chance that a sample is a mosaic (YOLOv8: 1.0).
        stop_epoch: first epoch without mosaic (``max_epochs - close_mosaic``, set by the DataModule when it
            builds the training loader); ``None``: mosaic in every epoch.
        mosaic: the :class:`Mosaic` (default: YOLOv8's parameters at ``transform.image_size``).
        cache_mb: MiB of images, decoded and resized for the mosaic, that each loading process keeps between
            draws (least recently used out first); 0: none. Worth it when the split at ``image_size`` fits
            (140 photos at 320 px: ~30 MiB); each loader worker holds its own.

    Mosaic items keep the item contract: ``image_id``, ``path`` and ``orig_size`` are the first image's,
    ``scale=(1, 1)`` and ``pad=(0, 0, 0, 0)`` (nothing maps training outputs back). Without an epoch (a
    plain ``dataset[i]``) an item is read as in epoch 0.
    """

    def __init__(self, source: DetectionSource, transform: DetectionTransform, probability: float = 1.0,
                 stop_epoch: int | None = None, mosaic: Mosaic | None = None, cache_mb: float = 0.0) -> None:
        if not 0 <= probability <= 1:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        if cache_mb < 0:
            raise ValueError(f"cache_mb must be >= 0 (MiB kept per loading process; 0: no cache), got {cache_mb}")
        self.plain = source.with_transforms(transform)
        self.ops = transform.ops
        self.probability, self.stop_epoch = probability, stop_epoch
        self.mosaic = mosaic if mosaic is not None else Mosaic(transform.image_size)
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[int, _Piece] = OrderedDict()
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.plain)

    def mosaic_on(self, epoch: int) -> bool:
        return self.probability > 0 and (self.stop_epoch is None or epoch < self.stop_epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.getitem_at(0, index)

    def getitem_at(self, epoch: int, index: int) -> dict[str, Any]:
        """Item ``index`` of ``epoch``; random draws come from torch's generator, seeded per sample by the loader."""
        if not self.mosaic_on(epoch) or (self.probability < 1 and torch.rand(()).item() >= self.probability):
            return self.plain[index]
        indices = [index, *torch.randint(len(self.plain), (3,)).tolist()]
        pieces = [self._piece(i) for i in indices]
        image, target = self.mosaic([(piece.pixels, piece.target) for piece in pieces])
        image, target = self.ops(image, target)
        target |= {"scale": (1.0, 1.0), "pad": (0, 0, 0, 0)}
        first = pieces[0]
        return finish_item(image, target, first.image_id, first.orig_size, first.path)

    def _piece(self, index: int) -> _Piece:
        """Image ``index`` resized for the mosaic (longer side ``s``) with its target; from the cache if held.
        The mosaic only reads a piece (it pastes the pixels and builds new box, label and mask tensors)."""
        piece = self._cache.get(index)
        if piece is not None:
            self._cache.move_to_end(index)
            return piece
        image, target, image_id, path = self.plain.raw_item(index)
        h, w = F.get_size(image)
        pixels, target = self.mosaic.fit(image, target)
        piece = _Piece(pixels, target, image_id, path, (h, w))
        if self.cache_bytes and (size := piece.nbytes()) <= self.cache_bytes:
            self._cache[index] = piece
            self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes:
                self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes()
        return piece

    def __getattr__(self, name: str) -> Any:  # class_names, image_paths, transforms ... of the source
        if name == "plain":
            raise AttributeError(name)
        return getattr(self.plain, name)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(probability={self.probability}, stop_epoch={self.stop_epoch}, "
                f"mosaic={self.mosaic!r}, cache_mb={self.cache_bytes / 2**20:g}, "
                f"transforms={self.plain.transforms!r})")
