"""Every recipe under experiments/streaming/ instantiates on shards written from the fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_vision.cli import run_cli

RECIPES = sorted((Path(__file__).resolve().parents[3] / "experiments" / "streaming").glob("*.yaml"))
FORMAT = {"StreamingImageFolderDataModule": "imagefolder", "StreamingDetectionDataModule": "coco",
          "StreamingSegmentationDataModule": "voc-seg"}


def test_one_streaming_recipe_per_task() -> None:
    texts = [r.read_text() for r in RECIPES]
    assert all(any(name in t for t in texts) for name in FORMAT)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_streaming_recipe_instantiates(recipe: Path, shards: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = recipe.read_text()
    data = next(name for name in FORMAT if name in text)
    args = ["--config", str(recipe), "--data.input_dir", str(shards[FORMAT[data]]), "--data.num_workers", "0"]
    if "pretrained: true" in text:
        args += ["--model.pretrained", "false"]
    cli = run_cli(args, run=False)
    assert type(cli.datamodule).__name__ == data and cli.datamodule.sampler == "litdata"
    assert cli.model.class_names == cli.datamodule.class_names  # linked from the shards' index


@pytest.mark.parametrize("name", sorted(FORMAT))
def test_streaming_datamodules_expose_their_and_the_loader_arguments(name: str) -> None:
    """jsonargparse follows ``**kwargs`` to the file-based DataModule and SplitDataModule: one typed option each."""
    from jsonargparse import ArgumentParser

    from lit_vision import data

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(getattr(data, name), "data")
    options = {a.dest for a in parser._actions}
    for option in ("input_dir", "sampler", "cache_dir", "batch_size", "num_workers", "image_size"):
        assert f"data.{option}" in options, option
