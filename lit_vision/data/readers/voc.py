"""The PASCAL VOC layout, read and checked for every task that uses it.

A VOC year folder (``VOCdevkit/VOC2012``) holds ``ImageSets/<Main|Segmentation>/<split>.txt`` id lists,
``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml`` (detection) and ``SegmentationClass/<id>.png``
(segmentation). Detection (:mod:`lit_vision.data.detection.voc`) and segmentation
(:mod:`lit_vision.data.segmentation.voc`) read the split lists, the class list and the XMLs from here.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from lit_vision.data.checks import DataError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

_NUMERIC_ID = re.compile(r"^[0-9_]+$")
_MAX_INT_DIGITS = 18  # int64 holds every 18-digit number


def _text(element: ET.Element, tag: str, path: Path, what: str) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DataError(f"{path}: {what} has no <{tag}>")
    return child.text.strip()


def _flag(element: ET.Element, tag: str) -> bool:
    """``<difficult>1</difficult>``-style flags; absent or empty means 0 (as VOC's devkit reads them)."""
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return False
    return bool(int(float(child.text.strip())))


def parse_voc_xml(path: str | Path) -> dict[str, Any]:
    """Read one VOC annotation XML.

    Returns ``{"filename", "width", "height", "objects"}``; each object is ``{"name", "bbox", "difficult",
    "truncated"}`` with ``bbox`` in continuous XYXY pixels, converted from VOC's 1-based inclusive indices
    as ``[xmin - 1, ymin - 1, xmax, ymax]`` (see the module docstring). Only the direct ``<object>``
    children are read (``<part>`` boxes of person layouts are not objects). Values are not range-checked
    here (the dataset does that); a malformed file raises :class:`DataError` naming it.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DataError(f"{path}: not a readable XML file ({err})") from err
    try:
        size = root.find("size")
        if size is None:
            raise DataError(f"{path}: the annotation has no <size>")
        width = int(float(_text(size, "width", path, "<size>")))
        height = int(float(_text(size, "height", path, "<size>")))
        filename_el = root.find("filename")
        filename = filename_el.text.strip() if filename_el is not None and filename_el.text else f"{path.stem}.jpg"
        objects = []
        for index, obj in enumerate(root.findall("object")):
            what = f"object {index}"
            name = _text(obj, "name", path, what)
            bndbox = obj.find("bndbox")
            if bndbox is None:
                raise DataError(f"{path}: {what} ({name}) has no <bndbox>")
            xmin, ymin, xmax, ymax = (float(_text(bndbox, t, path, f"{what} ({name})"))
                                      for t in ("xmin", "ymin", "xmax", "ymax"))
            objects.append({
                "name": name,
                "bbox": [xmin - 1.0, ymin - 1.0, xmax, ymax],
                "difficult": _flag(obj, "difficult"),
                "truncated": _flag(obj, "truncated"),
            })  # fmt: skip
    except ValueError as err:  # int()/float() of a non-number (DataError is a ValueError too: re-raise it)
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: malformed number ({err})") from err
    return {"filename": filename, "width": width, "height": height, "objects": objects}


def image_ids_of(ids: Sequence[str]) -> list[int]:
    """Integer ids for the split's string ids: the digits of the id when possible, else the position (1-based)."""
    if all(_NUMERIC_ID.match(i) and 0 < len(i.replace("_", "")) <= _MAX_INT_DIGITS for i in ids):
        numeric = [int(i.replace("_", "")) for i in ids]
        if len(set(numeric)) == len(numeric):
            return numeric
    return list(range(1, len(ids) + 1))


def read_split_ids(root: str | Path, kind: str, split: str) -> tuple[Path, list[str]]:
    """``(split file, ids)`` of ``<root>/ImageSets/<kind>/<split>.txt``; a missing folder or file, an empty list
    or an id listed twice raises :class:`DataError` naming the file."""
    root = Path(root).expanduser()
    split_file = root / "ImageSets" / kind / f"{split}.txt"
    if not root.is_dir():
        raise DataError(f"VOC folder {root} does not exist")
    if not split_file.is_file():
        raise DataError(f"split file {split_file} does not exist (split {split!r} of {root})")
    ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"split file {split_file} lists no image ids")
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise DataError(f"split file {split_file} lists ids more than once: {duplicates[:10]}")
    return split_file, ids
