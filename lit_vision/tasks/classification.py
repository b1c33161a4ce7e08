"""ImageClassifier: a thin LightningModule around :class:`~lit_vision.models.Classifier`."""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lit_vision.backbones import create_backbone
from lit_vision.heads import ClassificationHead
from lit_vision.models import Classifier
from lit_vision.tasks.base import VisionTask
from lit_vision.visualize.pictures import ClassificationPicture
from lit_vision.visualize.report import classification_report


class ImageClassifier(VisionTask):
    """Image classification on any registry backbone.

    ``num_classes`` and ``class_names`` come from the DataModule through the CLI's argument links; the
    class names are saved in the checkpoint's hyper-parameters, so a checkpoint alone predicts names.

    Extension points for subclasses (see ``docs/classification.md``):
    :meth:`build_model` / :meth:`build_head` (architecture), :meth:`compute_loss` (objective),
    :meth:`forward` (inference), :meth:`parameter_groups` (optimizer groups).

    Args:
        backbone: registry name, e.g. ``"tv/resnet50"`` or ``"timm/convnext_tiny"``.
        num_classes: number of classes (normally linked from the data; may be derived from class_names).
        class_names: class names in label order.
        pretrained: ``False``, ``True`` (library download) or a path to a local weights file.
        backbone_kwargs: extra arguments for the backbone constructor (e.g. ``drop_path_rate``).
        dropout: dropout before the final linear layer.
        pool: global pooling of the head (``avg``, ``max``, ``avgmax``).
        label_smoothing: cross-entropy label smoothing (also applied to Mixup/CutMix soft targets).
        top_k: how many classes ``predict_step`` returns (and the k of the ``acc5`` metric, capped at
            the number of classes).
        weights: a full model's weights to start from: torchvision's own detection / segmentation /
            classification ``*.pth`` (e.g. ``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``) or a lit_vision
            checkpoint. Layers whose shape depends on the class count are re-initialised; the rest must fit
            (see docs/fine_tuning.md). Applied after ``pretrained``.
        freeze_backbone: train only the head (linear probing): the whole backbone frozen, BatchNorm
            statistics included; for stages, ``backbone_kwargs: {frozen_stages: N}``.
        **kwargs: ``optimizer``, ``lr_scheduler``, ``lr_scheduler_interval``, ``no_weight_decay_norm_bias``,
            ``nonfinite``, ``max_nonfinite_skips``, ``layer_decay``, ``channels_last``, ``compile``: see
            :class:`~lit_vision.tasks.base.VisionTask`.
    """

    monitor_metric = "val/acc1"
    inference_args = VisionTask.inference_args | {"top_k"}  # how --ckpt_path treats given settings: see VisionTask
    network_args = VisionTask.network_args | {"backbone", "backbone_kwargs", "pool"}

    def __init__(
        self,
        backbone: str = "tv/resnet18",
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        pretrained: bool | str = False,
        backbone_kwargs: dict[str, Any] | None = None,
        dropout: float = 0.0,
        pool: Literal["avg", "max", "avgmax"] = "avg",
        label_smoothing: float = 0.0,
        top_k: int = 5,
        freeze_backbone: bool = False,
        weights: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, class_names, **kwargs)
        if self.num_classes < 2:  # torchmetrics' accuracy would refuse it with a message about its own argument
            raise ValueError(f"ImageClassifier needs at least 2 classes, got {self.class_names}: a softmax over one "
                             "class is 1 whatever the image")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.label_smoothing = label_smoothing
        self.top_k = min(top_k, self.num_classes)
        self.model = self.build_model()
        self.load_weights(weights, freeze_backbone)
        self.train_metrics = self._make_metrics("train/")
        self.val_metrics = self._make_metrics("val/")
        self.test_metrics = self._make_metrics("test/")
        self._metrics_logged: dict[str, int] = {}  # stage -> the metrics' update count when last handed to self.log
        # Image counts per (true, predicted) class: the per-class table and confusion matrix of each evaluation.
        self.confusion = nn.ModuleDict({s: MulticlassConfusionMatrix(self.num_classes, validate_args=False)
                                        for s in ("val", "test")})

    # ------------------------------------------------------------------ extension points
    def build_model(self) -> nn.Module:
        """Backbone + head. Override to compose a different network (must map images to logits)."""
        hp = self.hparams
        backbone = create_backbone(hp.backbone, pretrained=hp.pretrained, **(hp.backbone_kwargs or {}))
        return Classifier(backbone, self.build_head(backbone.channels[-1]))

    def build_head(self, in_channels: int) -> nn.Module:
        """The head on the last feature map. Override for e.g. a cosine classifier or an MLP head."""
        return ClassificationHead(in_channels, self.num_classes, dropout=self.hparams.dropout, pool=self.hparams.pool)

    def compute_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy; ``target`` is class indices, or soft targets ``[N, C]`` under Mixup/CutMix."""
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def _make_metrics(self, prefix: str) -> MetricCollection:
        n = self.num_classes
        return MetricCollection(
            {
                "acc1": MulticlassAccuracy(num_classes=n, top_k=1, average="micro"),
                "acc5": MulticlassAccuracy(num_classes=n, top_k=min(5, n), average="micro"),
            },
            prefix=prefix,
        )

    # ------------------------------------------------------------------ steps
    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def _shared_step(self, batch: dict[str, Any], stage: str) -> Tensor | dict[str, Tensor]:
        images, target = batch["image"], batch["label"]
        logits = self(images)
        loss = self.compute_loss(logits, target)
        hard = target.argmax(dim=1) if target.ndim == 2 else target
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(logits.detach(), hard)
        # Per-step values go to the logger only every `log_every_n_steps`; the progress bar shows epoch
        # values. Putting a per-step tensor on the progress bar would force a device sync each step.
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=stage != "train",
                 batch_size=images.shape[0], sync_dist=stage != "train")
        # The metric objects go to self.log once per epoch, not every step: Lightning keeps the reference, computes
        # it at the epoch end (synced across ranks by torchmetrics) and resets it, whichever step logged it; a
        # log call costs ~1.2 ms of Python a step on the CPU for the same epoch value. The first step after a
        # reset (update count not above the one last logged) logs: no hook to forget in a subclass.
        count = max(m.update_count for m in metrics.values(copy_state=False))
        last = self._metrics_logged.get(stage)
        if last is None or count <= last:
            self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
            self._metrics_logged[stage] = count
        if stage == "train":
            return loss
        logits = logits.detach()
        self.confusion[stage].update(logits.argmax(1), hard)
        # What the pictures callback draws (no second forward pass); worst = highest cross-entropy of the truth.
        return {"loss": loss, "logits": logits, "errors": F.cross_entropy(logits.float(), hard, reduction="none")}

    def _eval_epoch_end(self, stage: str) -> None:
        self.eval_reports[stage] = classification_report(self.confusion[stage].compute(), self.class_names, stage)
        self.confusion[stage].reset()

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def picture(self, batch: dict[str, Any], outputs: dict[str, Tensor], index: int) -> ClassificationPicture:
        """The image with its true class and the top-k classes with probabilities."""
        probs = outputs["logits"][index].float().softmax(0)
        top_p, top_i = probs.topk(self.top_k)
        label = int(batch["label"][index])
        return ClassificationPicture(self.display_image(batch["image"][index]), label if label >= 0 else None,
                                     top_i.tolist(), top_p.tolist())

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Top-k class names and probabilities per image (``path`` and known ``label`` passed through)."""
        probs = self(batch["image"]).float().softmax(dim=1)
        top_p, top_i = probs.topk(self.top_k, dim=1)
        paths = batch.get("path", [None] * len(probs))
        labels = batch.get("label")
        out = []
        for j, (p, i) in enumerate(zip(top_p.tolist(), top_i.tolist())):
            row: dict[str, Any] = {
                "path": paths[j],
                "top_k": [self.class_names[c] for c in i],
                "probs": [round(x, 6) for x in p],
                "indices": i,
            }
            if labels is not None and int(labels[j]) >= 0:
                row["label"] = self.class_names[int(labels[j])]
            out.append(row)
        return out
