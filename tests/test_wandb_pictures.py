"""A real W&B offline run of each quickstart, cut short, read back from its files: pictures, tables, charts, config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.wandb_offline import expand_images, isolate_wandb, media_of, read_offline_run

REPO = Path(__file__).resolve().parents[1]
QUICKSTARTS = {
    "classification": ("experiments/classification/quickstart.yaml", ["--trainer.limit_train_batches", "3"]),
    "detection": ("experiments/detection/quickstart.yaml",
                  ["--trainer.limit_train_batches", "12", "--data.num_workers", "0"]),
    "segmentation": ("experiments/segmentation/quickstart.yaml",
                     ["--trainer.limit_train_batches", "3", "--data.num_train", "24", "--data.num_workers", "0"]),
}


def _run(task: str, save_dir: Path):
    import wandb

    from lit_vision.cli import run_cli

    recipe, extra = QUICKSTARTS[task]
    cli = run_cli(["fit", "--config", str(REPO / recipe), "--trainer.logger", "WandB",
                   "--trainer.logger.save_dir", str(save_dir), "--trainer.logger.project", "pictures-test",
                   "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "3", "--trainer.callbacks", "[]", *extra])
    wandb.finish()
    return cli, read_offline_run(save_dir)


def _chart_table(run, key: str) -> dict:
    """A W&B custom chart (wandb.plot_table) is logged as its data table under ``<key>_table``."""
    [media] = media_of(run.history, f"{key}_table")
    return run.table(media)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(QUICKSTARTS))
def test_quickstart_logs_pictures_tables_and_config(task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_dir = isolate_wandb(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    cli, run = _run(task, save_dir)
    names = list(cli.model.class_names)
    assert "precision" in run.config["trainer"] and run.config["trainer"]["max_epochs"] == 1
    assert run.config["lit_vision"]["in_effect"]["precision"] == "32-true"  # what the recipe's default resolved to
    assert run.config["model"]["class_path"].startswith("lit_vision.tasks.")

    [panel] = media_of(run.history, "val/pictures")
    images = expand_images(panel)
    assert images and all(run.file(i["path"]).is_file() for i in images)
    assert media_of(run.history, "val/worst")

    table = run.table(media_of(run.history, "val/per_class")[-1])
    assert [row[0] for row in table["data"]] == names

    if task == "classification":
        assert all(i["caption"].split("true: ")[1].split(" |")[0] in names for i in images)
        assert table["columns"] == ["class", "images", "accuracy", "precision"]
    if task == "detection":
        labelled = [run.boxes(i) for i in images]
        for groups in labelled:
            assert set(groups) == {"predictions", "ground_truth"}
            for group in groups.values():
                assert {int(k): v for k, v in group["class_labels"].items()} == dict(enumerate(names))
        truth = [b for g in labelled for b in g["ground_truth"]["box_data"]]
        predicted = [b for g in labelled for b in g["predictions"]["box_data"]]
        assert truth and all(b["box_caption"] in names for b in truth)
        assert predicted and all(0.05 <= b["scores"]["score"] <= 1 for b in predicted)
        assert table["columns"] == ["class", "instances", "ap", "ap50", "ap75"]
        pr = _chart_table(run, "val/pr_curves")
        assert {row[pr["columns"].index("lineKey")] for row in pr["data"]} <= set(names)
    if task == "segmentation":
        for image in images:
            assert set(image["masks"]) == {"prediction", "ground_truth"}
            for layer in image["masks"].values():
                assert run.file(layer["path"]).is_file()
        assert table["columns"] == ["class", "pixels", "iou", "accuracy"]
    if task in ("classification", "segmentation"):
        cm = _chart_table(run, "val/confusion_matrix")
        assert cm["columns"] == ["Actual", "Predicted", "nPredictions"] and len(cm["data"]) == len(names) ** 2
        counts = {(a, p): n for a, p, n in cm["data"]}
        assert sum(counts.values()) == int(cli.model.eval_reports["val"].confusion.sum())
