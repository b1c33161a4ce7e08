"""Shared LightningModule base: optimizer/scheduler injection and the classic weight-decay rule.

Every task takes ``optimizer`` and ``lr_scheduler`` as LightningCLI callables, so a YAML recipe can swap
either without code. ``None`` means the classic recipe described in each argument below.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from lit_vision import resume
from lit_vision.callbacks.nonfinite import NonFiniteGuard
from lit_vision.callbacks.prediction_writer import JsonlPredictionWriter
from lit_vision.constants import IMAGENET_MEAN, IMAGENET_STD
from lit_vision.contracts import DataInfo
from lit_vision.tasks.optim import build_optimizer
from lit_vision.tasks.schedule import fit_schedule_length
from lit_vision.visualize.draw import to_uint8
from lit_vision.visualize.report import EvalReport

# Norm layers whose affine parameters should not be decayed (decaying a BN scale only fights the norm).
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def split_decay_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable parameters into (decay, no_decay) as timm's and torchvision's references do.

    No decay for: norm weights, biases, 1-D parameters (norms that are not ``nn.Module`` norms), one value per
    channel in any shape (torchvision ConvNeXt's layer scale is ``[C, 1, 1]``), and what a submodule lists in
    timm's ``no_weight_decay()`` (ViT's ``pos_embed`` and ``cls_token``, Swin's relative position tables).
    """
    listed: set[int] = set()
    for mod in module.modules():
        names = getattr(mod, "no_weight_decay", None)
        if callable(names):
            try:
                wanted = set(names())
            except TypeError:  # some other method of that name, with arguments
                continue
            listed.update(id(p) for n, p in mod.named_parameters() if n in wanted)
    decay, no_decay, seen = [], [], set()
    for mod in module.modules():
        for name, p in mod.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            per_channel = p.ndim <= 1 or p.numel() == p.shape[0]
            if isinstance(mod, NORM_TYPES) or name.endswith("bias") or per_channel or id(p) in listed:
                no_decay.append(p)
            else:
                decay.append(p)
    return decay, no_decay


def apply_lr_scales(optimizer: torch.optim.Optimizer) -> None:
    """Multiply each group's ``lr`` by its ``lr_scale`` (layer-wise decay) once, before a scheduler is built.

    torch schedulers record ``initial_lr`` from ``group["lr"]`` and schedule each group from its own, and
    :class:`~lit_vision.callbacks.LRWarmup` multiplies ``group["lr"]``, so a scaled lr stays scaled through both. The
    key is then renamed ``applied_lr_scale`` (kept to be read): timm's schedulers multiply by any ``lr_scale`` they
    find on every update, which would apply it a second time.
    """
    for group in optimizer.param_groups:
        scale = group.pop("lr_scale", None)
        if scale is not None:
            group["lr"] = group["lr"] * scale
            group["applied_lr_scale"] = scale


def resolve_classes(task: str, num_classes: int | None, class_names: list[str] | None) -> tuple[int, list[str]]:
    """``(num_classes, class_names)`` from whichever was given (names default to ``"0"``, ``"1"``, ...)."""
    if num_classes is None and class_names is None:
        raise ValueError(f"{task} needs num_classes or class_names (normally linked from the data)")
    if num_classes is None:
        num_classes = len(class_names)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"num_classes={num_classes} but {len(class_names)} class_names were given")
    return num_classes, list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lit_vision")
    except PackageNotFoundError:
        return "unknown"


class VisionTask(LightningModule):
    """Base of :class:`ImageClassifier` and the other tasks.

    **Data contract.** The DataModule hands the task a :class:`~lit_vision.contracts.DataInfo` at the end of
    its ``setup`` (:meth:`connect_data`): class names, COCO category ids, ground truth, palette. The task keeps
    it as :attr:`data_info` (prediction writers read it there) and saves its small parts in the checkpoint,
    so a checkpoint alone still writes the right category ids and colours.

    **Prediction.** ``lit-vision predict`` adds the task's :attr:`prediction_writer` unless a writer is
    configured.

    Args:
        num_classes: number of classes (normally linked from the data; may be derived from ``class_names``).
        class_names: class names in label order (saved in the checkpoint, so a checkpoint predicts names).
        optimizer: builds the optimizer from parameter groups. ``None``: SGD, lr 0.1, momentum 0.9,
            Nesterov, weight decay 1e-4. torch's fused kernel is used wherever the optimizer and parameters allow
            it (SGD/Adam/AdamW/Adagrad on the CPU or CUDA) unless the YAML ``init_args`` set ``fused`` or
            ``foreach`` (:mod:`lit_vision.tasks.optim`, docs/gpu.md).
        lr_scheduler: builds the scheduler from the optimizer. ``None``: cosine annealing to 0 over the
            whole run, stepped every optimizer step (``T_max = trainer.estimated_stepping_batches``).
        lr_scheduler_interval: ``"step"`` or ``"epoch"``: how often a YAML-given scheduler steps
            (``ReduceLROnPlateau``: every epoch, on the task's ``monitor_metric``, whose direction its ``mode`` must
            match).
        lr_scheduler_span: ``"run"``: a YAML-given ``PolynomialLR``, ``CosineAnnealingLR`` or ``LinearLR`` gets the
            run's length (optimizer steps, ``trainer.estimated_stepping_batches``, or ``max_epochs`` for the epoch
            interval), whatever the devices, batch size and dataset; ``"as_given"``: its own ``total_iters`` /
            ``T_max``, with a warning when a decay does not span the run (:mod:`lit_vision.tasks.schedule`).
        no_weight_decay_norm_bias: put norm parameters, biases and other 1-D parameters in a group with
            ``weight_decay=0`` (the decay set on the optimizer applies to the rest).
        nonfinite: what a non-finite loss or gradient does (:class:`~lit_vision.callbacks.NonFiniteGuard`,
            attached by :meth:`configure_callbacks`; see ``docs/nonfinite.md``): ``"stop"`` the run with a message
            naming the step, loss terms and samples, before any checkpoint is written; ``"skip"`` up to
            ``max_nonfinite_skips`` bad steps (a warning each, one device sync per step), then stop; ``"off"``.
        max_nonfinite_skips: how many bad steps ``nonfinite="skip"`` drops before it stops.
        layer_decay: layer-wise learning-rate decay (BEiT / ConvNeXt fine-tuning; typical 0.65-0.85): backbone
            layer ``i`` of ``L`` trains at ``lr * layer_decay ** (L - i)``, the neck and heads at ``lr``. Layers are
            timm's own per-block numbering for timm backbones, else one per stage (``Backbone.module_stages``);
            see :mod:`lit_vision.backbones.layer_decay` and ``docs/fine_tuning.md``. ``None``: one lr for all.
        channels_last: keep the network's weights in ``channels_last`` (NHWC) memory format, what tensor cores want
            for convolutions under bf16/fp16 (``docs/gpu.md``). A convolution computes in its weight's format, so the
            first one converts the NCHW input batch once and every later activation is NHWC. Off: NCHW throughout.
        compile: ``torch.compile`` the network (``True``, or a dict of ``torch.compile`` keyword arguments such as
            ``{mode: max-autotune}``), once, when the Trainer starts (:meth:`configure_model`). It compiles in place
            (``nn.Module.compile``), so checkpoints keep the same keys with and without it.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        lr_scheduler_span: Literal["as_given", "run"] = "as_given",
        no_weight_decay_norm_bias: bool = True,
        nonfinite: Literal["stop", "skip", "off"] = "stop",
        max_nonfinite_skips: int = 10,
        layer_decay: float | None = None,
        channels_last: bool = False,
        compile: bool | dict[str, Any] = False,  # torch.compile's name: the recipe key reads as what it does
    ) -> None:
        super().__init__()
        self.num_classes, self.class_names = resolve_classes(type(self).__name__, num_classes, class_names)
        self.data_info = DataInfo(class_names=list(self.class_names))  # until a DataModule connects
        # Collects the subclass's arguments too (Lightning reads every __init__ frame of the chain); the CLI's
        # own config (class_path dicts) when built by LightningCLI.
        self.save_hyperparameters()
        self._drop_unserializable_hparams()
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        if lr_scheduler_span not in ("as_given", "run"):
            raise ValueError(f"lr_scheduler_span must be 'as_given' or 'run', got {lr_scheduler_span!r}")
        self.lr_scheduler_span = lr_scheduler_span
        self.no_weight_decay_norm_bias = no_weight_decay_norm_bias
        if nonfinite not in ("stop", "skip", "off"):
            raise ValueError(f"nonfinite must be 'stop', 'skip' or 'off', got {nonfinite!r}")
        self.nonfinite = nonfinite
        self.max_nonfinite_skips = max_nonfinite_skips
        if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1] or None, got {layer_decay!r}")
        self.layer_decay = layer_decay
        self.channels_last = channels_last
        # Not ``self.compile``: that would hide nn.Module.compile, which configure_model calls.
        self.compile_options: dict[str, Any] | None = (dict(compile) if isinstance(compile, dict)
                                                       else {} if compile else None)
        self._model_configured = False
        # The last training step's named loss terms (detached), set by the tasks' training_step: the
        # non-finite guard names them in its message.
        self.loss_terms: dict[str, torch.Tensor] = {}
        # stage -> the last evaluation's per-class table / confusion matrix / PR curves, set at the end of each
        # validation or test epoch for the pictures callback (callbacks/pictures.py) and for notebooks.
        self.eval_reports: dict[str, EvalReport] = {}

    prediction_writer: ClassVar[type[BasePredictionWriter]] = JsonlPredictionWriter
    monitor_metric: ClassVar[str | None] = None
    # How ``--ckpt_path`` treats a setting the user gives (docs/checkpoints.md): inference-time settings are expected
    # to differ from the checkpoint's and win; one that defines the network (dotted names cover an architecture's
    # options: "architecture" covers "architecture.fpn_channels") must equal the checkpoint's. A subclass extends
    # both with ``|``. Other given settings (optimizer, loss weights) win too: they do not change the weights' meaning.
    inference_args: ClassVar[frozenset[str]] = frozenset()
    network_args: ClassVar[frozenset[str]] = frozenset({"num_classes", "class_names"})
    class_names: list[str]
    data_info: DataInfo  # what the data told this task (plus what its checkpoint kept)

    # Arguments that only say where the initial weights come from: a checkpoint's tensors replace them, so
    # ``--ckpt_path`` turns them off (no download, no file needed on the machine that predicts).
    init_weight_args: ClassVar[dict[str, Any]] = {"pretrained": False, "weights": None}
    weights_report: Any = None  # what ``weights`` loaded (lit_vision.models.weights.WeightsReport)

    @property
    def backbone(self) -> nn.Module:
        """The registry backbone: what ``freeze_backbone``, layer-wise LR decay and Lightning's
        ``BackboneFinetuning`` callback act on."""
        return self.model.backbone

    def load_weights(self, weights: str | None, freeze_backbone: bool = False) -> None:
        """Initialise the whole model from a full model's file (see :mod:`lit_vision.models.weights`), then
        freeze the backbone if asked (after loading, so the frozen statistics are the loaded ones)."""
        if weights:
            from lightning.pytorch.utilities import rank_zero_info

            from lit_vision.models.weights import load_model_weights

            self.weights_report = load_model_weights(self.model, weights)
            rank_zero_info(self.weights_report.summary())
        if freeze_backbone:
            self.backbone.freeze()

    def connect_data(self, info: DataInfo) -> None:
        """Receive what the DataModule knows (called by it at the end of ``setup``); check the classes agree."""
        if info.class_names and list(info.class_names) != list(self.class_names):
            raise ValueError(f"{type(self).__name__} was built for the classes {self.class_names} but the data has "
                             f"{list(info.class_names)}: use the DataModule it was trained with (or --data.class_names)")
        self.data_info = info.fill_from(self.data_info)  # what a checkpoint kept fills what this data cannot say

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is not None and self.trainer.state.fn == "fit":
            checkpoint[resume.KEY] = resume.capture(self)  # random/metric state: an exact resume (lit_vision/resume.py)
        info = self.data_info
        checkpoint["lit_vision_data_info"] = {"label_to_category_id": info.label_to_category_id,
                                              "palette": info.palette, "ignore_index": info.ignore_index,
                                              "normalize": info.extra.get("normalize")}
        # What the file is, so ``--ckpt_path`` can refuse a foreign file or another task's before any work.
        checkpoint["lit_vision"] = {"version": _package_version(),
                                    "task": f"{type(self).__module__}.{type(self).__qualname__}"}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved_resume = checkpoint.get(resume.KEY)
        self._resume = resume.Restorer(saved_resume) if saved_resume else None
        saved = checkpoint.get("lit_vision_data_info")
        if saved:
            # Lightning may have set the data up already (predict --ckpt_path restores after setup): either way,
            # the checkpoint fills only what the current data did not say.
            mapping = saved.get("label_to_category_id")
            self.data_info.fill_from(DataInfo(
                class_names=list(self.class_names), palette=saved.get("palette"), ignore_index=saved.get("ignore_index"),
                label_to_category_id={int(k): int(v) for k, v in mapping.items()} if mapping else None))
            if saved.get("normalize") is not None:  # what the training data was normalised with (pictures, export)
                self.data_info.extra.setdefault("normalize", tuple(list(v) for v in saved["normalize"]))

    _resume: resume.Restorer | None = None

    # ------------------------------------------------------------------ the GPU path (docs/gpu.md)
    def configure_model(self) -> None:
        """``channels_last`` and ``compile``, once: Lightning calls this at every ``fit``/``validate``/... before it
        moves the model to the device and before a checkpoint's weights are loaded (``copy_`` keeps the format)."""
        if self._model_configured:
            return
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.compile_options is not None:
            self.model.compile(**self.compile_options)  # in place: no ``_orig_mod.`` prefix in the state dict
        self._model_configured = True

    def on_train_start(self) -> None:
        """A resumed run gets the interrupted run's random and metric states back here, just before its first step."""
        if self._resume is not None:
            self._resume.on_train_start(self)

    def on_before_backward(self, loss: torch.Tensor) -> None:
        if self._resume is not None:
            self._resume.after_first_log(self)

    def _drop_unserializable_hparams(self) -> None:
        """Callables given from Python (not from the CLI, which stores their config) can't be checkpointed."""
        for key in ("optimizer", "lr_scheduler"):
            if key in self.hparams and not isinstance(self.hparams[key], (dict, str, type(None))):
                del self.hparams[key]

    def configure_callbacks(self) -> list[Callback]:
        """The non-finite guard (``nonfinite``), on by default so that a Python ``Trainer`` and the CLI both get it.

        Lightning replaces trainer callbacks of the same type with these: a :class:`NonFiniteGuard` the user
        configured (``--trainer.callbacks+=NonFiniteGuard``) is left in place instead. Subclasses that add
        callbacks should extend ``super().configure_callbacks()``.
        """
        configured = self._trainer.callbacks if self._trainer is not None else []
        if self.nonfinite == "off" or any(isinstance(c, NonFiniteGuard) for c in configured):
            return []
        return [NonFiniteGuard(mode=self.nonfinite, max_skips=self.max_nonfinite_skips)]

    # ------------------------------------------------------------------ pictures (callbacks/pictures.py)
    def picture(self, batch: Any, outputs: Any, index: int) -> Any:
        """Item ``index`` of an evaluated batch as a picture with ground truth and prediction
        (:mod:`lit_vision.visualize.pictures`), from what ``validation_step``/``test_step`` returned (``outputs``),
        so drawing needs no second forward pass. ``None``: this task draws no pictures.

        ``outputs["errors"]`` (one value per item, higher = worse) is what the worst-k panel ranks by.
        """
        return None

    def display_image(self, image: torch.Tensor) -> torch.Tensor:
        """A model input as ``uint8 [3, H, W]``: the data's normalisation undone (the DataModules say which they
        used as ``DataInfo.extra["normalize"] = (mean, std)``; ImageNet's if one does not)."""
        mean, std = self.data_info.extra.get("normalize", (IMAGENET_MEAN, IMAGENET_STD))
        return to_uint8(image, mean, std)

    def input_normalization(self) -> tuple[list[float], list[float]] | None:
        """The ``(mean, std)`` the backbone's pretrained weights expect (ImageNet's for ``tv/``, timm's
        ``pretrained_cfg`` for ``timm/``: :func:`~lit_vision.backbones.pretrained_config`), what a DataModule not
        given ``mean``/``std`` normalises with (:class:`~lit_vision.contracts.NormalizationSource`). ``None`` for a
        backbone outside the registry (the classic U-Net encoder): the data then uses ImageNet's."""
        from lit_vision.backbones import input_normalization

        return input_normalization(self.backbone)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Parameter groups handed to the optimizer: trainable parameters only (a frozen backbone stays out, and
        :class:`~lit_vision.callbacks.BackboneUnfreezing` adds its groups when it unfreezes it), split by weight
        decay and, with ``layer_decay``, by backbone layer (groups carry an ``lr_scale``). Override for other
        schemes."""
        groups = self.weight_decay_groups()
        if self.layer_decay is not None:
            from lit_vision.backbones.layer_decay import layer_decay_groups

            groups = layer_decay_groups(groups, self.backbone, self.layer_decay)
        return groups

    def weight_decay_groups(self, params: Iterable[nn.Parameter] | None = None) -> list[dict[str, Any]]:
        """``params`` (default: every trainable parameter) split by the weight-decay rule: with
        ``no_weight_decay_norm_bias``, norms, biases and 1-D parameters in a group of ``weight_decay=0``. Also what
        :class:`~lit_vision.callbacks.BackboneUnfreezing` adds a backbone with when it unfreezes it."""
        wanted = None if params is None else {id(p) for p in params}
        if self.no_weight_decay_norm_bias:
            decay, no_decay = split_decay_parameters(self)
            groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        else:
            groups = [{"params": [p for p in self.parameters() if p.requires_grad]}]
        if wanted is not None:
            groups = [{**g, "params": [p for p in g["params"] if id(p) in wanted]} for g in groups]
        return [g for g in groups if g["params"]]

    def configure_optimizers(self) -> Any:
        # Lightning refuses to clip gradients under 16-mixed *and* bf16-mixed when the optimizer unscales them itself,
        # as the fused kernels can (MixedPrecision.clip_gradients): the YOLO recipes (bf16, clipped) failed at step 1.
        trainer = self._trainer  # None when called without one (tests, notebooks)
        mixed = isinstance(getattr(trainer, "precision_plugin", None), MixedPrecision)
        clipped = bool(getattr(trainer, "gradient_clip_val", None))
        optimizer = build_optimizer(self.optimizer_factory, self.parameter_groups(),
                                    allow_fused=not (mixed and clipped))
        apply_lr_scales(optimizer)  # before the scheduler records each group's initial lr
        if trainer is not None:
            from lit_vision.callbacks.finetuning import warn_lightning_backbone_finetuning

            warn_lightning_backbone_finetuning(getattr(trainer, "callbacks", []))
        if self.lr_scheduler_factory is None:
            total = max(1, int(self.trainer.estimated_stepping_batches))
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
            interval = "step"
        else:
            scheduler = self.lr_scheduler_factory(optimizer)
            interval = self.lr_scheduler_interval
            if trainer is not None or self.lr_scheduler_span == "run":
                if interval == "step":
                    steps = self.trainer.estimated_stepping_batches  # inf for a run without max_epochs / max_steps
                    run, unit = (int(steps) if steps != float("inf") else -1), "optimizer steps"
                else:
                    run, unit = int(self.trainer.max_epochs or -1), "epochs"
                fit_schedule_length(scheduler, run, unit, self.lr_scheduler_span == "run")
        config: dict[str, Any] = {"scheduler": scheduler, "interval": interval}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            # It acts on a validation metric, which exists once per epoch; the tasks' metrics grow as they improve.
            monitor = self.monitor_metric or "val/loss"
            mode = "min" if monitor.endswith("loss") else "max"
            if scheduler.mode != mode:
                raise ValueError(f"ReduceLROnPlateau watches {monitor}, which {'falls' if mode == 'min' else 'grows'} "
                                 f"as the model improves: set its mode to {mode!r} (got {scheduler.mode!r}), or it "
                                 "cuts the learning rate while the model gets better")
            config.update(monitor=monitor, interval="epoch")
        return {"optimizer": optimizer, "lr_scheduler": config}
