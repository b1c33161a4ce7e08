"""Task heads: plain ``nn.Module`` s that map backbone (or neck) features to task outputs.

    heads/classification.py   ClassificationHead
    heads/detection/          the YOLO-style decoupled head, its task-aligned assigner and loss; RetinaNet's focal head
    heads/segmentation/       FCN, U-Net, DeepLabv3 / v3+ decoders and their shared blocks
"""

from lit_vision.heads.classification import ClassificationHead

__all__ = ["ClassificationHead"]
