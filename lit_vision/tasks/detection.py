"""ObjectDetector: a thin LightningModule around a detector architecture (:mod:`lit_vision.models.detection`).

Validation and test metrics are COCO AP/AR computed by :func:`~lit_vision.evaluation.coco.evaluate_coco`
(pycocotools-identical), the same function behind ``lit-vision eval-coco``, so training and offline
evaluation report the same numbers. Each rank accumulates its predictions as COCO results in original
image pixels; at epoch end they are gathered (``all_gather_object``), evaluated once on rank 0 against
the ground truth the DataModule handed over (:attr:`~lit_vision.contracts.DataInfo.ground_truth`), and the
scalars are broadcast so every rank logs identical values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lit_vision import distributed
from lit_vision.backbones import create_backbone
from lit_vision.evaluation.coco import evaluate_coco, ground_truth_subset
from lit_vision.evaluation.per_image import detection_errors
from lit_vision.geometry import boxes_to_original
from lit_vision.models.detection import DetectorArchitecture
from lit_vision.tasks.base import VisionTask
from lit_vision.visualize.draw import to_uint8
from lit_vision.visualize.pictures import DetectionPicture
from lit_vision.visualize.report import detection_report


class ObjectDetector(VisionTask):
    """Object detection (Faster R-CNN, RetinaNet, FCOS from torchvision; our YOLO) on any registry backbone.

    Labels are ``0..K-1`` throughout (the model wrapper handles Faster R-CNN's background class).
    ``num_classes`` / ``class_names`` come from the DataModule through the CLI's argument links; the class
    names are saved in the hyper-parameters, so a checkpoint alone predicts names.

    Extension points: :meth:`build_model` (architecture), :meth:`compute_loss` (combining the loss dict),
    :meth:`to_coco_results` (what gets evaluated), :meth:`parameter_groups` (optimizer groups).

    Args:
        architecture: a registered name (``"faster_rcnn"``, ``"retinanet"``, ``"fcos"``, ``"yolo"``: the
            architecture with its defaults) or an architecture object with its options, in YAML
            ``{class_path: lit_vision.models.detection.YOLO, init_args: {neck_channels: 64}}`` or on the command
            line ``--model.architecture YOLO --model.architecture.neck_channels 64``. Your own: a
            :class:`~lit_vision.models.detection.DetectorArchitecture` subclass, by ``class_path``.
        backbone: registry name, e.g. ``"tv/resnet50"``.
        num_classes, class_names: normally linked from the data; ``num_classes`` may be derived from names.
        pretrained, backbone_kwargs: see :func:`~lit_vision.backbones.create_backbone`.
        image_size: the DataModule's ``image_size`` (linked by the CLI): the longer side its presets resize to.
        weights: a full model's weights to start from: torchvision's own detection / segmentation /
            classification ``*.pth`` (e.g. ``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``) or a lit_vision
            checkpoint. Layers whose shape depends on the class count are re-initialised; the rest must fit
            (see docs/fine_tuning.md). Applied after ``pretrained``.
        freeze_backbone: freeze the whole backbone (gradients off, BatchNorm statistics frozen); for stages,
            ``backbone_kwargs: {frozen_stages: N}``.
        per_class_ap: also log AP@[.5:.95] per category as ``<stage>/ap/<class name>`` (``nan`` - not
            logged - for categories without ground truth in the split).
        **kwargs: ``optimizer``, ``lr_scheduler``, ``lr_scheduler_interval``, ``no_weight_decay_norm_bias``,
            ``nonfinite``, ``max_nonfinite_skips``, ``layer_decay``, ``channels_last``, ``compile``: see
            :class:`~lit_vision.tasks.base.VisionTask`.
    """

    monitor_metric = "val/map"
    # How --ckpt_path treats given settings (see VisionTask): post-processing and input size may change at inference.
    inference_args = VisionTask.inference_args | {
        "image_size", "architecture.score_thresh", "architecture.nms_thresh", "architecture.detections_per_img",
        "architecture.pre_nms_top_n", "architecture.min_size", "architecture.max_size"}
    network_args = VisionTask.network_args | {"architecture", "backbone", "backbone_kwargs"}

    def __init__(
        self,
        architecture: DetectorArchitecture | str = "retinanet",
        backbone: str = "tv/resnet50",
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        pretrained: bool | str = False,
        backbone_kwargs: dict[str, Any] | None = None,
        image_size: int | None = None,
        per_class_ap: bool = False,
        weights: str | None = None,
        freeze_backbone: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, class_names, **kwargs)
        self.architecture = DetectorArchitecture.resolve(architecture)
        if not isinstance(self.hparams["architecture"], (str, Mapping)):  # an object given from Python
            self.hparams["architecture"] = self.architecture.config()  # its {class_path, init_args} when plain
        self.model = self.build_model()
        self.load_weights(weights, freeze_backbone)
        self._results: dict[int, list[dict[str, Any]]] = {}
        self._gt_cache: dict[str, Any] | None = None
        self._mapping: dict[int, int] = {}
        self.last_coco_results: list[dict[str, Any]] = []  # what the last evaluation scored (rank 0: all ranks)

    # ------------------------------------------------------------------ extension points
    def build_model(self) -> nn.Module:
        """The registry backbone (the stages the architecture asks for) and the architecture built on it."""
        hp = self.hparams
        backbone = create_backbone(hp.backbone, pretrained=hp.pretrained,
                                   out_indices=list(self.architecture.backbone_out_indices), **(hp.backbone_kwargs or {}))
        return self.architecture.build(backbone, self.num_classes, hp.image_size)

    def compute_loss(self, losses: dict[str, Tensor]) -> Tensor:
        """The optimised objective: the plain sum of the detector's loss terms (torchvision's recipe)."""
        return sum(losses.values())  # type: ignore[return-value]

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
        self.loss_terms = {"loss": loss.detach()} | {k: v.detach() for k, v in losses.items()}  # named on a NaN
        n = len(images)
        for name, value in losses.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=n)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=n)
        return loss

    def _ground_truth(self, stage: str) -> dict[str, Any] | None:
        """The ground truth the DataModule handed over; ``None`` (evaluation skipped, with a warning) without one."""
        getter = self.data_info.ground_truth
        if getter is None:
            rank_zero_warn(f"the data gave no {stage} ground truth (DataInfo.ground_truth): COCO evaluation skipped")
            return None
        return getter(stage)

    def _eval_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        predictions = self.model(batch["image"])
        if self._gt_cache is not None:
            self._results.update(self.to_coco_results(predictions, batch["target"], self._mapping))
        # What the pictures callback draws (no second forward pass) and ranks the worst images by.
        return {"predictions": predictions, "errors": detection_errors(predictions, batch["target"])}

    def display_image(self, image: Tensor) -> Tensor:
        return to_uint8(image)  # detection inputs are [0, 1]: the detectors normalise inside

    def picture(self, batch: dict[str, Any], outputs: dict[str, Any], index: int) -> DetectionPicture:
        """The input image with its ground-truth boxes and the predicted boxes, class names and scores."""
        target, pred = batch["target"][index], outputs["predictions"][index]
        return DetectionPicture(self.display_image(batch["image"][index]), target["boxes"], target["labels"],
                                pred["boxes"], pred["labels"], pred["scores"])

    def _eval_epoch_start(self, stage: str) -> None:
        self._results = {}
        self._gt_cache = self._ground_truth(stage)
        mapping = self.data_info.label_to_category_id
        if self._gt_cache is not None and mapping is None:
            mapping = {i: c["id"] for i, c in enumerate(self._gt_cache["categories"])}
        self._mapping = dict(mapping or {})

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
            # Scored on the images predicted (all of them, unless limit_val_batches or the sanity check cut the
            # epoch short), as torchvision's reference evaluator does: unseen images' objects are not misses.
            gt = ground_truth_subset(self._gt_cache, merged)
            # evaluate_coco's loadRes adds keys (area, id, segmentation) to the dicts it is given: pass copies.
            full = evaluate_coco(gt, [{**r, "bbox": list(r["bbox"])} for r in results],
                                 per_class=self.hparams.per_class_ap, details=True)
            if full["details"] is not None:
                self.eval_reports[stage] = detection_report(full["details"], gt, self.class_names,
                                                            self._mapping, stage)
            scalars = {k: float(v) for k, v in full.items() if k not in ("per_class", "details")}
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

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self._eval_epoch_start("test")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch)

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
