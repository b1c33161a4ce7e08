"""Per-call time (median ms) of three per-step pieces changed on 2026-12-02 after review, for before/after runs:

    for side in /tmp/wt_before .; do (cd $side && PYTHONPATH=$side python /abs/path/benchmarks/hot_path_pieces.py); done

segmentation loss + backward (batch 8, 21 classes, 128 px, a 255 border), YOLO-n loss + backward (128 px, 3 classes,
batch 8), and receiving a PackedBatch detection batch (8 images of 3x128x128, small targets).
"""
import json
import pickle
import statistics
import time

import torch

torch.set_num_threads(2)
from lit_vision.data.packing import PackedBatch
from lit_vision.heads.detection.yolo import decode_boxes, make_points
from lit_vision.heads.detection.yolo_loss import YOLOLoss
from lit_vision.tasks.segmentation import SemanticSegmenter


def timeit(fn, n):
    fn(); ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3

g = torch.Generator().manual_seed(0)
# segmentation loss: 21 classes (VOC-like), batch 8, 128 px
seg = SemanticSegmenter(class_names=[str(i) for i in range(21)], backbone="tv/resnet18", architecture="fcn")
out = {"out": torch.randn(8, 21, 128, 128, generator=g, requires_grad=True)}
mask = torch.randint(0, 21, (8, 128, 128), generator=g); mask[:, :4] = 255
def seg_step():
    seg.compute_loss(out, mask)["loss"].backward()
# YOLO loss: yolo-n at 128 px, 3 classes, batch 8, 0-4 boxes
points, strides = make_points([(16, 16), (8, 8), (4, 4)], [8, 16, 32], torch.device("cpu"))
A = len(points)
box_logits = torch.randn(8, A, 4, 16, generator=g, requires_grad=True)
cls_logits = torch.randn(8, A, 3, generator=g, requires_grad=True)
targets = [{"boxes": torch.tensor([[10.0, 10, 40, 50], [60, 20, 100, 90]])[: i % 3], "labels": torch.tensor([0, 2])[: i % 3]} for i in range(8)]
loss = YOLOLoss(3)
def yolo_step():
    pred = decode_boxes(box_logits, points, strides)
    sum(loss(cls_logits, box_logits, pred, points, strides, targets).values()).backward()
# PackedBatch round trip of a detection batch (8 images 3x128x128 float, small targets)
items = [{"image": torch.rand(3, 128, 128, generator=g), "target": {"boxes": torch.rand(i % 4, 4, generator=g),
          "labels": torch.arange(i % 4), "iscrowd": torch.zeros(i % 4, dtype=torch.bool)}, "path": f"{i}.jpg"} for i in range(8)]
batch = PackedBatch({"image": [it["image"] for it in items], "target": [it["target"] for it in items]})
data = pickle.dumps(batch)
def unpack():
    pickle.loads(data)
print(json.dumps({"seg_loss_ms": timeit(seg_step, 40), "yolo_loss_ms": timeit(yolo_step, 40), "unpack_ms": timeit(unpack, 400)}))
