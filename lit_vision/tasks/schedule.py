"""The length of a recipe's learning-rate schedule against the length of the run it is used in.

A decay written as a number of steps (``PolynomialLR.total_iters``, ``CosineAnnealingLR.T_max``) is right for one
count of devices, batch size, dataset and epochs only: a segmentation recipe written for 8 GPUs x 4 images ran on
one GPU with its learning rate at 0 from step 1,380 of 10,980 on, and nothing said so. The task therefore

* with ``lr_scheduler_span: run``, sets that length to the run's own (optimizer steps from
  ``trainer.estimated_stepping_batches`` for ``lr_scheduler_interval: step``, ``max_epochs`` for ``epoch``), so a
  recipe need not carry the number; and
* otherwise warns when a decaying schedule's length differs from the run's.

Written here because neither torch (a scheduler knows only the optimizer) nor Lightning (it steps whatever it is
given) relates the two.
"""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import lr_scheduler

__all__ = ["fit_schedule_length", "schedule_length_attribute"]

# Schedulers whose whole course is set by one length, read afresh at every step (so it can be set after
# construction: each returns the base lr at step 0 without reading it). OneCycleLR fixes its phases in __init__.
_LENGTHS: dict[type[lr_scheduler.LRScheduler], str] = {
    lr_scheduler.PolynomialLR: "total_iters",
    lr_scheduler.CosineAnnealingLR: "T_max",
    lr_scheduler.LinearLR: "total_iters",
}


def schedule_length_attribute(scheduler: object) -> str | None:
    """The attribute holding ``scheduler``'s length (``"total_iters"``, ``"T_max"``), or ``None``."""
    for cls, attribute in _LENGTHS.items():
        if isinstance(scheduler, cls):
            return attribute
    return None


def _decays_over_its_length(scheduler: object) -> bool:
    """Whether the schedule is meant to span the run: a decay, not a warm-up ramp (LinearLR going up)."""
    if isinstance(scheduler, lr_scheduler.LinearLR):
        return scheduler.end_factor < scheduler.start_factor
    return True


def fit_schedule_length(scheduler: object, run_length: int, unit: str, span_run: bool) -> None:
    """Set (``span_run``) or check ``scheduler``'s length against ``run_length`` (optimizer steps or epochs).

    Raises ``ValueError`` when ``span_run`` is asked of a scheduler without one length; warns when a decaying
    schedule's given length differs from the run's (a recipe written for another batch, device count or dataset).
    """
    attribute = schedule_length_attribute(scheduler)
    name = type(scheduler).__name__
    if span_run:
        if attribute is None:
            known = ", ".join(cls.__name__ for cls in _LENGTHS)
            raise ValueError(f"lr_scheduler_span: run sets the length of {known}; {name} has none to set "
                             "(give its own arguments and lr_scheduler_span: as_given)")
        if run_length < 1:
            raise ValueError(f"lr_scheduler_span: run needs a run of known length (max_epochs or max_steps), "
                             f"got {run_length} {unit}")
        setattr(scheduler, attribute, run_length)
        return
    if attribute is None or run_length < 1 or not _decays_over_its_length(scheduler):
        return
    given = int(getattr(scheduler, attribute))
    if given != run_length:
        where = (f"it reaches its final learning rate after {given} of the run's {run_length} {unit} and stays "
                 f"there for the last {100 * (run_length - given) / run_length:.0f} % of them" if given < run_length
                 else f"the run ends after {run_length} of its {given} {unit}, before it reaches its final learning "
                      "rate")
        rank_zero_warn(f"{name}({attribute}={given}) does not span this run: {where} (written for another batch "
                       f"size, device count or dataset?). model.init_args.lr_scheduler_span: run sets it to the run's "
                       f"length; set {attribute} to {run_length} to silence this.")
