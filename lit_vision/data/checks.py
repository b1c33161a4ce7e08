"""Checks that find bad input files before training starts.

A corrupt JPEG found in epoch 37 costs hours; the same file found in ``setup`` costs a second. These
helpers are shared by every DataModule so the messages look the same everywhere: they always name
the file and say what is wrong with it.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif"}
)

# Above this many files, automatic verification is skipped (a full decode of ImageNet takes long);
# users can still force it with ``verify_images=True``.
AUTO_VERIFY_LIMIT = 20_000
THREADED_DECODE_MIN_S = 1e-3  # seconds a file: below, load_all_rgb decodes in turn (see there)
_DECODE_PROBE = 16  # files decoded in turn first, to time them


OnBad = Literal["error", "skip"]  # what to do with a bad file or annotation: raise, or skip it with a counted warning


class DataError(ValueError):
    """Bad input data: the message names the offending path and the problem."""


# What reading an image can raise: PIL's OSError for truncated data, SyntaxError / ValueError for broken headers,
# and DecompressionBombError (an Exception, not an OSError) for images over Image.MAX_IMAGE_PIXELS (~179 MP).
IMAGE_READ_ERRORS: tuple[type[Exception], ...] = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def is_hidden(path: Path) -> bool:
    """Hidden files (``.DS_Store``, ``._foo.jpg`` from macOS) are never data."""
    return path.name.startswith(".")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def check_image(path: str | Path) -> str | None:
    """Return ``None`` if ``path`` decodes as an image :func:`load_rgb` can take (mode, bit depth, value range),
    else a short description of the problem.

    JPEGs are decoded in draft mode (at 1/8 scale): the whole stream is still read, so truncated files
    are caught, at a fraction of the cost of a full decode.
    """
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
            if im.width < 1 or im.height < 1:
                return "image has zero size"
            to_rgb(im)  # a mode or value range load_rgb refuses is found here, not mid-epoch
    except DataError as err:
        return str(err)
    except FileNotFoundError:
        return "file does not exist"
    except UnidentifiedImageError:
        return "not a readable image (unknown or corrupt format)"
    except IMAGE_READ_ERRORS as err:  # PIL raises OSError for truncated data
        return f"unreadable image ({err})"
    return None




# ---------------------------------------------------------------------------------------------- decoding
# How a file becomes the RGB image a model sees (docs/images.md): EXIF orientation, bit depth, modes.

# EXIF orientation -> the transpose that shows the image as viewers do. Pillow has the same table, but only
# inside ImageOps.exif_transpose, which also rewrites the EXIF block (and fails on some malformed ones).
EXIF_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class OrientedSize(NamedTuple):
    """An image's size as viewers show it (``shown``, EXIF orientation applied) and as stored, ``(w, h)``."""

    shown: tuple[int, int]
    stored: tuple[int, int]
    orientation: int  # EXIF orientation, 1 (none) .. 8


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag of ``im`` (1..8); absent, invalid or unparsable EXIF counts as 1 (as stored)."""
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except OSError:  # a PNG is decoded to find an EXIF chunk after its pixels: truncated data is an error
        raise
    except Exception:  # noqa: BLE001 -- a broken EXIF block must not make a decodable image unreadable
        return 1
    return value if isinstance(value, int) and value in EXIF_TRANSPOSE else 1


def _sizes(im: Image.Image) -> OrientedSize:
    orientation = exif_orientation(im)
    w, h = im.size
    return OrientedSize((h, w) if orientation >= 5 else (w, h), (w, h), orientation)


def oriented_size(path: str | Path) -> OrientedSize:
    """The shown and stored sizes of the image at ``path`` (a JPEG's header only; PNG reads the pixels to find
    an EXIF chunk stored after them)."""
    try:
        with Image.open(path) as im:
            return _sizes(im)
    except IMAGE_READ_ERRORS as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def exif_applies(size: OrientedSize, annotated: tuple[int, int], path: str | Path, where: str) -> bool:
    """Whether an image annotated as ``annotated`` ``(w, h)`` (by ``where``) is read with its EXIF orientation.

    Annotation tools differ: most show photos as viewers do (EXIF applied), some ignore EXIF; the stored
    width/height tell which one the boxes and masks refer to. Both match for a square image or a flip/180°
    orientation: then EXIF applies, as viewers show it. Neither matching raises :class:`DataError` naming
    both sizes; without an EXIF orientation this returns ``False`` and the caller's size check reports it.
    """
    if size.orientation == 1:
        return False
    if tuple(annotated) == size.shown:
        return True
    if tuple(annotated) == size.stored:
        return False
    raise DataError(_size_mismatch(size, annotated, path, where))


def _size_mismatch(size: OrientedSize, annotated: tuple[int, int], path: str | Path, where: str) -> str:
    (aw, ah), (sw, sh), (rw, rh) = annotated, size.shown, size.stored
    if size.orientation == 1:
        return f"{where} says {aw}x{ah} but {path} is {rw}x{rh}"
    return (f"{where} says {aw}x{ah} but {path} is {sw}x{sh} as viewers show it (EXIF orientation "
            f"{size.orientation}) and {rw}x{rh} as stored: annotations must use one of these sizes")


def check_annotated_size(path: str | Path, annotated: tuple[int, int], where: str) -> bool:
    """Raise :class:`DataError` unless ``annotated`` ``(w, h)`` is the image's shown or stored size.

    Returns ``True`` when the image has an EXIF orientation its annotation ignores (it is then used as
    stored); callers count those for :func:`warn_exif_ignored`.
    """
    size = oriented_size(path)
    applies = exif_applies(size, annotated, path, where)
    if size.orientation == 1 and tuple(annotated) != size.stored:
        raise DataError(_size_mismatch(size, annotated, path, where))
    return size.orientation != 1 and not applies


def warn_exif_ignored(paths: Sequence[str | Path], what: str) -> None:
    """One warning for the images of ``what`` whose annotations ignore their EXIF orientation."""
    if paths:
        warnings.warn(f"{len(paths)} image(s) of {what} have an EXIF orientation that their annotations ignore "
                      f"(annotated at the stored size): they are used as stored, not rotated, e.g. {paths[0]}",
                      stacklevel=3)


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as 8-bit RGB; :class:`DataError` (without the path) for a mode or value range it cannot take.

    16-bit values become ``v >> 8`` (Pillow reduces 16-bit RGB PNGs the same way, so grey and colour agree);
    32-bit int ``I`` must hold 0..65535 and is treated as 16-bit; float ``F`` must hold 0..1 and becomes
    ``floor(v * 255 + 0.5)``. Alpha is dropped (as torchvision's ``convert("RGB")``), palettes are looked
    up, CMYK uses Pillow's profile-free formula. See docs/images.md.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im)
        if mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"32-bit integer image (mode 'I') with values {values.min()}..{values.max()}: only "
                            "0..65535 (16-bit) is understood; convert it to 8 or 16 bits first")
        return Image.fromarray((values.astype(np.uint16) >> 8).astype(np.uint8)).convert("RGB")
    if mode == "F":
        values = np.asarray(im)
        if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise DataError(f"float image (mode 'F') with values {np.nanmin(values)}..{np.nanmax(values)}: only "
                            "finite values in 0..1 are understood; convert it to 8 or 16 bits first")
        return Image.fromarray(np.floor(values * 255 + 0.5).astype(np.uint8)).convert("RGB")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # Pillow warns for every such file when converting straight to RGB
    try:
        return im.convert("RGB")
    except ValueError as err:
        raise DataError(f"image mode {mode!r} cannot be converted to RGB ({err})") from err


def load_rgb(path: str | Path, annotated: tuple[int, int] | None = None, where: str = "") -> Image.Image:
    """Decode an image file to 8-bit RGB as viewers show it; a failure (mid-epoch, if it was not verified)
    names the file.

    ``annotated`` ``(w, h)``: the size the image's annotation (named by ``where``) gives; the EXIF orientation
    is then applied only if the annotation refers to the rotated image (:func:`exif_applies`).
    """
    try:
        with Image.open(path) as im:
            size = _sizes(im)
            rgb = to_rgb(im)
    except IMAGE_READ_ERRORS as err:  # includes to_rgb's DataError, which does not name the file
        raise DataError(f"cannot read image {path}: {err}") from err
    if size.orientation != 1 and (annotated is None or exif_applies(size, annotated, path, where)):
        rgb = rgb.transpose(EXIF_TRANSPOSE[size.orientation])
    return rgb

def verify_images(paths: Sequence[str | Path], what: str, num_threads: int = 4) -> None:
    """Decode every file in ``paths`` and raise one :class:`DataError` listing all bad ones.

    Threads are enough: PIL releases the GIL while decoding.
    """
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        problems = [(p, msg) for p, msg in zip(paths, pool.map(check_image, paths)) if msg is not None]
    if problems:
        listing = "\n".join(f"  {p}: {msg}" for p, msg in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise DataError(f"{len(problems)} unreadable image(s) in {what}:\n{listing}{more}")


def load_all_rgb(paths: Sequence[str | Path], what: str, num_threads: int = 4) -> list[Image.Image]:
    """:func:`load_rgb` every file in ``paths`` (an in-memory cache), raising :func:`verify_images`' error for
    the bad ones: decoding them all is the verification, so a cached dataset reads its files once, not twice."""

    def load(path: str | Path) -> Image.Image | None:
        try:
            return load_rgb(path)
        except DataError:
            return None

    # Threads pay off when decoding (which releases the GIL) dominates. A tiny file (the embedded digits: 32 px
    # PNGs, ~0.1 ms each) is mostly Python holding the GIL, where threads only add contention: 1,438 digits took
    # 0.15 s in turn and 0.3-0.5 s on 4 threads. So the first files are decoded in turn, and the rest go to the
    # threads only when a file took longer than THREADED_DECODE_MIN_S.
    head = list(paths[:_DECODE_PROBE])
    start = time.perf_counter()
    images = [load(p) for p in head]
    slow = (time.perf_counter() - start) / max(len(head), 1) >= THREADED_DECODE_MIN_S
    rest = paths[len(head):]
    if slow and num_threads > 1 and rest:
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            images += list(pool.map(load, rest))
    else:
        images += [load(p) for p in rest]
    bad = [p for p, im in zip(paths, images) if im is None]
    if bad:
        verify_images(bad, what, num_threads)  # names every bad file and its problem
        raise DataError(f"{len(bad)} unreadable image(s) in {what}: " + ", ".join(map(str, bad[:20])))
    return images  # type: ignore[return-value]


def should_verify(verify: bool | None, count: int) -> bool:
    """``None`` means automatic: verify unless the split is larger than :data:`AUTO_VERIFY_LIMIT`."""
    if verify is None:
        if count > AUTO_VERIFY_LIMIT:
            warnings.warn(
                f"Skipping image verification of {count} files (more than {AUTO_VERIFY_LIMIT}); "
                "set verify_images=True to check every file before training.",
                stacklevel=3,
            )
            return False
        return True
    return verify


def walk_files(folder: Path) -> Iterator[Path]:
    """Every file under ``folder``, in sub-folders too, as torchvision's ``ImageFolder`` walks a class folder
    (``os.walk(followlinks=True)``): symlinked folders are followed (each real folder once, so a link loop ends),
    hidden folders (``.ipynb_checkpoints``, ``.thumbnails``, ``.git``) are not entered.

    Not ``Path.rglob``: before Python 3.13 it does not follow symlinked folders and it enters hidden ones.
    """
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield from (Path(root, f) for f in files)


def list_image_files(folder: Path, skip: bool, recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """Image files under ``folder`` (sorted) and the non-image files found there; with ``recursive``, in its
    sub-folders too (:func:`walk_files`).

    Hidden files are ignored. A non-image file is an error unless ``skip`` (then it is
    returned in the second list so the caller can warn with a count).
    """
    entries: Iterable[Path] = walk_files(folder) if recursive else folder.iterdir()
    images, others = [], []
    for p in sorted(entries):
        if is_hidden(p) or p.is_dir():
            continue
        (images if is_image_file(p) else others).append(p)
    if others and not skip:
        listing = "\n".join(f"  {p}" for p in others[:10])
        raise DataError(
            f"{len(others)} file(s) that are not images (by extension) in {folder}:\n{listing}\n"
            "Remove them, or set on_bad='skip' to skip them with a warning."
        )
    return images, others


def resolve_image_paths(paths: str | Sequence[str]) -> list[str]:
    """Image files named by ``paths``: folders are searched recursively, files are taken as given."""
    found: list[str] = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        path = Path(p).expanduser()
        if path.is_dir():
            files, _ = list_image_files(path, skip=True, recursive=True)
            if not files:
                raise DataError(f"predict folder {path} holds no image files")
            found += [str(f) for f in files]
        elif path.is_file():
            found.append(str(path))
        else:
            raise DataError(f"predict path {path} does not exist")
    return found


def checkpoint_class_names(module: str, class_names: list[str] | None) -> list[str]:
    """The class names a predict-only DataModule needs; ``lit-vision predict --ckpt_path`` fills them."""
    if class_names is None:
        raise DataError(f"{module} needs class_names: give --ckpt_path (lit-vision then takes them from the "
                        "checkpoint) or --data.class_names")
    return [str(c) for c in class_names]


def checked_predict_paths(predict_paths: str | Sequence[str], verify: bool | None) -> list[str]:
    """The image files ``predict_paths`` names (see :func:`resolve_image_paths`), decoded up front unless
    ``verify`` says otherwise (:func:`should_verify`): what every DataModule predicts from."""
    paths = resolve_image_paths(predict_paths)
    if should_verify(verify, len(paths)):
        verify_images(paths, "predict_paths")
    return paths
