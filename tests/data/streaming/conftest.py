"""Shards written once per session from the repository's fixtures (VOC, mini-COCO) and a generated ImageFolder."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("litdata")

from lit_vision.data.streaming import optimize_data

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
VOC = {"root": str(FIXTURES / "voc" / "VOC2012")}
MINICOCO = FIXTURES / "minicoco"
COCO = {"train_images": str(MINICOCO / "images"), "train_annotations": str(MINICOCO / "train.json"),
        "val_images": str(MINICOCO / "images"), "val_annotations": str(MINICOCO / "val.json")}


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory, imagefolder_root: Path) -> dict[str, Path]:
    """format -> shard folder; chunks small enough that every split has several (random access across chunks)."""
    out = tmp_path_factory.mktemp("shards")
    sources = {"imagefolder": {"root": str(imagefolder_root)}, "voc": VOC, "coco": COCO, "voc-seg": VOC,
               "coco-seg": COCO, "coco-masks": {**COCO, "with_masks": True}}
    folders = {}
    for name, options in sources.items():
        folders[name] = out / name
        fmt = "coco" if name == "coco-masks" else name
        optimize_data(fmt, str(folders[name]), chunk_bytes="20KB", num_workers=2, **options)
    return folders
