"""The shard folder's sidecar index and the byte-level helpers both sides of the shards share.

A shard folder written by :func:`~lit_vision.data.streaming.writer.optimize_data` is::

    <output>/lit_vision_index.json      task, format, class names, category ids, per split: count and images
    <output>/<split>/index.json         LitData's own index of the split's chunks
    <output>/<split>/chunk-*.bin        the records (encoded image bytes, labels, boxes, masks)

LitData's ``index.json`` describes chunks, not a dataset: the class names, COCO category ids and image sizes a
task needs before the first batch (``num_classes`` is linked into the model at instantiation) live in the
sidecar, which is small and read once. Images are stored as the source file's bytes, never re-encoded, so a
decoded picture is the file's picture; the EXIF orientation the file-based reader would apply is recorded per
record (``exif``) and applied at decode time, as :func:`~lit_vision.data.checks.load_rgb` does.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lit_vision.data.checks import (
    EXIF_TRANSPOSE,
    IMAGE_READ_ERRORS,
    DataError,
    exif_applies,
    oriented_size,
    to_rgb,
)

INDEX_FILE = "lit_vision_index.json"
INDEX_VERSION = 1
INSTALL_HINT = "pip install 'lit_vision[streaming]'"
TASK_OF_FORMAT = {"imagefolder": "classification", "coco": "detection", "voc": "detection",
                  "voc-seg": "segmentation", "coco-seg": "segmentation"}


def require_litdata() -> Any:
    """The ``litdata`` module; without it, an ImportError in one line saying what to install."""
    try:
        import litdata
    except ImportError:
        raise ImportError(f"streaming data needs LitData: {INSTALL_HINT}") from None
    return litdata


def is_remote(path: str) -> bool:
    return "://" in str(path)


def join(root: str, name: str) -> str:
    """``root/name`` for local folders and object-store URIs alike (``s3://bucket/x`` + ``train``)."""
    return str(root).rstrip("/") + "/" + name


def _open(path: str, mode: str) -> Any:
    if not is_remote(path):
        return open(Path(path).expanduser(), mode)
    import fsspec  # object stores: fsspec with the store's backend (s3fs, gcsfs, ...)

    return fsspec.open(path, mode).open()


def write_index(output_dir: str, index: dict[str, Any]) -> None:
    with _open(join(output_dir, INDEX_FILE), "w") as f:
        json.dump(index, f)


def read_index(input_dir: str, task: str | None = None) -> dict[str, Any]:
    """The sidecar of a shard folder, checked: a missing or foreign file (or another task's) raises naming it."""
    path = join(input_dir, INDEX_FILE)
    try:
        with _open(path, "r") as f:
            index = json.load(f)
    except FileNotFoundError as err:
        raise DataError(f"{path} does not exist: {input_dir} is not a lit_vision shard folder (write one with "
                        "`lit-vision optimize-data`)") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(index, dict) or index.get("lit_vision_streaming") != INDEX_VERSION:
        raise DataError(f"{path} is not a lit_vision shard index (version {INDEX_VERSION})")
    if task is not None and index["task"] != task:
        raise DataError(f"{path} holds {index['task']} data (format {index['format']!r}), not {task} data")
    return index


# ------------------------------------------------------------------ images and masks as bytes
def applied_orientation(path: str | Path, annotated: tuple[int, int] | None, where: str) -> int:
    """The EXIF orientation :func:`~lit_vision.data.checks.load_rgb` applies to ``path`` (0: none), same rule."""
    size = oriented_size(path)
    if size.orientation != 1 and (annotated is None or exif_applies(size, annotated, path, where)):
        return size.orientation
    return 0


def decode_rgb(data: bytes | memoryview, orientation: int, name: str) -> Image.Image:
    """8-bit RGB from a stored file's bytes: the pixels :func:`~lit_vision.data.checks.load_rgb` gives the file."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = to_rgb(im)
    except IMAGE_READ_ERRORS as err:
        raise DataError(f"cannot decode the stored image {name}: {err}") from err
    return rgb.transpose(EXIF_TRANSPOSE[orientation]) if orientation else rgb


def encode_mask(mask: np.ndarray) -> bytes:
    """A uint8 class map as a greyscale PNG (lossless; about the size of VOC's palette PNGs)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def decode_mask(data: bytes | memoryview) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im, dtype=np.uint8)
