"""Where the embedded sample data is written, and the write-once rename that makes it safe under DDP."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def default_cache_dir() -> Path:
    """``$LIT_VISION_CACHE`` if set, else ``$XDG_CACHE_HOME/lit_vision`` (``~/.cache/lit_vision``)."""
    if env := os.environ.get("LIT_VISION_CACHE"):
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "lit_vision"


# A temporary folder this old was left by a killed writer (a write takes seconds), not one still in progress.
STALE_SECONDS = 3600


def write_once(target: Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` into a temporary sibling folder, then rename it to ``target`` (once).

    The rename is atomic (within one directory, also on NFS, Lustre and GPFS), so concurrent processes (DDP ranks
    on one or several nodes, parallel tests) never see a half-written tree: the first rename wins, the others
    find a non-empty ``target`` and drop their own copy (the trees are deterministic, so identical). A
    ``.complete`` marker tells later calls the tree is there. Temporary folders of killed writers older than an
    hour are removed by the next successful write.
    """
    if (target / ".complete").exists():
        return target
    # (a tree renamed into place by another process meanwhile has its marker: rename is atomic)
    if target.is_dir() and not (target / ".complete").exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists but is incomplete (no .complete marker; not written by write_once?): "
                              "delete it to have it written again")
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
    _remove_stale_temporaries(target)
    return target


def _remove_stale_temporaries(target: Path) -> None:
    now = time.time()
    for old in target.parent.glob(f".{target.name}-*"):
        try:
            if old.is_dir() and now - old.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # removed by another process meanwhile
            pass
