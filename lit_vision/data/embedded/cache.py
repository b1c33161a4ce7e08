"""Where the embedded sample data is written, and the write-once rename that makes it safe under DDP."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def default_cache_dir() -> Path:
    """``$LIT_VISION_CACHE`` if set, else ``$XDG_CACHE_HOME/lit_vision`` (``~/.cache/lit_vision``)."""
    if env := os.environ.get("LIT_VISION_CACHE"):
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "lit_vision"


def write_once(target: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` into a temporary sibling folder, then rename it to ``target`` (once).

    The rename is atomic, so concurrent processes (DDP ranks, parallel tests) never see a half-written
    tree; a ``.complete`` marker tells later calls the tree is there.
    """
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        (tmp / ".complete").touch()
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its tree is identical
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
