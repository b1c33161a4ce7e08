"""``--ckpt_path`` checked before any work (lit_vision.cli.checkpoints): foreign files, another task, another
network or class list fail in one line (exit 2); inference-time settings given with a checkpoint take effect.

Two tiny checkpoints are trained in process (one batch each): a classifier on the session's ImageFolder tree and
an FCOS detector on the embedded shapes. Error cases run the console script's ``run_main`` in process.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lit_vision.cli import run_cli
from lit_vision.cli.checkpoints import (
    CheckpointError,
    CheckpointInfo,
    describe,
    reconcile,
)
from lit_vision.cli.lightning_cli import run_main
from lit_vision.tasks import ImageClassifier, ObjectDetector
from tests.conftest import write_image

TRAINER = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_model_summary", "false",
           "--trainer.enable_progress_bar", "false"]
ONE_BATCH = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]
CLASSIFIER = ["--model", "ImageClassifier", "--model.backbone", "tv/resnet18"]
DETECTOR = ["--model", "ObjectDetector", "--model.architecture", "FCOS", "--model.architecture.fpn_channels", "32",
            "--model.backbone", "tv/resnet18"]


def folder_data(root: Path) -> list[str]:
    return ["--data", "ImageFolderDataModule", "--data.root", str(root), "--data.image_size", "32",
            "--data.batch_size", "4", "--data.num_workers", "0"]


def shapes_data(cache: Path) -> list[str]:
    return ["--data", "ShapesDetectionDataModule", "--data.cache_dir", str(cache), "--data.num_train", "4",
            "--data.num_val", "2", "--data.scene_size", "64", "--data.image_size", "64", "--data.batch_size", "2",
            "--data.num_workers", "0"]


def fit(args: list[str], cwd: Path) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        mp.setattr(sys, "argv", ["pytest"])  # LightningCLI warns when given args while sys.argv has some
        cli = run_cli(["fit", *args, *TRAINER, *ONE_BATCH, "--seed_everything", "0"])
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    return best if best.is_absolute() else cwd / best


@pytest.fixture(scope="module")
def classifier_ckpt(imagefolder_root: Path, module_tmp: Callable[[str], Path]) -> Path:
    """cat/dog/eel, trained with ``top_k=2``."""
    return fit([*CLASSIFIER, "--model.top_k", "2", *folder_data(imagefolder_root)], module_tmp("clf"))


@pytest.fixture(scope="module")
def detector(module_tmp: Callable[[str], Path]) -> tuple[Path, Path]:
    """(checkpoint, shapes cache): trained with ``score_thresh=0.99`` (an untrained detector then finds nothing)."""
    cache = module_tmp("ckpt_shapes")
    ckpt = fit([*DETECTOR, "--model.architecture.score_thresh", "0.99", *shapes_data(cache)],
               module_tmp("det"))
    return ckpt, cache


def main(argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[int, str]:
    """``lit-vision <argv>`` in process: (exit code, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-vision", *argv])
    code = run_main(argv)
    return code, capsys.readouterr().err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("lit-vision "), err
    return lines[0]


# ---------------------------------------------------------------------------------------------- not ours
def test_checkpoint_of_another_task_fails_naming_both_tasks(classifier_ckpt: Path, capsys, monkeypatch,
                                                            tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_image(photos / "a.png", (200, 30, 30))
    code, err = main(["predict", "--model", "ObjectDetector", "--data", "DetectionImagesDataModule",
                      "--data.predict_paths", str(photos), *TRAINER, "--ckpt_path", str(classifier_ckpt)],
                     capsys, monkeypatch, tmp_path)
    line = one_line(err)
    assert code == 2
    assert f"{classifier_ckpt} is a checkpoint of lit_vision.tasks.ImageClassifier" in line
    assert "asks for lit_vision.tasks.ObjectDetector" in line and "--model ImageClassifier" in line
    assert not list(tmp_path.rglob("predictions.jsonl"))


def test_detector_checkpoint_given_to_classifier_validate(detector: tuple[Path, Path], imagefolder_root: Path,
                                                          capsys, monkeypatch, tmp_path: Path) -> None:
    ckpt, _ = detector
    code, err = main(["validate", *CLASSIFIER, *folder_data(imagefolder_root), *TRAINER, "--ckpt_path", str(ckpt)],
                     capsys, monkeypatch, tmp_path)
    assert code == 2 and "is a checkpoint of lit_vision.tasks.ObjectDetector" in one_line(err)


def _random(path: Path, real: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _truncated(path: Path, real: Path) -> None:
    data = real.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path: Path, real: Path) -> None:
    path.write_bytes(b"")


def _bare_state_dict(path: Path, real: Path) -> None:
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)


def _other_lightning_module(path: Path, real: Path) -> None:
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "mypkg.MyModule"}}, path)


@pytest.mark.parametrize("make", [_random, _truncated, _empty, _bare_state_dict, _other_lightning_module])
def test_a_file_that_is_not_a_lit_vision_checkpoint_fails_with_its_path(make, classifier_ckpt: Path,  # noqa: ANN001
                                                                         imagefolder_root: Path, capsys, monkeypatch,
                                                                         tmp_path: Path) -> None:
    bad = tmp_path / f"{make.__name__.strip('_')}.ckpt"
    make(bad, classifier_ckpt)
    code, err = main(["validate", *CLASSIFIER, *folder_data(imagefolder_root), *TRAINER, "--ckpt_path", str(bad)],
                     capsys, monkeypatch, tmp_path)
    assert code == 2 and f"{bad}: not a lit_vision checkpoint (" in one_line(err)


def test_a_missing_checkpoint_is_named(imagefolder_root: Path, capsys, monkeypatch, tmp_path: Path) -> None:
    code, err = main(["test", *CLASSIFIER, *folder_data(imagefolder_root), *TRAINER, "--ckpt_path", "nope.ckpt"],
                     capsys, monkeypatch, tmp_path)
    assert code == 2 and "checkpoint nope.ckpt does not exist" in one_line(err)


def test_debug_shows_the_traceback(imagefolder_root: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["test", *CLASSIFIER, *folder_data(imagefolder_root), *TRAINER, "--ckpt_path", "nope.ckpt"]
    monkeypatch.setattr(sys, "argv", ["lit-vision", *argv])
    with pytest.raises(CheckpointError, match="does not exist"):
        run_main(argv, debug=True)


# ---------------------------------------------------------------------------------------------- settings
def test_checkpoints_say_what_they_are(classifier_ckpt: Path) -> None:
    ckpt = torch.load(classifier_ckpt, map_location="cpu", weights_only=False, mmap=True)
    assert ckpt["lit_vision"]["task"] == "lit_vision.tasks.classification.ImageClassifier"
    assert ckpt["lit_vision"]["version"]


def test_given_top_k_wins_over_the_checkpoint(classifier_ckpt: Path, imagefolder_root: Path, monkeypatch,
                                             tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    predict = ["predict", "--model", "ImageClassifier", "--data", "ImageFolderDataModule", "--data.predict_paths",
               str(imagefolder_root / "test"), "--data.image_size", "32", "--data.num_workers", "0", *TRAINER,
               "--ckpt_path", str(classifier_ckpt)]
    for extra, k in (([], 2), (["--model.top_k", "1"], 1)):  # the checkpoint's 2, unless given
        cli = run_cli([*predict, *extra])
        assert cli.model.top_k == k
        rows = [json.loads(line) for line in (Path(cli.trainer.log_dir) / "predictions.jsonl").read_text().splitlines()]
        assert rows and all(len(row["top_k"]) == k for row in rows)


def test_given_score_thresh_wins_over_the_checkpoint(detector: tuple[Path, Path], monkeypatch, tmp_path: Path) -> None:
    ckpt, cache = detector
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    base = ["predict", "--model", "ObjectDetector", *shapes_data(cache), *TRAINER, "--ckpt_path", str(ckpt)]
    stored = run_cli(base)
    assert stored.model.architecture.score_thresh == 0.99 and stored.model.architecture.fpn_channels == 32
    # Without --model.architecture FCOS: the option alone, on the checkpoint's architecture.
    given = run_cli([*base, "--model.architecture.score_thresh", "0.001"])
    assert type(given.model.architecture).__name__ == "FCOS"
    assert given.model.architecture.score_thresh == 0.001 and given.model.model.model.score_thresh == 0.001
    assert given.model.architecture.fpn_channels == 32  # the rest is the checkpoint's

    def boxes(cli) -> int:  # noqa: ANN001
        path = Path(cli.trainer.log_dir) / "predictions.jsonl"
        return sum(len(json.loads(line)["boxes"]) for line in path.read_text().splitlines())

    assert boxes(given) > boxes(stored)


def test_fit_resumes_with_the_recipes_training_settings(classifier_ckpt: Path, imagefolder_root: Path,
                                                        monkeypatch, tmp_path: Path) -> None:
    """Resuming: the network must be the checkpoint's, the training settings are the recipe's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    cli = run_cli(["fit", *CLASSIFIER, "--model.label_smoothing", "0.1", *folder_data(imagefolder_root), *TRAINER,
                   *ONE_BATCH, "--trainer.max_epochs", "2", "--ckpt_path", str(classifier_ckpt)])
    assert cli.model.label_smoothing == 0.1 and cli.model.top_k == 2  # given; the checkpoint's
    assert cli.trainer.current_epoch == 2 and cli.trainer.global_step == 2  # epoch 0 restored, epoch 1 trained


# ---------------------------------------------------------------------------------------------- conflicts
@pytest.mark.parametrize("command", ["validate", "predict", "fit"])
def test_another_backbone_fails_naming_the_option_and_both_values(command: str, classifier_ckpt: Path,
                                                                   imagefolder_root: Path, capsys, monkeypatch,
                                                                   tmp_path: Path) -> None:
    code, err = main([command, "--model", "ImageClassifier", "--model.backbone", "tv/resnet34",
                      *folder_data(imagefolder_root), *TRAINER, "--ckpt_path", str(classifier_ckpt)],
                     capsys, monkeypatch, tmp_path)
    line = one_line(err)
    assert code == 2 and "trained with another network" in line
    assert "--model.backbone: checkpoint 'tv/resnet18', command 'tv/resnet34'" in line
    assert not (tmp_path / "runs").exists()


def test_another_architecture_or_its_options_fail(detector: tuple[Path, Path], capsys, monkeypatch,
                                                  tmp_path: Path) -> None:
    ckpt, cache = detector
    base = ["validate", "--model", "ObjectDetector", *shapes_data(cache), *TRAINER, "--ckpt_path", str(ckpt)]
    code, err = main([*base, "--model.architecture", "retinanet"], capsys, monkeypatch, tmp_path)
    assert code == 2 and "--model.architecture: checkpoint FCOS, command RetinaNet" in one_line(err)
    code, err = main([*base, "--model.architecture", "FCOS", "--model.architecture.fpn_channels", "64"],
                     capsys, monkeypatch, tmp_path)
    assert code == 2 and "--model.architecture.fpn_channels: checkpoint 32, command 64" in one_line(err)


def test_another_class_list_fails(classifier_ckpt: Path, capsys, monkeypatch, tmp_path: Path) -> None:
    """Three classes under other names would load without complaint and mislabel every prediction."""
    root = tmp_path / "other"
    for i, name in enumerate(("ant", "bee", "cow")):
        for split in ("train", "val"):
            write_image(root / split / name / "0.png", (60 * i, 100, 100))
    code, err = main(["validate", *CLASSIFIER, *folder_data(root), *TRAINER, "--ckpt_path", str(classifier_ckpt)],
                     capsys, monkeypatch, tmp_path)
    line = one_line(err)
    assert code == 2 and "trained for 3 classes [cat, dog, eel], but the data has 3 classes [ant, bee, cow]" in line


# ---------------------------------------------------------------------------------------------- the rules, in unit
HPARAMS = {"backbone": "tv/resnet18", "num_classes": 2, "class_names": ["a", "b"], "top_k": 2,
           "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.001, "weight_decay": 0.01}}}


def info(task: str = "lit_vision.tasks.ImageClassifier", **hparams) -> CheckpointInfo:  # noqa: ANN003
    return CheckpointInfo("x.ckpt", task, {**HPARAMS, **hparams})


class MyClassifier(ImageClassifier):
    """A researcher's subclass (e.g. another predict_step): it may load the base task's checkpoint."""

    inference_args = ImageClassifier.inference_args | {"temperature"}


def test_training_settings_given_win_and_the_rest_is_the_checkpoints() -> None:
    given = {"class_path": "lit_vision.tasks.ImageClassifier",
             "init_args": {"optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.1}},
                           "label_smoothing": 0.1, "backbone": "tv/resnet18"}}
    model = reconcile(info(), given)
    assert model["class_path"] == "lit_vision.tasks.ImageClassifier"
    kwargs = model["dict_kwargs"]
    assert kwargs["optimizer"] == {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.1, "weight_decay": 0.01}}
    assert kwargs["label_smoothing"] == 0.1 and kwargs["top_k"] == 2 and kwargs["class_names"] == ["a", "b"]
    other = reconcile(info(), {"class_path": "lit_vision.tasks.ImageClassifier",
                               "init_args": {"optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 1}}}})
    assert other["dict_kwargs"]["optimizer"] == {"class_path": "torch.optim.SGD", "init_args": {"lr": 1}}


def test_a_subclass_of_the_checkpoints_task_is_used() -> None:
    path = f"{__name__}.MyClassifier"
    assert reconcile(info(), {"class_path": path})["class_path"] == path
    assert reconcile(info(task=path), {"class_path": "lit_vision.tasks.ImageClassifier"})["class_path"] == path
    assert "temperature" in MyClassifier.inference_args and "top_k" in MyClassifier.inference_args


def test_architecture_short_names_and_stored_defaults() -> None:
    stored = info("lit_vision.tasks.ObjectDetector", architecture="fcos")  # trained as --model.architecture fcos
    task = "lit_vision.tasks.ObjectDetector"
    merged = reconcile(stored, {"class_path": task, "init_args": {"architecture": {
        "class_path": "lit_vision.models.detection.FCOS", "init_args": {"score_thresh": 0.3}}}})["dict_kwargs"]
    assert merged["architecture"]["init_args"] == {"score_thresh": 0.3}
    assert reconcile(stored, {"class_path": task, "init_args": {"architecture": "fcos"}})["dict_kwargs"][
        "architecture"] == "fcos"
    with pytest.raises(CheckpointError, match="architecture.fpn_channels: checkpoint 256, command 64"):
        reconcile(stored, {"class_path": task, "init_args": {"architecture": {
            "class_path": "lit_vision.models.detection.FCOS", "init_args": {"fpn_channels": 64}}}})
    assert "architecture.score_thresh" in ObjectDetector.inference_args


def test_older_checkpoints_without_the_marker_are_accepted() -> None:
    ckpt = {"state_dict": {}, "hyper_parameters": {"_class_path": "lit_vision.tasks.ImageClassifier", **HPARAMS}}
    assert describe("old.ckpt", ckpt).task == "lit_vision.tasks.ImageClassifier"
    with pytest.raises(CheckpointError, match=r"old.ckpt: not a lit_vision checkpoint \(written by torch.nn.Linear\)"):
        describe("old.ckpt", {"state_dict": {}, "hyper_parameters": {"_class_path": "torch.nn.Linear"}})


def test_initial_weights_are_not_read_again_with_a_checkpoint() -> None:
    """A checkpoint replaces every tensor: its ``weights`` file (gone on the predicting machine) and ``pretrained``
    download are switched off, whatever the command gives."""
    stored = info(pretrained=True, weights="/gone/fasterrcnn_coco.pth")
    merged = reconcile(stored, {"class_path": "lit_vision.tasks.ImageClassifier",
                                "init_args": {"weights": "/elsewhere.pth"}})["dict_kwargs"]
    assert merged["pretrained"] is False and merged["weights"] is None
    assert merged["top_k"] == 2  # the rest is still the checkpoint's
