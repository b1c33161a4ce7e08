"""The command line reads well on error: one message and the usage line, not a traceback or a union dump.

Each case runs the console script's ``main`` in-process (Lightning is imported once for all of them) and
checks the exit code, that the message names the problem (and the close match), and that it is short.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lit_vision.cli import main
from lit_vision.data.checks import DataError

from tests.conftest import make_tree

RECIPES = Path(__file__).resolve().parents[2] / "experiments"
QUICK = str(RECIPES / "classification" / "quickstart.yaml")
DETECT = str(RECIPES / "detection" / "quickstart.yaml")


def run(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-vision", *args])
    monkeypatch.delenv("LIT_VISION_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    return int(exit_info.value.code), err


def assert_short(err: str, *expected: str, usage: bool = True) -> None:
    lines = [line for line in err.splitlines() if line.strip() and "LightningCLI's args parameter" not in line]
    assert "Traceback" not in err and "Given value" not in err and "Subtypes" not in err
    assert len(lines) <= 4, err
    for text in expected:
        assert text in err, err
    if usage:
        assert lines[0].startswith("usage: lit-vision"), err


@pytest.mark.parametrize(("args", "expected"), [
    (["fit", "--config", QUICK, "--trainer.max_epohcs", "3"],
     ["unrecognized option '--trainer.max_epohcs 3'", "Did you mean '--trainer.max_epochs'"]),
    (["fit", "--config", DETECT, "--model.architecture.neck_chanels", "64"],
     ["--model.architecture: YOLO takes no option 'neck_chanels'. Did you mean 'neck_channels'?"]),
    (["fit", "--config", QUICK, "--data.root", "/x"],  # its base's option: not "Did you mean 'root'?"
     ["DigitsDataModule takes no option 'root' (a base class's option, which DigitsDataModule sets itself)."]),
    (["fit", "--config", QUICK, "--data.batch_sise", "8"],
     ["DigitsDataModule takes no option 'batch_sise'", "Did you mean 'batch_size'"]),
    (["fit", "--config", QUICK, "--trainer.max_epochs", "abc"], ["--trainer.max_epochs: expected int, got 'abc'."]),
    (["fit", "--config", QUICK, "--model.pool", "mean"],
     ["--model.pool: expected one of 'avg', 'max', 'avgmax', got 'mean'."]),
    (["fit", "--config", QUICK, "--data", "ImageFolderDataModul"],
     ["--data: no class named 'ImageFolderDataModul'", "Did you mean 'ImageFolderDataModule'"]),
    (["fit", "--config", QUICK, "--trainer.callbacks+=EMAA"], ["no class named 'EMAA'", "Did you mean 'EMA'"]),
    (["fit", "--config", "missing.yaml"], ["--config: file does not exist:", "missing.yaml"]),
    (["fit", "--config", QUICK, "--model.backbone", "tv/resnet5"], ["Unknown backbone 'tv/resnet5'", "tv/resnet50"]),
    (["fit", "--config", DETECT, "--model.architecture", "yolov8"],
     ["unknown detector architecture 'yolov8'", "Did you mean 'yolo'"]),
    (["fit", "--model", "ImageClassifier", "--data", "ImageFolderDataModule", "--data.root", "/no/such/folder"],
     ["data root /no/such/folder does not exist"]),
])  # fmt: skip
def test_bad_arguments_print_one_clear_message(args, expected, capsys, monkeypatch, tmp_path) -> None:
    code, err = run(args, capsys, monkeypatch, tmp_path)
    assert code == 2
    assert_short(err, *expected)


def test_model_and_data_image_sizes_that_differ_are_one_message(capsys, monkeypatch, tmp_path) -> None:
    """Both are saved as hyper-parameters: Lightning stopped with a traceback on the clash."""
    code, err = run(["validate", "--config", DETECT, "--model.image_size", "160"], capsys, monkeypatch, tmp_path)
    assert code == 2
    assert_short(err, "--model.image_size 160 (the recipe's or the checkpoint's) and --data.image_size 128 differ",
                 usage=False)


def test_best_without_a_fit_in_the_process_is_one_message(capsys, monkeypatch, tmp_path) -> None:
    code, err = run(["validate", "--config", QUICK, "--ckpt_path", "best"], capsys, monkeypatch, tmp_path)
    assert code == 2
    assert_short(err, "validate --ckpt_path best: 'best' names the best checkpoint of a fit", usage=False)


def test_unknown_command_suggests_the_close_one(capsys, monkeypatch, tmp_path) -> None:
    code, err = run(["fti", "--config", QUICK], capsys, monkeypatch, tmp_path)
    assert code == 2
    assert_short(err, "unknown command 'fti'. Did you mean 'fit'?", "commands: fit, validate, test, predict, eval-coco")


def test_data_check_failure_in_setup_is_one_message_naming_the_file(capsys, monkeypatch, tmp_path) -> None:
    root = make_tree(tmp_path / "data", {"train": 2, "val": 1})
    bad = root / "val" / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    code, err = run(["fit", "--model", "ImageClassifier", "--model.backbone", "timm/test_resnet",
                     "--data", "ImageFolderDataModule", "--data.root", str(root), "--data.image_size", "32",
                     "--data.num_workers", "0", "--trainer.max_steps", "1", "--trainer.logger", "false"],
                    capsys, monkeypatch, tmp_path)
    assert code == 2
    assert_short(err, "unreadable image", str(bad), usage=False)


def test_debug_shows_the_traceback(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-vision", "fit", "--debug", "--model", "ImageClassifier", "--data",
                                      "ImageFolderDataModule", "--data.root", "/no/such/folder"])
    with pytest.raises(Exception) as info:  # noqa: PT011 - jsonargparse wraps the DataError; the cause is ours
        main()
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__ or err.__context__
    assert any(isinstance(e, DataError) for e in chain)


def test_top_level_help_lists_the_commands_without_importing_torch() -> None:
    code = ("import sys\nfrom lit_vision.cli import main\nsys.argv = ['lit-vision', '--help']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print('IMPORTED', sorted(m for m in ('torch', 'lightning', 'jsonargparse') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for command in ("fit", "validate", "test", "predict", "eval-coco"):
        assert f"    {command} " in out
    assert "IMPORTED []" in out


def test_heap_is_frozen_during_the_run_and_at_exit_not_after_main() -> None:
    """A Lightning subcommand freezes the imports' objects while it runs (full collections then skip them) and
    registers ``gc.freeze`` to run at exit (Python's shutdown collections skip the heap torch and Lightning built:
    ~1 s); ``main()`` itself, called in a test or notebook, leaves the heap collectable when it returns."""
    code = ("import atexit, gc, sys\nfrom lit_vision.cli import main\n"
            "import lit_vision.cli.lightning_cli as lc\n"
            "real = lc.run_main\n"
            "def probe(*a, **k):\n    print('FROZEN DURING', gc.get_freeze_count() > 10000, flush=True)\n"
            "    return real(*a, **k)\n"
            "lc.run_main = probe\n"
            "atexit.register(lambda: print('FROZEN AT EXIT', gc.get_freeze_count() > 0, flush=True))\n"
            "sys.argv = ['lit-vision', 'fit', '--help']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "print('FROZEN AFTER MAIN', gc.get_freeze_count() > 0, flush=True)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "FROZEN DURING True" in out and "FROZEN AFTER MAIN False" in out and "FROZEN AT EXIT True" in out
