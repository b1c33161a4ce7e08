"""Matplotlib figures of metrics: confusion matrices, PR curves, per-class bars, histograms, training curves.

Every figure is a bare :class:`matplotlib.figure.Figure` with an Agg canvas, never ``pyplot``: no global
figure registry to leak memory in a long run, no backend switch that would break a notebook's inline
plots, and safe to draw from a callback thread. :func:`figure_to_uint8` turns one into the ``uint8
[3, H, W]`` tensor the loggers and :mod:`lit_vision.visualize.draw` use; :func:`save_figure` writes a PNG.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

MAX_FIGURE_INCHES = 16.0
MAX_ANNOTATED_CLASSES = 30


def _new_figure(width: float, height: float) -> Figure:
    """A figure with its own Agg canvas and constrained layout (labels never clipped, no tight_layout)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(width, MAX_FIGURE_INCHES), min(height, MAX_FIGURE_INCHES)), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(n: int) -> list[Any]:
    """``n`` distinguishable colours: tab10 up to 10, tab20 up to 20, then evenly spaced hues."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


def _as_numpy(array: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """float64 numpy; torch is only looked up, never imported (``lit-vision plot`` does not need it)."""
    torch_module = sys.modules.get("torch")
    if torch_module is not None and isinstance(array, torch_module.Tensor):
        return array.detach().cpu().double().numpy()
    return np.asarray(array, dtype=np.float64)


def _empty_note(ax: Any, text: str = "no data") -> None:
    """An explicit note instead of a silently blank axes."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def normalize_confusion(confusion: torch.Tensor | np.ndarray) -> np.ndarray:
    """Each row divided by its total (the true-class count): row ``i`` is where class ``i`` went.

    A row with no samples stays all zero rather than becoming NaN.
    """
    matrix = _as_numpy(confusion)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def confusion_matrix_figure(confusion: torch.Tensor | np.ndarray, class_names: Sequence[str],
                            normalize: bool = True, title: str = "Confusion matrix") -> Figure:
    """Rows = true class, columns = predicted; normalised per row by default (recall on the diagonal)."""
    matrix = normalize_confusion(confusion) if normalize else _as_numpy(confusion)
    k = matrix.shape[0]
    if matrix.shape != (k, k) or len(class_names) != k:
        raise ValueError(f"confusion must be [K, K] with K = len(class_names) = {len(class_names)}, "
                         f"got {tuple(matrix.shape)}")
    side = max(4.0, 0.45 * k + 2.5)
    fig = _new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(matrix.max()), 1.0)
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(k)
    label_size = max(4.0, min(10.0, 200.0 / max(k, 1)))
    ax.set_xticks(ticks, labels=list(class_names), rotation=45, ha="right", rotation_mode="anchor",
                  fontsize=label_size)
    ax.set_yticks(ticks, labels=list(class_names), fontsize=label_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= MAX_ANNOTATED_CLASSES:
        size = max(5.0, min(10.0, 120.0 / max(k, 1)))
        for i in range(k):
            for j in range(k):
                value = matrix[i, j]
                text = f"{value:.2f}" if normalize else f"{value:g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=size,
                        color="white" if value > vmax / 2 else "black")
    return fig


def pr_curves_figure(recall: np.ndarray, precision: np.ndarray, class_names: Sequence[str],
                     title: str = "Precision-recall", ap: Sequence[float] | None = None) -> Figure:
    """One precision-recall curve per class; a class whose precision is all -1 had no ground truth: skipped.

    ``recall`` is ``[R]`` (e.g. COCO's 101 thresholds), ``precision`` ``[K, R]``.
    """
    recall = _as_numpy(recall)
    precision = _as_numpy(precision)
    if precision.ndim != 2 or precision.shape != (len(class_names), recall.shape[0]):
        raise ValueError(f"precision must be [K={len(class_names)}, R={recall.shape[0]}], "
                         f"got {tuple(precision.shape)}")
    k = len(class_names)
    fig = _new_figure(7.0 if k <= 20 else 9.0, 5.0)
    ax = fig.add_subplot()
    colors = _colors(k)
    drawn = 0
    for i, name in enumerate(class_names):
        row = precision[i]
        if np.all(row < 0):
            continue
        row = np.where(row < 0, np.nan, row)  # a stray -1 is "undefined", not zero precision
        label = str(name) if ap is None else f"{name} (AP {float(ap[i]):.2f})"
        ax.plot(recall, row, color=colors[i], label=label, linewidth=1.5)
        drawn += 1
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8 if drawn <= 20 else 6,
                  ncols=1 if drawn <= 25 else 2)
    else:
        _empty_note(ax, "no class has ground truth")
    return fig


def per_class_bar_figure(class_names: Sequence[str], values: dict[str, Sequence[float]], title: str) -> Figure:
    """Grouped horizontal bars: one group per class (first class on top), one bar per metric; NaN skipped."""
    k, m = len(class_names), max(len(values), 1)
    for metric, vals in values.items():
        if len(vals) != k:
            raise ValueError(f"values[{metric!r}] has {len(vals)} entries for {k} classes")
    fig = _new_figure(7.0, max(2.5, 0.25 * k * (m + 0.5) + 1.5))
    ax = fig.add_subplot()
    height = 0.8 / m
    colors = _colors(m)
    positions = np.arange(k, dtype=np.float64)
    for j, (metric, vals) in enumerate(values.items()):
        array = _as_numpy(vals)
        finite = ~np.isnan(array)
        # first metric on top of each group, like the legend order
        ys = positions - 0.4 + height * (j + 0.5)
        ax.barh(ys[finite], array[finite], height=height, color=colors[j], label=metric)
    ax.set_yticks(positions, labels=list(class_names), fontsize=max(5.0, min(10.0, 300.0 / max(k, 1))))
    ax.set_ylim(k - 0.5, -0.5)  # inverted: the first class at the top
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if values:
        ax.legend(loc="best", fontsize=8)
    else:
        _empty_note(ax)
    return fig


def histogram_figure(values: Sequence[float] | np.ndarray, bins: int | Sequence[float], title: str,
                     xlabel: str, log_x: bool = False) -> Figure:
    """Histogram of the finite values; ``log_x`` puts integer ``bins`` evenly on a log scale (sizes, areas)."""
    array = _as_numpy(values).ravel()
    array = array[np.isfinite(array)]
    if log_x:
        array = array[array > 0]
    fig = _new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    if array.size == 0:
        _empty_note(ax, "no values")
        return fig
    edges: int | np.ndarray = bins if isinstance(bins, int) else np.asarray(bins, dtype=np.float64)
    if log_x and isinstance(bins, int):
        low, high = float(array.min()), float(array.max())
        edges = np.geomspace(low, high if high > low else low * 10.0, bins + 1)
    ax.hist(array, bins=edges, color="#4C72B0", edgecolor="white", linewidth=0.5)
    if log_x:
        ax.set_xscale("log")
    return fig


def counts_figure(counts: dict[str, int], title: str, xlabel: str = "count") -> Figure:
    """Horizontal bars of named counts (first on top), each value printed at its bar's end."""
    names, numbers = list(counts), [counts[name] for name in counts]
    fig = _new_figure(7.0, max(2.5, 0.3 * len(names) + 1.5))
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if not names:
        _empty_note(ax)
        return fig
    positions = np.arange(len(names))
    bars = ax.barh(positions, numbers, color="#4C72B0")
    ax.bar_label(bars, labels=[f"{n:,}" for n in numbers], padding=3, fontsize=8)
    ax.set_yticks(positions, labels=names, fontsize=max(5.0, min(10.0, 300.0 / len(names))))
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlim(0, max(max(numbers), 1) * 1.15)  # room for the printed values
    return fig


def figure_to_uint8(fig: Figure, dpi: int = 100) -> torch.Tensor:
    """The figure rendered at ``dpi`` as ``uint8 [3, H, W]`` RGB (alpha dropped), for loggers and grids."""
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    old_canvas = fig.canvas
    canvas = old_canvas if isinstance(old_canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    old_dpi = fig.dpi
    try:
        fig.dpi = dpi
        canvas.draw()
        rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    finally:
        fig.dpi = old_dpi
        if canvas is not old_canvas:  # a pyplot figure keeps its own (GUI) canvas
            fig.set_canvas(old_canvas)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure as PNG (parent folders created); the figure stays usable and nothing global closes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def order_metrics(names: Iterable[str]) -> list[str]:
    """train/* first, then val/*, then the rest; alphabetical within each (duplicates dropped)."""
    def key(name: str) -> tuple[int, str]:
        return (0 if name.startswith("train/") else 1 if name.startswith("val/") else 2), name

    return sorted(set(names), key=key)


def metric_curves_figure(runs: dict[str, dict[str, list[tuple[float, float]]]],
                         metrics: Sequence[str] | None = None, x: str = "step") -> Figure:
    """One subplot per metric (3 columns), one line per run in the same colour everywhere, one legend.

    ``runs`` is ``{run label: {metric: [(x, y), ...]}}``; ``metrics`` defaults to every metric of any run.
    """
    if metrics is None:
        metrics = order_metrics(name for series in runs.values() for name in series)
    metrics = list(metrics)
    n = max(len(metrics), 1)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(4.6 * ncols, 3.2 * nrows + 0.6)
    colors = dict(zip(runs, _colors(len(runs)), strict=True))
    handles: dict[str, Any] = {}
    if not metrics:
        _empty_note(fig.add_subplot(), "no metrics")
        return fig
    for index, metric in enumerate(metrics):
        ax = fig.add_subplot(nrows, ncols, index + 1)
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
        for label, series in runs.items():
            points = series.get(metric)
            if not points:
                continue
            xs = [float(p[0]) for p in points]
            ys = [float(p[1]) for p in points]
            # markers make a short series (one value per epoch) readable; a long one would be cluttered
            (line,) = ax.plot(xs, ys, color=colors[label], label=label, linewidth=1.3,
                              marker="o" if len(points) <= 30 else None, markersize=3)
            handles.setdefault(label, line)
        if not ax.lines:
            _empty_note(ax)
    if handles:
        handles = {label: handles[label] for label in runs if label in handles}  # in run order
        fig.legend(list(handles.values()), list(handles), loc="outside upper center",
                   ncols=min(len(handles), 4), fontsize=9)
    return fig


__all__ = [
    "confusion_matrix_figure",
    "counts_figure",
    "figure_to_uint8",
    "histogram_figure",
    "metric_curves_figure",
    "normalize_confusion",
    "order_metrics",
    "per_class_bar_figure",
    "pr_curves_figure",
    "save_figure",
]
