"""Checks that find bad input files before training starts.

A corrupt JPEG found in epoch 37 costs hours; the same file found in ``setup`` costs a second. These
helpers are shared by every DataModule so the messages look the same everywhere: they always name
the file and say what is wrong with it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif"}
)

# Above this many files, automatic verification is skipped (a full decode of ImageNet takes long);
# users can still force it with ``verify_images=True``.
AUTO_VERIFY_LIMIT = 20_000


OnBad = Literal["error", "skip"]  # what to do with a bad file or annotation: raise, or skip it with a counted warning


class DataError(ValueError):
    """Bad input data: the message names the offending path and the problem."""


def is_hidden(path: Path) -> bool:
    """Hidden files (``.DS_Store``, ``._foo.jpg`` from macOS) are never data."""
    return path.name.startswith(".")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def check_image(path: str | Path) -> str | None:
    """Return ``None`` if ``path`` decodes as an image, else a short description of the problem.

    JPEGs are decoded in draft mode (at 1/8 scale): the whole stream is still read, so truncated files
    are caught, at a fraction of the cost of a full decode.
    """
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
            if im.width < 1 or im.height < 1:
                return "image has zero size"
    except FileNotFoundError:
        return "file does not exist"
    except UnidentifiedImageError:
        return "not a readable image (unknown or corrupt format)"
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises OSError for truncated data
        return f"unreadable image ({err})"
    return None


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file to RGB; a failure (mid-epoch, if it was not verified) names the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from err


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


def list_image_files(folder: Path, skip: bool, recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """Image files under ``folder`` (sorted) and the non-image files found there.

    Hidden files are ignored. A non-image file is an error unless ``skip`` (then it is
    returned in the second list so the caller can warn with a count).
    """
    entries: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
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
