"""``lit-vision browse-data``: the quickstart recipes as they are, files written, statistics equal to counts made
here from the annotation files, broken data refused with one message naming the file."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_vision.cli import main
from lit_vision.data import shapes_paths, write_shapes
from tests.conftest import make_tree

RECIPES = Path(__file__).resolve().parents[2] / "experiments"
SHAPES = ["--data.num_train", "12", "--data.num_val", "4"]  # tests/data/test_statistics.py uses the same scenes


def run(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
        ) -> tuple[int, str, str]:
    """The console script in-process, from ``tmp_path``: exit code, stdout, stderr."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-vision", "browse-data", *args])
    monkeypatch.delenv("LIT_VISION_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return int(exit_info.value.code), captured.out, captured.err


def written(out: Path, *names: str) -> dict:
    for name in ("samples.png", "statistics.txt", "statistics.json", "class_counts.png", *names):
        assert (out / name).stat().st_size > 0, name
    return json.loads((out / "statistics.json").read_text())


def test_digits_recipe_writes_grid_and_per_class_counts_of_the_folders(capsys, monkeypatch, tmp_path) -> None:
    # A backbone that does not exist: browse-data never builds the model.
    code, out, err = run(["--config", str(RECIPES / "classification" / "quickstart.yaml"), "--num_images", "4",
                          "--model.init_args.backbone", "tv/no_such_net", "--data.cache_images", "false"],
                         capsys, monkeypatch, tmp_path)
    assert code == 0, err
    stats = written(tmp_path / "runs" / "browse" / "DigitsDataModule")
    root = Path(stats["source"])
    assert stats["images_per_class"] == {c: len(list((root / "train" / c).glob("*.png"))) for c in map(str, range(10))}
    assert len(stats["augmented_samples"]["paths"]) == 4
    assert all(Path(p).parent.parent == root / "train" for p in stats["augmented_samples"]["paths"])
    with Image.open(tmp_path / "runs" / "browse" / "DigitsDataModule" / "samples.png") as im:
        assert min(im.size) >= 2 * 96  # a 2x2 grid of digits upscaled to at least 96 px
    assert "DigitsDataModule: train split" in out and "samples.png" in out


def test_detection_shapes_statistics_equal_the_coco_file(capsys, monkeypatch, tmp_path) -> None:
    code, out, err = run(["--config", str(RECIPES / "detection" / "quickstart.yaml"), *SHAPES, "--num_images", "4",
                          "--out", "browse"], capsys, monkeypatch, tmp_path)
    assert code == 0, err
    stats = written(tmp_path / "browse", "box_sizes.png", "box_aspect.png")
    ref = json.loads(shapes_paths(write_shapes(None, num_train=12, num_val=4))["coco_train_json"].read_text())
    names = {c["id"]: c["name"] for c in ref["categories"]}
    assert stats["instances_per_class"] == dict(Counter(names[a["category_id"]] for a in ref["annotations"]))
    assert stats["num_images"] == len(ref["images"])
    with_boxes = {a["image_id"] for a in ref["annotations"]}
    assert stats["empty_images"] == sum(img["id"] not in with_boxes for img in ref["images"])
    samples = stats["augmented_samples"]
    assert samples["boxes_outside_image"] == samples["degenerate_boxes"] == 0
    assert "outside the image: 0" in (tmp_path / "browse" / "statistics.txt").read_text()


def test_segmentation_shapes_pixel_counts_equal_the_mask_pngs(capsys, monkeypatch, tmp_path) -> None:
    code, out, err = run(["--config", str(RECIPES / "segmentation" / "quickstart.yaml"), *SHAPES, "--num_images", "2",
                          "--split", "val", "--out", "browse"], capsys, monkeypatch, tmp_path)
    assert code == 0, err
    stats = written(tmp_path / "browse", "mask_classes.png")
    voc = shapes_paths(write_shapes(None, num_train=12, num_val=4))["voc_dir"]
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    pixels = sum(np.bincount(np.array(Image.open(voc / "SegmentationClass" / f"{i}.png")).ravel(), minlength=256)
                 for i in ids)
    assert stats["split"] == "val" and stats["num_images"] == len(ids) == 4
    assert list(stats["pixels_per_class"].values()) == pixels[:4].tolist()
    assert stats["ignore_pixels"] == pixels[255]


def test_a_corrupt_image_is_refused_naming_the_file(capsys, monkeypatch, tmp_path) -> None:
    root = make_tree(tmp_path / "data", {"train": 2, "val": 1})
    (root / "train" / "dog" / "001.png").write_bytes(b"this is not a png")
    code, out, err = run(["--data", "ImageFolderDataModule", "--data.root", str(root), "--data.image_size", "32"],
                         capsys, monkeypatch, tmp_path)
    assert code == 2
    assert "lit-vision browse-data: error:" in err and "train/dog/001.png" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_a_bad_coco_box_is_refused_naming_the_json(capsys, monkeypatch, tmp_path) -> None:
    paths = shapes_paths(write_shapes(None, num_train=12, num_val=4))
    data = json.loads(paths["coco_train_json"].read_text())
    data["annotations"][0]["bbox"][2] = 0  # zero width
    bad = tmp_path / "instances_train.json"
    bad.write_text(json.dumps(data))
    code, out, err = run(["--data", "COCODetectionDataModule", "--data.train_images", str(paths["coco_train_images"]),
                          "--data.train_annotations", str(bad), "--data.val_images", str(paths["coco_val_images"]),
                          "--data.val_annotations", str(paths["coco_val_json"])], capsys, monkeypatch, tmp_path)
    assert code == 2
    assert str(bad) in err and f"annotation id {data['annotations'][0]['id']}" in err and "Traceback" not in err


def test_a_typo_reads_like_fit_s(capsys, monkeypatch, tmp_path) -> None:
    code, out, err = run(["--config", str(RECIPES / "classification" / "quickstart.yaml"), "--num_imags", "3"],
                         capsys, monkeypatch, tmp_path)
    assert code == 2
    assert err.startswith("usage: lit-vision browse-data") and "Did you mean '--num_images'" in err
