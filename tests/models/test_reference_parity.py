"""The recipes that cite a torchvision model build *that* model: same losses in train mode, same outputs in eval.

Each test builds our model the way a user does - ``lit-vision``'s own construction path from the recipe YAML,
with ``--model.weights`` pointing at a file - and torchvision's constructor as its builder runs with pretrained
weights (``weights_backbone`` set: frozen BatchNorm and ``trainable_backbone_layers=3`` for the detectors). The
"download" is replaced by a seeded state dict, the reference's full state dict is written to a file, and both
models get it. Inputs, targets and random seeds are the same on both sides; the tolerance is float32 round-off.
Images are small (``min_size`` / ``max_size`` given to both sides) so that ResNet-50 models run on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models._api import WeightsEnum

from lit_vision.cli import run_cli
from tests.test_experiments import (
    EXPERIMENTS,
    FIXTURES,
    coco_with_every_voc_category,
    detection_overrides,
)

ROUND_OFF = {"atol": 1e-4, "rtol": 1e-4}


@pytest.fixture
def offline_imagenet(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's ``weights_backbone`` "download" answered by a seeded ResNet-50 (nothing leaves the machine)."""
    torch.manual_seed(0)
    state = torchvision.models.resnet50().state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *args, **kwargs: state)


def save(state: dict[str, torch.Tensor], path: Path) -> str:
    torch.save(state, path)
    return str(path)


def trainable(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


# ------------------------------------------------------------------------------------------------ detection
DETECTORS = [
    ("faster_rcnn_r50_fpn_coco", "fasterrcnn_resnet50_fpn", 1),
    ("retinanet_r50_fpn_coco", "retinanet_resnet50_fpn", 0),
    ("fcos_r50_fpn_coco", "fcos_resnet50_fpn", 0),
]


def detection_inputs() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(3)
    images = [torch.rand(3, 180, 240, generator=g), torch.rand(3, 200, 160, generator=g)]
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 120.0, 150.0], [100.0, 20.0, 220.0, 90.0]]),
                "labels": torch.tensor([0, 2])},
               {"boxes": torch.tensor([[10.0, 10.0, 90.0, 140.0]]), "labels": torch.tensor([1])}]
    return images, targets


@pytest.mark.parametrize(("recipe", "builder", "offset"), DETECTORS, ids=[d[0] for d in DETECTORS])
def test_detection_recipe_is_torchvisions_model(recipe: str, builder: str, offset: int, offline_imagenet: None,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = EXPERIMENTS / "detection" / f"{recipe}.yaml"
    num_classes = len(json.loads((FIXTURES / "minicoco" / "train.json").read_text())["categories"])
    sizes = {"min_size": 192, "max_size": 256}
    torch.manual_seed(1)
    reference = getattr(torchvision.models.detection, builder)(
        weights=None, weights_backbone="IMAGENET1K_V1", num_classes=num_classes + offset, **sizes)
    state = reference.state_dict()
    if offset == 0:  # the focal-loss prior keeps every score under the threshold: give the eval check boxes to compare
        state["head.classification_head.cls_logits.bias"] = torch.zeros_like(state["head.classification_head.cls_logits.bias"])
        reference.load_state_dict(state)
    weights = save(state, tmp_path / f"{builder}.pth")

    cli = run_cli(["--config", str(path), *detection_overrides(path), "--model.weights", weights,
                   "--model.architecture.min_size", "192", "--model.architecture.max_size", "256"], run=False)
    ours = cli.model.model
    assert cli.model.num_classes == num_classes
    report = cli.model.weights_report
    assert report.reading == "torchvision model" and not report.reinitialised and not report.ignored
    assert len(report.loaded) == len(state)
    # Same trainable set: torchvision freezes the stem and layer1 (trainable_backbone_layers=3).
    assert {ours.reference_key(n) for n in trainable(reference)} == trainable(ours)

    images, targets = detection_inputs()
    reference.eval(), ours.eval()
    with torch.no_grad():
        expected, got = reference(images), ours(images)
    assert sum(len(e["boxes"]) for e in expected) > 0
    for e, g in zip(expected, got):
        torch.testing.assert_close(g["boxes"], e["boxes"], **ROUND_OFF)
        torch.testing.assert_close(g["scores"], e["scores"], **ROUND_OFF)
        assert torch.equal(g["labels"] + offset, e["labels"])

    reference.train(), ours.train()
    torch.manual_seed(7)  # RPN / RoI sampling draws random numbers: the same ones on both sides
    expected = reference(images, [dict(t, labels=t["labels"] + offset) for t in targets])
    torch.manual_seed(7)
    got = ours(images, targets)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], **ROUND_OFF)


# ------------------------------------------------------------------------------------------------ segmentation
SEGMENTERS = [("deeplabv3_r50_coco_voc", "deeplabv3_resnet50"), ("fcn_r50_coco_voc", "fcn_resnet50")]


@pytest.mark.parametrize(("recipe", "builder"), SEGMENTERS, ids=[s[0] for s in SEGMENTERS])
def test_segmentation_recipe_is_torchvisions_model(recipe: str, builder: str, offline_imagenet: None,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(1)
    reference = getattr(torchvision.models.segmentation, builder)(
        weights=None, weights_backbone="IMAGENET1K_V1", num_classes=21, aux_loss=True)
    weights = save(reference.state_dict(), tmp_path / f"{builder}.pth")
    train, val = coco_with_every_voc_category(tmp_path)
    images = str(FIXTURES / "minicoco" / "images")
    cli = run_cli(["--config", str(EXPERIMENTS / "segmentation" / f"{recipe}.yaml"), "--data.num_workers", "0",
                   "--model.pretrained", "false", "--model.weights", weights,
                   "--data.train_images", images, "--data.train_annotations", str(train),
                   "--data.val_images", images, "--data.val_annotations", str(val)], run=False)
    task = cli.model
    report = task.weights_report
    assert report.reading == "torchvision model" and not report.reinitialised and not report.ignored

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 97, 113, generator=g)
    mask = torch.randint(0, 21, (2, 97, 113), generator=g)
    mask[:, :5] = 255  # ignored pixels, as VOC's borders
    reference.eval(), task.eval()
    with torch.no_grad():
        expected, got = reference(x), task.model(x)
    for key in ("out", "aux"):
        torch.testing.assert_close(got[key], expected[key], **ROUND_OFF)

    reference.train(), task.train()
    torch.manual_seed(7)  # dropout in both heads, drawn in the same order (head, then auxiliary head)
    out = reference(x)
    # torchvision's references/segmentation/train.py criterion
    expected_loss = F.cross_entropy(out["out"], mask, ignore_index=255) + 0.5 * F.cross_entropy(
        out["aux"], mask, ignore_index=255)
    torch.manual_seed(7)
    got_loss = task.compute_loss(task.model(x), mask)["loss"]
    torch.testing.assert_close(got_loss, expected_loss, **ROUND_OFF)


# ------------------------------------------------------------------------------------------------ classification
def test_resnet50_recipe_is_torchvisions_resnet50(imagefolder_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = EXPERIMENTS / "classification" / "resnet50_imagefolder.yaml"
    num_classes = len([p for p in (imagefolder_root / "train").iterdir() if p.is_dir()])
    torch.manual_seed(1)
    reference = torchvision.models.resnet50(num_classes=num_classes)
    weights = save(reference.state_dict(), tmp_path / "resnet50.pth")
    cli = run_cli(["--config", str(recipe), "--data.root", str(imagefolder_root), "--data.num_workers", "0",
                   "--model.weights", weights], run=False)
    task = cli.model
    assert task.num_classes == num_classes and len(task.weights_report.loaded) == len(reference.state_dict())

    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    y = torch.arange(4) % num_classes
    reference.eval(), task.eval()
    with torch.no_grad():
        torch.testing.assert_close(task(x), reference(x), **ROUND_OFF)
    reference.train(), task.train()  # BatchNorm on batch statistics, on both sides
    expected = F.cross_entropy(reference(x), y, label_smoothing=0.1)  # the recipe's objective
    torch.testing.assert_close(task.compute_loss(task(x), y), expected, **ROUND_OFF)
