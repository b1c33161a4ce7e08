"""SemanticSegmenter: a thin LightningModule around a segmentation architecture (:mod:`lit_vision.models.segmentation`).

Loss: cross-entropy with the ignore index (optional class weights), plus an optional auxiliary-head term
and an optional soft Dice term. Metrics: one torchmetrics confusion matrix per stage, accumulated over the
whole evaluation set (and summed across ranks), from which mIoU, pixel accuracy, mean class accuracy and
per-class IoU are derived once per epoch (:mod:`lit_vision.evaluation.segmentation`).

Inference is whole-image (the DataModule's evaluation preset pads to a fixed square) or sliding-window
(``inference="slide"``): overlapping ``window_size`` crops at ``window_stride``, logits averaged where
they overlap, as mmsegmentation's ``slide_inference`` does (no library offers it for a plain module).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_vision.callbacks.mask_writer import SegmentationMaskWriter
from lit_vision.evaluation.segmentation import (
    metrics_from_confusion,
    segmentation_confusion_matrix,
)
from lit_vision.geometry import restore_size
from lit_vision.models.segmentation import SegmentationArchitecture, build_segmenter
from lit_vision.tasks.base import VisionTask
from lit_vision.visualize.pictures import SegmentationPicture
from lit_vision.visualize.report import segmentation_report


def dice_loss(logits: Tensor, target: Tensor, ignore_index: int = 255, eps: float = 1.0) -> Tensor:
    """Soft multi-class Dice loss (1 - mean Dice over the classes present in the batch), ignore pixels out."""
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(1) * valid
    onehot = F.one_hot(target.clamp(0, k - 1), k).permute(0, 3, 1, 2).float() * valid
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    present = onehot.sum((0, 2, 3)) > 0
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0.0


def slide_logits(model: nn.Module, images: Tensor, num_classes: int, window: int, stride: int) -> Tensor:
    """Average the model's ``"out"`` logits over overlapping ``window x window`` crops taken every ``stride``.

    Images smaller than the window are padded (bottom/right) for the forward pass and cropped back.
    """
    check_windows(window, stride)
    b, _, h, w = images.shape
    ph, pw = max(h, window), max(w, window)
    x = F.pad(images, (0, pw - w, 0, ph - h))
    logits = x.new_zeros(b, num_classes, ph, pw)
    count = x.new_zeros(1, 1, ph, pw)
    rows = list(range(0, max(ph - window, 0) + 1, stride))
    cols = list(range(0, max(pw - window, 0) + 1, stride))
    if rows[-1] + window < ph:
        rows.append(ph - window)
    if cols[-1] + window < pw:
        cols.append(pw - window)
    for y in rows:
        for x0 in cols:
            crop = x[:, :, y:y + window, x0:x0 + window]
            logits[:, :, y:y + window, x0:x0 + window] += model(crop)["out"].float()
            count[:, :, y:y + window, x0:x0 + window] += 1
    return (logits / count)[:, :, :h, :w]


def check_windows(window: int, stride: int | None) -> None:
    """Sliding windows must cover every pixel: a stride past the window leaves strips no window sees (0/0 logits)."""
    if window < 1 or (stride is not None and not 1 <= stride <= window):
        raise ValueError(f"sliding-window inference needs 1 <= window_stride <= window_size, got window_size {window} "
                         f"and window_stride {stride}: a larger stride leaves pixels that no window covers")


class SemanticSegmenter(VisionTask):
    """Semantic segmentation (FCN, U-Net, DeepLabv3, DeepLabv3+) on any registry backbone.

    Batches: ``{"image": [B,3,H,W] normalised, "mask": [B,H,W] long (``ignore_index`` = ignore), "path",
    "meta": [{"orig_size", "content_size"}]}`` (see :mod:`lit_vision.data.segmentation`).
    ``num_classes``/``class_names`` come from the DataModule through the CLI's links and are saved in the
    checkpoint, so a checkpoint alone predicts named masks.

    Extension points: :meth:`build_model`, :meth:`compute_loss`, :meth:`infer`, :meth:`parameter_groups`.

    Args:
        architecture: a registered name (``"fcn"``, ``"unet"``, ``"deeplabv3"``, ``"deeplabv3plus"``: the
            architecture with its defaults) or an architecture object with its options, in YAML
            ``{class_path: lit_vision.models.segmentation.DeepLabV3, init_args: {atrous_rates: [12, 24, 36]}}`` or
            ``--model.architecture DeepLabV3 --model.architecture.aspp_channels 128``. Your own: a
            :class:`~lit_vision.models.segmentation.SegmentationArchitecture` subclass, by ``class_path``.
        backbone: registry name (``None`` with ``unet``: the classic U-Net encoder, 64 -> 1024 channels).
        num_classes, class_names: normally linked from the data.
        pretrained, backbone_kwargs, output_stride: see :func:`~lit_vision.models.segmentation.build_segmenter`
            (``output_stride`` 8 or 16 dilates the backbone where it supports it).
        weights, freeze_backbone: a full segmenter to start from (torchvision's ``deeplabv3_resnet50`` /
            ``fcn_resnet50`` files with ``DeepLabV3(torchvision_head=True)`` / ``FCN(fcn_variant="32s")``, or a
            lit_vision checkpoint; the final 1x1 convs are re-initialised for another class count) and whole-backbone
            freezing: as :class:`~lit_vision.tasks.ObjectDetector` (docs/fine_tuning.md).
        aux_loss, aux_weight: auxiliary FCN head on the stride-16 stage and its loss weight (torchvision's
            reference: 0.5).
        ignore_index: label of pixels left out of loss and metrics.
        class_weights: per-class cross-entropy weights (e.g. inverse frequency).
        dice_weight: weight of an added soft Dice loss (0 = off).
        inference: ``"whole"`` or ``"slide"``; ``window_size``/``window_stride`` for sliding windows
            (default: 512 / two thirds of the window).
        **kwargs: ``optimizer``, ``lr_scheduler``, ``lr_scheduler_interval``, ``no_weight_decay_norm_bias``,
            ``nonfinite``, ``max_nonfinite_skips``, ``layer_decay``, ``channels_last``, ``compile``: see
            :class:`~lit_vision.tasks.base.VisionTask`.
    """

    monitor_metric = "val/miou"
    inference_args = VisionTask.inference_args | {"inference", "window_size", "window_stride"}  # see VisionTask
    network_args = VisionTask.network_args | {"architecture", "backbone", "backbone_kwargs", "output_stride", "aux_loss"}
    prediction_writer = SegmentationMaskWriter  # what ``lit-vision predict`` adds: palette PNGs + JSON lines

    def __init__(
        self,
        architecture: SegmentationArchitecture | str = "deeplabv3",
        backbone: str | None = "tv/resnet50",
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        pretrained: bool | str = False,
        backbone_kwargs: dict[str, Any] | None = None,
        output_stride: int | None = None,
        aux_loss: bool = False,
        aux_weight: float = 0.5,
        ignore_index: int = 255,
        class_weights: list[float] | None = None,
        dice_weight: float = 0.0,
        inference: Literal["whole", "slide"] = "whole",
        window_size: int | None = None,
        window_stride: int | None = None,
        weights: str | None = None,
        freeze_backbone: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, class_names, **kwargs)
        if class_weights is not None and len(class_weights) != self.num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries for {self.num_classes} classes")
        check_windows(window_size or 512, window_stride)
        self.architecture = SegmentationArchitecture.resolve(architecture)
        if not isinstance(self.hparams["architecture"], (str, Mapping)):  # an object given from Python
            self.hparams["architecture"] = self.architecture.config()  # its {class_path, init_args} when plain
        self.model = self.build_model()
        self.load_weights(weights, freeze_backbone)
        per_class = torch.tensor(class_weights, dtype=torch.float) if class_weights is not None else None
        self.register_buffer("class_weights", per_class, persistent=False)
        self.confusion = nn.ModuleDict({s: segmentation_confusion_matrix(self.num_classes, ignore_index)
                                        for s in ("val", "test")})

    # ------------------------------------------------------------------ extension points
    def build_model(self) -> nn.Module:
        hp = self.hparams
        return build_segmenter(self.architecture, hp.backbone, self.num_classes, pretrained=hp.pretrained,
                               backbone_kwargs=hp.backbone_kwargs, output_stride=hp.output_stride,
                               aux_loss=hp.aux_loss)

    def compute_loss(self, outputs: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        """Loss terms; ``"loss"`` is what is optimised: CE + aux_weight * aux CE + dice_weight * Dice."""
        hp = self.hparams
        # A batch whose every pixel is ignored (crowd regions, small crops) has a mean over nothing, 0/0: count it
        # as 0 (zero gradients) instead of a NaN that stops the run. On the device: no sync per step.
        labelled = (mask != hp.ignore_index).any()
        ce = torch.where(labelled, F.cross_entropy(outputs["out"].float(), mask, weight=self.class_weights,
                                                   ignore_index=hp.ignore_index), 0.0)
        terms = {"loss_ce": ce}
        total = ce
        if "aux" in outputs and hp.aux_weight:
            terms["loss_aux"] = torch.where(labelled, F.cross_entropy(outputs["aux"].float(), mask,
                                                                      weight=self.class_weights,
                                                                      ignore_index=hp.ignore_index), 0.0)
            total = total + hp.aux_weight * terms["loss_aux"]
        if hp.dice_weight:
            terms["loss_dice"] = dice_loss(outputs["out"], mask, hp.ignore_index)
            total = total + hp.dice_weight * terms["loss_dice"]
        return terms | {"loss": total}

    def infer(self, images: Tensor) -> Tensor:
        """Logits ``[B, K, H, W]`` at the input size, whole-image or sliding-window."""
        hp = self.hparams
        if hp.inference == "slide":
            window = hp.window_size or 512
            return slide_logits(self.model, images, self.num_classes, window, hp.window_stride or max(1, 2 * window // 3))
        return self.model(images)["out"]

    # ------------------------------------------------------------------ steps
    def forward(self, images: Tensor) -> Tensor:
        return self.infer(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        terms = self.compute_loss(self.model(batch["image"]), batch["mask"])
        self.loss_terms = {k: v.detach() for k, v in terms.items()}  # named by the non-finite guard
        n = batch["image"].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=n, prog_bar=name == "loss")
        return terms["loss"]

    def _eval_step(self, batch: dict[str, Any], stage: str) -> dict[str, Tensor]:
        logits = self.infer(batch["image"])
        mask, ignore = batch["mask"], self.hparams.ignore_index
        # Per pixel (weighted as the mean reduction weights), so the batch loss and each image's loss - what the
        # worst-k pictures rank by - come from one cross-entropy.
        ce = F.cross_entropy(logits.float(), mask, weight=self.class_weights, ignore_index=ignore, reduction="none")
        valid = mask != ignore
        weight = (self.class_weights[mask.clamp(0, self.num_classes - 1)] * valid if self.class_weights is not None
                  else valid.float())
        loss = ce.sum() / weight.sum()
        if not torch.isnan(loss):  # a batch of only ignore pixels has no loss
            self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=mask.shape[0], sync_dist=True)
        pred = logits.argmax(1)
        self.confusion[stage].update(pred, mask)
        return {"pred": pred, "errors": ce.sum((1, 2)) / weight.sum((1, 2)).clamp_min(1e-12)}

    def _eval_epoch_end(self, stage: str) -> None:
        confusion = self.confusion[stage].compute()
        self.eval_reports[stage] = segmentation_report(confusion, self.class_names, stage)
        metrics = metrics_from_confusion(confusion, self.class_names)
        self.confusion[stage].reset()
        for name, value in metrics.items():
            if name.startswith("iou/") and math.isnan(value):
                continue  # absent class: no IoU to log (the mean already leaves it out)
            self.log(f"{stage}/{name}", value, prog_bar=name == "miou", sync_dist=False)

    def picture(self, batch: dict[str, Any], outputs: dict[str, Tensor], index: int) -> SegmentationPicture:
        """Image, ground-truth and predicted masks, cropped to the image content (evaluation pads bottom/right)."""
        meta = batch["meta"][index] if "meta" in batch else {}
        h, w = meta.get("content_size", batch["image"].shape[-2:])
        return SegmentationPicture(self.display_image(batch["image"][index][:, :h, :w]),
                                   batch["mask"][index][:h, :w].cpu(), outputs["pred"][index][:h, :w].cpu(),
                                   ignore_index=self.hparams.ignore_index)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> list[dict[str, Any]]:
        """Per image: ``path``, ``mask`` (``[h, w]`` class indices at the original size, uint8 up to 256
        classes), ``classes`` (names present, most pixels first) and ``pixels`` (count per present class).

        Logits are cropped to the image content (the evaluation preset pads bottom/right) and resized
        bilinearly to the original size before the argmax, so the mask aligns with the original image.
        :class:`~lit_vision.callbacks.SegmentationMaskWriter` writes them as palette PNGs + JSON lines.
        """
        logits = self.infer(batch["image"])
        out = []
        for i, meta in enumerate(batch["meta"]):
            item = restore_size(logits[i].float(), meta)  # crop the padding, bilinear back to the original size
            mask = item.argmax(0).to(torch.uint8 if self.num_classes <= 256 else torch.int32).cpu()
            counts = torch.bincount(mask.flatten().long(), minlength=self.num_classes)
            present = [int(c) for c in counts.argsort(descending=True) if counts[c] > 0]
            out.append({"path": batch["path"][i], "mask": mask,
                        "classes": [self.class_names[c] for c in present],
                        "pixels": {self.class_names[c]: int(counts[c]) for c in present}})
        return out
