"""ObjectDetector: a thin LightningModule around :func:`~lit_vision.models.detectors.build_detector`.

Validation and test metrics are COCO AP/AR computed by :func:`~lit_vision.evaluation.coco.evaluate_coco`
(pycocotools-identical), the same function behind ``lit-vision eval-coco``, so training and offline
evaluation report the same numbers. Each rank accumulates its predictions as COCO results in original
image pixels; at epoch end they are gathered (``all_gather_object``), evaluated once on rank 0 against
the DataModule's ``ground_truth(split)``, and the scalars are broadcast so every rank logs identical values.
"""

from __future__ import annotations

from typing import Any, Literal

import torch.distributed as dist
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lit_vision import distributed
from lit_vision.data.detection_transforms import boxes_to_original
from lit_vision.evaluation.coco import evaluate_coco
from lit_vision.models.detectors import Architecture, build_detector
from lit_vision.tasks.base import VisionTask, resolve_classes


class ObjectDetector(VisionTask):
    """Object detection (Faster R-CNN, RetinaNet, FCOS from torchvision; our YOLO) on any registry backbone.

    Labels are ``0..K-1`` throughout (the model wrapper handles Faster R-CNN's background class).
    ``num_classes`` / ``class_names`` come from the DataModule through the CLI's argument links; the class
    names are saved in the hyper-parameters, so a checkpoint alone predicts names.

    Extension points: :meth:`build_model` (architecture), :meth:`compute_loss` (combining the loss dict),
    :meth:`to_coco_results` (what gets evaluated), :meth:`parameter_groups` (optimizer groups).

    Args:
        architecture: ``"faster_rcnn"``, ``"retinanet"``, ``"fcos"`` or ``"yolo"``.
        backbone: registry name, e.g. ``"tv/resnet50"``.
        num_classes, class_names: normally linked from the data; ``num_classes`` may be derived from names.
        pretrained, backbone_kwargs: see :func:`~lit_vision.backbones.create_backbone`.
        backbone_out_indices, fpn_channels, image_size, min_size, max_size, anchor_sizes, aspect_ratios,
            scales_per_octave, focal_alpha, focal_gamma, score_thresh, nms_thresh, detections_per_img:
            see :func:`~lit_vision.models.detectors.build_detector`. Link ``image_size`` from the
            DataModule so the detector does not resize a second time.
        detector_kwargs: further arguments of the detector's constructor (torchvision's, e.g. Faster R-CNN's
            ``rpn_post_nms_top_n_train``; YOLO's ``neck_depth``, ``reg_max``, loss gains, assigner ``top_k``/
            ``alpha``/``beta``).
        per_class_ap: also log AP@[.5:.95] per category as ``<stage>/ap/<class name>`` (``nan`` - not
            logged - for categories without ground truth in the split).
        optimizer, lr_scheduler, lr_scheduler_interval, no_weight_decay_norm_bias: see
            :class:`~lit_vision.tasks.base.VisionTask`.
    """

    monitor_metric = "val/map"

    def __init__(
        self,
        architecture: Architecture = "retinanet",
        backbone: str = "tv/resnet50",
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        pretrained: bool | str = False,
        backbone_kwargs: dict[str, Any] | None = None,
        backbone_out_indices: list[int] | None = None,
        fpn_channels: int = 256,
        image_size: int | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        anchor_sizes: list[Any] | None = None,
        aspect_ratios: list[float] | None = None,
        scales_per_octave: int = 3,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        detector_kwargs: dict[str, Any] | None = None,
        per_class_ap: bool = False,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        no_weight_decay_norm_bias: bool = True,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, lr_scheduler_interval, no_weight_decay_norm_bias)
        num_classes, names = resolve_classes("ObjectDetector", num_classes, class_names)
        self.save_hyperparameters()
        self._drop_unserializable_hparams()
        self.num_classes, self.class_names = num_classes, names
        self.model = self.build_model()
        self._results: dict[int, list[dict[str, Any]]] = {}
        self._gt_cache: dict[str, Any] | None = None
        self._mapping: dict[int, int] = {}
        self.last_coco_results: list[dict[str, Any]] = []  # what the last evaluation scored (rank 0: all ranks)

    # ------------------------------------------------------------------ extension points
    def build_model(self) -> nn.Module:
        hp = self.hparams
        return build_detector(
            hp.architecture, hp.backbone, self.num_classes, pretrained=hp.pretrained,
            backbone_kwargs=hp.backbone_kwargs, backbone_out_indices=tuple(hp.backbone_out_indices or (-3, -2, -1)),
            fpn_channels=hp.fpn_channels, image_size=hp.image_size, min_size=hp.min_size, max_size=hp.max_size,
            anchor_sizes=hp.anchor_sizes, aspect_ratios=tuple(hp.aspect_ratios or (0.5, 1.0, 2.0)),
            scales_per_octave=hp.scales_per_octave, focal_alpha=hp.focal_alpha, focal_gamma=hp.focal_gamma,
            score_thresh=hp.score_thresh, nms_thresh=hp.nms_thresh, detections_per_img=hp.detections_per_img,
            **(hp.detector_kwargs or {}),
        )

    def compute_loss(self, losses: dict[str, Tensor]) -> Tensor:
        """The optimised objective: the plain sum of the detector's loss terms (torchvision's recipe)."""
        return sum(losses.values())  # type: ignore[return-value]

    def _label_to_category_id(self, gt: dict[str, Any]) -> dict[int, int]:
        dm = self.trainer.datamodule if self._trainer is not None else None
        mapping = getattr(dm, "label_to_category_id", None)
        if mapping is not None:
            return dict(mapping)
        return {i: c["id"] for i, c in enumerate(gt["categories"])}

    def to_coco_results(self, predictions: list[dict[str, Tensor]], targets: list[dict[str, Any]],
                        label_to_category_id: dict[int, int]) -> dict[int, list[dict[str, Any]]]:
        """COCO results per image id: ``bbox`` as ``[x, y, w, h]`` in original image pixels."""
        out: dict[int, list[dict[str, Any]]] = {}
        for pred, target in zip(predictions, targets):
            image_id = int(target["image_id"])
            boxes = boxes_to_original(pred["boxes"].detach().float().cpu(), target)
            rows = []
            for (x0, y0, x1, y1), label, score in zip(boxes.tolist(), pred["labels"].tolist(), pred["scores"].tolist()):
                rows.append({"image_id": image_id, "category_id": int(label_to_category_id[int(label)]),
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(score)})
            out[image_id] = rows
        return out

    # ------------------------------------------------------------------ steps
    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        return self.model(images, targets)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images, targets = batch["image"], batch["target"]
        losses = self.model(images, targets)
        loss = self.compute_loss(losses)
        n = len(images)
        for name, value in losses.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=n)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=n)
        return loss

    def _ground_truth(self, stage: str) -> dict[str, Any] | None:
        dm = self.trainer.datamodule if self._trainer is not None else None
        getter = getattr(dm, "ground_truth", None)
        if getter is None:
            return None
        try:
            return getter(stage)
        except Exception as err:  # noqa: BLE001 - a predict-only DataModule may refuse: skip evaluation
            rank_zero_warn(f"no {stage} ground truth ({err}): COCO evaluation skipped")
            return None

    def _eval_step(self, batch: dict[str, Any]) -> None:
        predictions = self.model(batch["image"])
        if self._gt_cache is None:
            return
        self._results.update(self.to_coco_results(predictions, batch["target"], self._mapping))

    def _eval_epoch_start(self, stage: str) -> None:
        self._results = {}
        self._gt_cache = self._ground_truth(stage)
        self._mapping = self._label_to_category_id(self._gt_cache) if self._gt_cache is not None else {}

    def _eval_epoch_end(self, stage: str) -> None:
        if self._gt_cache is None:
            return
        merged = dict(self._results)
        if distributed.is_distributed():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self._results)
            merged = {}
            for part in gathered:  # dict by image id: padded duplicates of the DistributedSampler merge away
                merged.update(part)
        results = [r for rows in merged.values() for r in rows]
        stats: list[Any] = [None]
        if not distributed.is_distributed() or dist.get_rank() == 0:
            # evaluate_coco's loadRes adds keys (area, id, segmentation) to the dicts it is given: pass copies.
            full = evaluate_coco(self._gt_cache, [{**r, "bbox": list(r["bbox"])} for r in results],
                                 per_class=self.hparams.per_class_ap)
            scalars = {k: float(v) for k, v in full.items() if k != "per_class"}
            scalars |= {f"ap/{name}": float(v) for name, v in full.get("per_class", {}).items() if v == v}
            stats = [scalars]
            self.last_coco_results = results
        if distributed.is_distributed():
            dist.broadcast_object_list(stats, src=0)
        for name, value in stats[0].items():
            self.log(f"{stage}/{name}", value, sync_dist=False, prog_bar=name in ("map", "map_50"))
        self._results = {}

    def on_validation_epoch_start(self) -> None:
        self._eval_epoch_start("val")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_epoch_start("test")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Per image: ``path``, ``image_id``, ``boxes`` (original-image XYXY pixels), ``labels`` (class names),
        ``label_ids`` (contiguous ``0..K-1``) and ``scores``.

        ``image_id`` is the dataset's (the COCO id on a COCO split, ``-1`` for plain images), so a
        :class:`~lit_vision.callbacks.CocoResultsWriter` can turn the rows into a results file. Values are not
        rounded: that file must score exactly what validation scores.
        """
        predictions = self.model(batch["image"])
        paths = batch.get("path", [None] * len(predictions))
        out = []
        for pred, target, path in zip(predictions, batch["target"], paths):
            boxes = boxes_to_original(pred["boxes"].detach().float().cpu(), target)
            label_ids = [int(c) for c in pred["labels"].tolist()]
            out.append({
                "path": path,
                "image_id": int(target.get("image_id", -1)),
                "boxes": boxes.tolist(),
                "labels": [self.class_names[c] for c in label_ids],
                "label_ids": label_ids,
                "scores": [float(s) for s in pred["scores"].tolist()],
            })
        return out
