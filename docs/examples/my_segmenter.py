"""A segmentation decoder of your own, defined outside lit_vision and trained through ``lit-vision``.

``SemanticFPN`` is the semantic branch of Panoptic FPN (Kirillov et al., 2019), simplified: project the
deepest ``num_levels`` backbone maps to one width, resize them to the finest of those maps, add them up,
and classify every pixel with a 3x3 conv and a 1x1 conv.

How it plugs in (see docs/architecture.md, "A detector and a segmenter of your own"):

* ``SemanticFPN`` subclasses :class:`~lit_vision.models.segmentation.SegmentationArchitecture`; its typed
  constructor arguments become ``--model.architecture.<option>`` flags and YAML keys, and ``name``
  registers it as a choice.
* ``build_head(backbone, num_classes)`` returns only the decoder: ``list[Tensor]`` (the backbone's maps,
  shallow to deep) -> logits ``[B, num_classes, h, w]`` at whatever stride suits it. The task's
  ``Segmenter`` does the rest, identically for every architecture: backbone, auxiliary head
  (``--model.aux_loss``), dilation (``--model.output_stride``) and the final resize to the input size.
* Maps are picked by position (``features[-n:]``), never by stride: a dilated backbone reports repeated
  strides (``[2, 4, 8, 16, 16]`` at output stride 16).

Run it on the embedded shapes (from the repository root)::

    PYTHONPATH=docs/examples lit-vision fit --config experiments/segmentation/quickstart.yaml \\
        --model.architecture my_segmenter.SemanticFPN --model.architecture.channels 64
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from lit_vision.backbones import Backbone
from lit_vision.heads.segmentation import resize_to
from lit_vision.models.segmentation import SegmentationArchitecture


class SemanticFPNHead(nn.Module):
    """Lateral 1x1 conv-BN-ReLU per map, bilinear resize to the finest used map, sum, 3x3 conv-BN-ReLU, 1x1.

    Args:
        in_channels: channels of every backbone map, shallow to deep.
        num_classes: output logits (background included).
        channels: width after the lateral projections.
        num_levels: how many of the deepest maps are fused (capped at the number of maps).
        dropout: channel dropout before the classifier.
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 128, num_levels: int = 4,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.num_levels = min(num_levels, len(in_channels))
        used = list(in_channels)[-self.num_levels:]
        self.lateral = nn.ModuleList(Conv2dNormActivation(c, channels, 1) for c in used)
        self.fuse = Conv2dNormActivation(channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        maps = list(features)[-self.num_levels:]
        size = maps[0].shape[-2:]  # the finest of the fused maps; the Segmenter resizes the logits to the input
        fused = sum(resize_to(lateral(m), size) for lateral, m in zip(self.lateral, maps))
        return self.classifier(self.dropout(self.fuse(fused)))


class SemanticFPN(SegmentationArchitecture):
    """Panoptic FPN's semantic branch (simplified) on any registry backbone.

    Args:
        channels: width of the fused maps.
        num_levels: deepest backbone maps fused (4 on a ResNet: strides 4 to 32, logits at stride 4).
        dropout: before the classifier.
    """

    name = "semantic_fpn"

    def __init__(self, channels: int = 128, num_levels: int = 4, dropout: float = 0.1) -> None:
        # Options are kept as attributes: the task saves them in the checkpoint as {class_path, init_args}.
        self.channels, self.num_levels, self.dropout = channels, num_levels, dropout

    def build_head(self, backbone: Backbone, num_classes: int) -> SemanticFPNHead:
        return SemanticFPNHead(backbone.channels, num_classes, self.channels, self.num_levels, self.dropout)


if __name__ == "__main__":  # a quick check of the contract without the CLI: logits at the input size, any size
    from lit_vision.models.segmentation import build_segmenter

    model = build_segmenter(SemanticFPN(channels=32), "tv/resnet18", num_classes=4, output_stride=16, aux_loss=True)
    out = model(torch.randn(2, 3, 97, 130))
    print({k: tuple(v.shape) for k, v in out.items()})  # {'out': (2, 4, 97, 130), 'aux': (2, 4, 97, 130)}
