"""The YOLOv8-layout CSP-C2f backbone: shapes and strides at every scale, the published YOLOv8 model sizes when the
YOLO architecture is built on it, stage freezing, and local weight files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lit_vision.backbones import (
    IncompatibleWeightsError,
    create_backbone,
    list_backbones,
)
from lit_vision.models.detection import YOLO

# Widths of the five stages (strides 2..32) and C2f repeats of stages 1-4, from YOLOv8's scaling rules
# (64/128/256/512/1024 x width, capped at max_channels; 3/6/6/3 x depth).
LAYOUT = {
    "n": ([16, 32, 64, 128, 256], [1, 2, 2, 1]),
    "s": ([32, 64, 128, 256, 512], [1, 2, 2, 1]),
    "m": ([48, 96, 192, 384, 576], [2, 4, 4, 2]),
    "l": ([64, 128, 256, 512, 512], [3, 6, 6, 3]),
    "x": ([80, 160, 320, 640, 640], [3, 6, 6, 3]),
}
# Trainable parameters ("gradients") of the 80-class detectors as Ultralytics' model summaries print them for
# yolov8n/s/m.yaml (3,157,200 / 11,166,560 / 25,902,640 parameters, of which 16 are the fixed DFL projection conv,
# which our decoding does with a matmul instead).
PUBLISHED_TRAINABLE = {"n": 3_157_184, "s": 11_166_544, "m": 25_902_624}


def test_registry_lists_every_scale() -> None:
    assert list_backbones("lv/*") == [f"lv/csp_c2f_{s}" for s in "lmnsx"]


@pytest.mark.parametrize("scale", list(LAYOUT))
def test_shapes_and_strides_at_each_scale(scale: str) -> None:
    widths, repeats = LAYOUT[scale]
    backbone = create_backbone(f"lv/csp_c2f_{scale}")
    assert backbone.channels == widths and backbone.reductions == [2, 4, 8, 16, 32] and backbone.num_stages == 5
    assert [len(stage[1].blocks) for stage in backbone.stages[1:]] == repeats
    feats = backbone(torch.rand(2, 3, 96, 160))
    assert [tuple(f.shape) for f in feats] == [(2, c, 96 // r, 160 // r) for c, r in zip(widths, [2, 4, 8, 16, 32])]


def test_detection_indices_build_only_what_they_need() -> None:
    backbone = create_backbone("lv/csp_c2f_n", out_indices=[-3, -2, -1])
    assert backbone.channels == [64, 128, 256] and backbone.reductions == [8, 16, 32]
    shallow = create_backbone("lv/csp_c2f_n", out_indices=[0, 2])
    assert shallow.reductions == [2, 8] and len(shallow.stages) == 3
    assert [f.shape[1] for f in shallow(torch.rand(1, 3, 64, 64))] == [16, 64]


@pytest.mark.parametrize("scale", list(PUBLISHED_TRAINABLE))
def test_yolo_on_it_is_the_published_yolov8(scale: str) -> None:
    """The YOLO architecture picks the scale's own neck (widths and depth) and matches the published size."""
    backbone = create_backbone(f"lv/csp_c2f_{scale}", out_indices=[-3, -2, -1])
    model = YOLO().build(backbone, num_classes=80, image_size=640)
    assert model.neck.out_channels == backbone.neck_channels
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == PUBLISHED_TRAINABLE[scale]


def test_frozen_stages_freeze_parameters_and_batchnorm() -> None:
    backbone = create_backbone("lv/csp_c2f_n", frozen_stages=2)
    frozen = [n for n, p in backbone.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("stages.0.", "stages.1.")) for n in frozen)
    assert all(p.requires_grad for n, p in backbone.named_parameters() if n.startswith("stages.2."))
    before = backbone.stages[1][0][1].running_mean.clone()
    backbone.train()(torch.rand(2, 3, 64, 64) * 5)
    assert torch.equal(backbone.stages[1][0][1].running_mean, before)


def test_weights_from_a_local_file_and_clear_errors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_backbone("lv/csp_c2f_n")
    path = tmp_path / "csp_n.pth"
    torch.save({f"backbone.{k}": v for k, v in source.state_dict().items()}, path)  # as a detector stores it
    loaded = create_backbone("lv/csp_c2f_n", pretrained=str(path), out_indices=[-3, -2, -1])
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, source.state_dict()[k]), k
    with pytest.raises(IncompatibleWeightsError, match="csp_c2f_s"):
        create_backbone("lv/csp_c2f_s", pretrained=str(path))
    with pytest.raises(ValueError, match="no published pretrained weights"):
        create_backbone("lv/csp_c2f_n", pretrained=True)
    with pytest.raises(ValueError, match="cannot be dilated"):
        create_backbone("lv/csp_c2f_n", output_stride=16)
