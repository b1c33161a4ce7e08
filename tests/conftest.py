"""Shared fixtures: tiny ImageFolder trees generated on the fly (no test reads ../shared)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Colours that make each class trivially separable, so short trainings really learn.
CLASS_COLOURS = {"cat": (220, 40, 40), "dog": (40, 200, 40), "eel": (40, 40, 220)}


def write_image(path: Path, colour: tuple[int, int, int], size: int = 40, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_tree(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """``root/<split>/<class>/<i>.png`` for every split in ``counts`` (images per class)."""
    for split, n in counts.items():
        for c, (name, colour) in enumerate(CLASS_COLOURS.items()):
            for i in range(n):
                write_image(root / split / name / f"{i:03d}.png", colour, seed=seed + 1000 * c + i)
    return root


@pytest.fixture(scope="session")
def imagefolder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes: 8 train, 4 val and 2 test images each, 40x40 RGB PNGs."""
    return make_tree(tmp_path_factory.mktemp("imagefolder"), {"train": 8, "val": 4, "test": 2})


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Sample data and W&B files go to a temporary folder, never the user's home."""
    os.environ["LIT_VISION_CACHE"] = str(tmp_path_factory.mktemp("lit_vision_cache"))
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Path]]:
    """``mktemp`` for module-scoped fixtures whose folders (checkpoints, runs) go when the module ends.

    pyproject's ``tmp_path_retention_policy = "failed"`` removes a passing test's ``tmp_path``, but folders made by
    ``tmp_path_factory`` live to the end of the session; with every module's checkpoints kept the suite once filled
    a CI disk (several GB of ResNet checkpoints), so the big ones are removed here.
    """
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
