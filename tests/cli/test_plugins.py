"""A researcher's own detector, segmenter and dataset, each one file outside the package, trained through the CLI.

The files are the worked examples of docs/architecture.md (docs/examples/), so the documentation is what
these tests run. Nothing in lit_vision names them: they are found by class path, as a user's would be.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from lit_vision.cli import run_cli
from lit_vision.models.detection import DetectorArchitecture
from lit_vision.models.segmentation import SegmentationArchitecture

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
TRAINER = ["--trainer.fast_dev_run", "1", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
           "--trainer.enable_model_summary", "false"]


@pytest.fixture
def examples_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """What ``PYTHONPATH=docs/examples`` does on the command line; runs in a scratch folder."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.chdir(tmp_path)
    before = {family: dict(family.registry) for family in (DetectorArchitecture, SegmentationArchitecture)}
    yield tmp_path
    for family, registry in before.items():  # the examples register their short names: leave no trace
        family.registry.clear()
        family.registry.update(registry)


def trained_one_step(cli) -> None:  # noqa: ANN001
    assert cli.trainer.global_step == 1
    assert math.isfinite(float(cli.trainer.callback_metrics["train/loss"]))


def test_own_detector_trains_a_step_through_the_cli(examples_on_path: Path) -> None:
    cli = run_cli(["fit", "--config", str(REPO / "experiments" / "detection" / "quickstart.yaml"),
                   "--model.architecture", "my_detector.LiteYOLO", "--model.architecture.neck_channels", "32",
                   "--data.num_train", "8", "--data.num_val", "4", "--data.batch_size", "4",
                   "--data.num_workers", "0", *TRAINER])
    arch = cli.model.architecture
    assert type(arch).__module__ == "my_detector" and type(arch).__name__ == "LiteYOLO" and arch.neck_channels == 32
    assert type(cli.model.model.neck).__name__ == "TopDownNeck" and type(cli.model.model.head).__name__ == "SharedHead"
    trained_one_step(cli)
    assert "val/map" in cli.trainer.callback_metrics  # evaluated by the house's COCO evaluation, unchanged


def test_own_segmenter_trains_a_step_through_the_cli(examples_on_path: Path) -> None:
    cli = run_cli(["fit", "--config", str(REPO / "experiments" / "segmentation" / "quickstart.yaml"),
                   "--model.architecture", "my_segmenter.SemanticFPN", "--model.architecture.channels", "32",
                   "--data.num_train", "8", "--data.num_val", "4", "--data.batch_size", "4",
                   "--data.num_workers", "0", *TRAINER])
    assert type(cli.model.architecture).__name__ == "SemanticFPN" and cli.model.architecture.channels == 32
    assert type(cli.model.model.head).__name__ == "SemanticFPNHead"
    trained_one_step(cli)
    assert "val/miou" in cli.trainer.callback_metrics


def test_own_dataset_trains_a_step_through_the_cli(examples_on_path: Path) -> None:
    import my_dataset

    listing = my_dataset.write_demo_listing(examples_on_path / "csv_shapes", per_class=4)
    cli = run_cli(["fit", "--model", "ImageClassifier", "--model.backbone", "timm/test_resnet",
                   "--data", "my_dataset.CSVImageDataModule", "--data.csv_file", str(listing),
                   "--data.image_size", "32", "--data.batch_size", "4", "--data.num_workers", "0", *TRAINER])
    assert cli.model.class_names == ["circle", "square"]  # linked from the user's DataModule, never typed
    assert cli.datamodule.batch_size == 4  # the house's loader arguments, inherited through **kwargs
    assert cli.model.data_info.extra == {"train_counts": [4, 4]}  # the DataInfo it handed over at setup
    trained_one_step(cli)
