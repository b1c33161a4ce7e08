"""ImageFolderDataModule: structure, splits, transforms and bad-input errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from lit_vision.data import DataError, ImageFolderDataModule
from lit_vision.data.checks import resolve_image_paths
from tests.conftest import CLASS_COLOURS, make_tree, write_image


def dm(root: Path, **kw) -> ImageFolderDataModule:
    return ImageFolderDataModule(root=str(root), image_size=32, batch_size=4, num_workers=0, **kw)


def test_classes_and_labels_follow_the_folders(imagefolder_root: Path) -> None:
    data = dm(imagefolder_root)
    assert data.class_names == sorted(CLASS_COLOURS) and data.num_classes == 3
    for split, n in (("train", 8), ("val", 4), ("test", 2)):
        assert len(data.split[split]) == 3 * n
        for path, label in data.split[split]:
            assert Path(path).parent.name == data.class_names[label]


def test_batches_are_dicts_with_images_labels_and_paths(imagefolder_root: Path) -> None:
    data = dm(imagefolder_root)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and len(batch["path"]) == 4
    val = next(iter(data.val_dataloader()))
    assert val["image"].shape == (4, 3, 32, 32)


def test_single_tree_split_is_stratified_seeded_and_disjoint(tmp_path: Path) -> None:
    make_tree(tmp_path, {"all": 10})
    root = tmp_path / "all"
    a, b, c = (dm(root, val_fraction=0.2, split_seed=s) for s in (0, 0, 1))
    assert a.split == b.split and a.split["val"] != c.split["val"]
    train, val = {p for p, _ in a.split["train"]}, {p for p, _ in a.split["val"]}
    assert not train & val and len(train | val) == 30
    assert sorted(lbl for _, lbl in a.split["val"]) == [0, 0, 1, 1, 2, 2]


def test_root_without_train_folder_is_a_clear_error(tmp_path: Path) -> None:
    make_tree(tmp_path, {"training": 2})
    with pytest.raises(DataError, match=r"no train/ folder"):
        dm(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        dm(tmp_path / "missing")


def test_empty_class_folder_names_it(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": 2, "val": 1})
    (tmp_path / "train" / "zebra").mkdir()
    with pytest.raises(DataError, match=r"train/zebra holds no image files"):
        dm(tmp_path)


def test_non_image_file_is_an_error_or_a_counted_skip(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": 2, "val": 1})
    bad = tmp_path / "train" / "cat" / "notes.txt"
    bad.write_text("hello")
    (tmp_path / "train" / "cat" / ".DS_Store").write_text("ignored: hidden")
    with pytest.raises(DataError, match="notes.txt"):
        dm(tmp_path)
    with pytest.warns(UserWarning, match=r"Skipped 1 non-image file"):
        data = dm(tmp_path, on_bad="skip")
    assert len(data.split["train"]) == 6


@pytest.mark.parametrize("cache_images", [False, True])  # a cache decodes every file once: that pass verifies too
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_unreadable_image_is_found_in_setup_before_training(tmp_path: Path, damage: str, cache_images: bool) -> None:
    make_tree(tmp_path, {"train": 3, "val": 1})
    victim = tmp_path / "train" / "dog" / "001.png"
    if damage == "truncated":
        write_image(victim, (1, 2, 3), size=64)
        victim.write_bytes(victim.read_bytes()[:200])
    else:
        victim.write_bytes(b"this is not a png")
    data = dm(tmp_path, cache_images=cache_images)
    with pytest.raises(DataError, match=r"(?s)1 unreadable image.*train/dog/001.png"):
        data.setup("fit")


def test_validation_class_missing_from_train_is_named(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": 2, "val": 1})
    write_image(tmp_path / "val" / "yak" / "0.png", (9, 9, 9))
    with pytest.raises(DataError, match=r"\['yak'\].*no counterpart in train/"):
        dm(tmp_path)


def test_explicit_class_names_must_match_the_folders(imagefolder_root: Path) -> None:
    with pytest.raises(DataError, match="differ from the class folders"):
        dm(imagefolder_root, class_names=["a", "b", "c"])


def test_predict_paths_accept_folders_and_files(imagefolder_root: Path, tmp_path: Path) -> None:
    single = tmp_path / "x.png"
    write_image(single, (1, 2, 3))
    data = ImageFolderDataModule(
        class_names=["cat", "dog", "eel"], image_size=32, batch_size=5, num_workers=0,
        predict_paths=[str(imagefolder_root / "test"), str(single)],
    )
    data.setup("predict")
    batches = list(data.predict_dataloader())
    paths = [p for b in batches for p in b["path"]]
    assert len(paths) == 7 and paths[-1] == str(single)
    assert all((b["label"] == -1).all() for b in batches)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataModule(class_names=["a"], predict_paths=str(tmp_path / "nope")).setup("predict")


def test_predict_defaults_to_the_validation_split(imagefolder_root: Path) -> None:
    data = dm(imagefolder_root)
    data.setup("predict")
    assert len(data.datasets["predict"]) == 12


def test_missing_test_split_falls_back_to_validation_with_a_warning(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": 2, "val": 1})
    data = dm(tmp_path)
    with pytest.warns(UserWarning, match="no test/ folder"):
        data.setup("test")
    assert data.datasets["test"].samples == data.split["val"]


def _half_bright_square(path: Path) -> None:
    img = Image.new("RGB", (32, 32))
    img.paste((255, 255, 255), (0, 0, 16, 32))
    img.save(path)


@pytest.mark.parametrize("hflip", [False, True])
def test_horizontal_flip_is_switchable(tmp_path: Path, hflip: bool) -> None:
    make_tree(tmp_path, {"train": 1, "val": 1})
    data = dm(tmp_path, hflip=hflip, scale_range=(1.0, 1.0), color_jitter=0.0)
    img_path = tmp_path / "probe.png"
    _half_bright_square(img_path)
    transform = data.train_transform()
    torch.manual_seed(0)
    flipped = 0
    for _ in range(40):
        out = transform(Image.open(img_path).convert("RGB"))
        flipped += int(out[:, :, :16].mean() < out[:, :, 16:].mean())
    assert (flipped == 0) if not hflip else (5 < flipped < 35)


def test_cached_images_give_the_same_tensors(imagefolder_root: Path) -> None:
    a, b = dm(imagefolder_root), dm(imagefolder_root, cache_images=True)
    a.setup("validate"), b.setup("validate")
    assert torch.equal(a.datasets["val"][5]["image"], b.datasets["val"][5]["image"])


def test_images_in_sub_folders_of_a_class_folder_belong_to_that_class(tmp_path: Path) -> None:
    """torchvision's ImageFolder walks each class folder: an image one level down is still its class's (it was
    silently left out), while hidden folders (notebook checkpoints, thumbnails) are no data."""
    make_tree(tmp_path, {"train": 2, "val": 1})
    write_image(tmp_path / "train" / "dog" / "2024" / "x.png", (40, 200, 40))
    write_image(tmp_path / "train" / "dog" / ".ipynb_checkpoints" / "y.png", (40, 200, 40))
    data = dm(tmp_path)
    assert len(data.split["train"]) == 7
    assert (str(tmp_path / "train" / "dog" / "2024" / "x.png"), data.class_names.index("dog")) in data.split["train"]
    (tmp_path / "train" / "dog" / "2024" / "notes.txt").write_text("a non-image file one level down is still found")
    with pytest.raises(DataError, match="notes.txt"):
        dm(tmp_path)


def test_predict_folders_skip_hidden_folders_and_follow_symlinked_ones(tmp_path: Path) -> None:
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    write_image(photos / "a.png", (1, 2, 3))
    write_image(photos / ".ipynb_checkpoints" / "a-checkpoint.png", (1, 2, 3))
    write_image(photos / ".thumbnails" / "a.png", (1, 2, 3))
    write_image(elsewhere / "b.png", (1, 2, 3))
    (photos / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(photos, target_is_directory=True)  # a link loop ends
    assert resolve_image_paths(str(photos)) == [str(photos / "a.png"), str(photos / "linked" / "b.png")]


def test_val_fraction_leaves_every_class_a_training_image(tmp_path: Path) -> None:
    """round(2 * 0.75) = 2 moved both images of every class to validation: an empty training set, silently."""
    make_tree(tmp_path, {"all": 2})
    data = dm(tmp_path / "all", val_fraction=0.75)
    assert sorted(lbl for _, lbl in data.split["train"]) == [0, 1, 2]
    assert sorted(lbl for _, lbl in data.split["val"]) == [0, 1, 2]


def test_a_single_class_folder_is_a_clear_error(tmp_path: Path) -> None:
    for split in ("train", "val"):
        write_image(tmp_path / split / "only" / "0.png", (1, 2, 3))
    with pytest.raises(DataError, match=r"one class folder \('only'\).*at least two"):
        dm(tmp_path)
