"""The figures of :mod:`lit_vision.visualize.plots` show the numbers they are given.

Each test reads the data back from the matplotlib artists (image arrays, line data, bar widths, texts)
and compares it with values computed by hand, and checks that the PNG written is a real picture.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from lit_vision.visualize.plots import (
    confusion_matrix_figure,
    counts_figure,
    figure_to_uint8,
    histogram_figure,
    metric_curves_figure,
    normalize_confusion,
    order_metrics,
    per_class_bar_figure,
    pr_curves_figure,
    save_figure,
)

CONFUSION = [[3, 1, 0],
             [0, 0, 0],   # no sample of class 1: the row stays 0, not NaN
             [2, 2, 4]]  # fmt: skip
# by hand: each row divided by its total (4, 0, 8)
CONFUSION_NORMALISED = [[0.75, 0.25, 0.0],
                        [0.0, 0.0, 0.0],
                        [0.25, 0.25, 0.5]]  # fmt: skip


def assert_png(path: Path, min_width: int = 200, min_height: int = 150) -> None:
    """A decodable PNG of plausible size that is not a blank canvas."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.width >= min_width and image.height >= min_height, image.size
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 10  # axes, text and data drawn, not one flat colour


def texts_of(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_confusion_matrix_is_normalised_by_true_class(tmp_path: Path) -> None:
    fig = confusion_matrix_figure(torch.tensor(CONFUSION), ["cat", "dog", "eel"])
    ax = fig.axes[0]
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), CONFUSION_NORMALISED)
    assert texts_of(ax) == ["0.75", "0.25", "0.00", "0.00", "0.00", "0.00", "0.25", "0.25", "0.50"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "eel"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "eel"]
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"
    assert len(fig.axes) == 2  # the matrix and its colorbar
    assert_png(save_figure(fig, tmp_path / "cm.png"))


def test_confusion_matrix_counts_and_numpy_input() -> None:
    fig = confusion_matrix_figure(np.array(CONFUSION), ["a", "b", "c"], normalize=False, title="counts")
    ax = fig.axes[0]
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), CONFUSION)
    assert texts_of(ax) == ["3", "1", "0", "0", "0", "0", "2", "2", "4"]
    assert ax.get_title() == "counts"


def test_normalize_confusion_leaves_empty_rows_zero() -> None:
    out = normalize_confusion(np.array(CONFUSION, dtype=np.int64))
    np.testing.assert_allclose(out, CONFUSION_NORMALISED)
    assert not np.isnan(out).any()


def test_large_confusion_matrix_is_not_annotated_and_size_is_capped() -> None:
    k = 40
    fig = confusion_matrix_figure(torch.eye(k), [f"c{i}" for i in range(k)])
    assert texts_of(fig.axes[0]) == []
    width, height = fig.get_size_inches()
    assert width <= 16 and height <= 16
    small = confusion_matrix_figure(torch.eye(3), list("abc")).get_size_inches()
    assert width > small[0]  # grows with the number of classes


def test_confusion_matrix_rejects_mismatched_names() -> None:
    with pytest.raises(ValueError, match="K = len"):
        confusion_matrix_figure(torch.eye(3), ["a", "b"])


def test_ten_class_confusion_renders_quickly() -> None:
    names = [f"class_{i}" for i in range(10)]
    figure_to_uint8(confusion_matrix_figure(torch.ones(10, 10), names))  # warm up fonts and imports
    start = time.perf_counter()
    figure_to_uint8(confusion_matrix_figure(torch.arange(100).view(10, 10), names))
    assert time.perf_counter() - start < 5.0  # well under a second on a normal CPU; loose for slow CI


def test_pr_curves_skip_classes_without_ground_truth(tmp_path: Path) -> None:
    recall = np.array([0.0, 0.5, 1.0])
    precision = np.array([[1.0, 0.8, 0.5],
                          [-1.0, -1.0, -1.0],  # class "b" has no ground truth
                          [0.9, 0.6, 0.2]])  # fmt: skip
    fig = pr_curves_figure(recall, precision, ["a", "b", "c"], ap=[0.766, -1.0, 0.574])
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["a (AP 0.77)", "c (AP 0.57)"]
    np.testing.assert_allclose(ax.lines[0].get_xdata(), recall)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [1.0, 0.8, 0.5])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.9, 0.6, 0.2])
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim()[0] == 0.0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a (AP 0.77)", "c (AP 0.57)"]
    assert_png(save_figure(fig, tmp_path / "pr.png"))


def test_pr_curves_without_ap_use_plain_names() -> None:
    fig = pr_curves_figure(np.linspace(0, 1, 5), np.ones((2, 5)), ["x", "y"])
    assert [line.get_label() for line in fig.axes[0].lines] == ["x", "y"]


def test_per_class_bars_skip_nan(tmp_path: Path) -> None:
    values = {"AP": [0.5, float("nan"), 0.25], "AP50": [0.75, 0.5, 1.0]}
    fig = per_class_bar_figure(["cat", "dog", "eel"], values, "AP per class")
    ax = fig.axes[0]
    ap, ap50 = ax.containers
    assert [bar.get_width() for bar in ap] == [0.5, 0.25]  # dog's NaN bar is not drawn
    assert [bar.get_width() for bar in ap50] == [0.75, 0.5, 1.0]
    # cat's bars sit at y ~ 0, eel's at y ~ 2: one group per class
    assert all(abs(bar.get_y() + bar.get_height() / 2 - 0) < 0.5 for bar in (ap[0], ap50[0]))
    assert all(abs(bar.get_y() + bar.get_height() / 2 - 2) < 0.5 for bar in (ap[1], ap50[2]))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "eel"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["AP", "AP50"]
    assert_png(save_figure(fig, tmp_path / "bars.png"))


def test_histogram_counts(tmp_path: Path) -> None:
    fig = histogram_figure([1, 2, 2, 3, 3, 3, float("nan")], [0.5, 1.5, 2.5, 3.5], "sizes", "pixels")
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [1, 2, 3]
    assert ax.get_xlabel() == "pixels" and ax.get_title() == "sizes"
    assert_png(save_figure(fig, tmp_path / "hist.png"))


def test_histogram_log_x_spaces_bins_geometrically() -> None:
    fig = histogram_figure(np.array([1.0, 10.0, 100.0, 1000.0, 0.0]), 3, "areas", "px", log_x=True)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    # edges 1, 10, 100, 1000 (the 0 cannot be on a log axis); numpy's last bin includes its right edge
    assert [p.get_height() for p in ax.patches] == [1, 1, 2]
    np.testing.assert_allclose([p.get_x() for p in ax.patches], [1.0, 10.0, 100.0])


def test_counts_figure_prints_values(tmp_path: Path) -> None:
    fig = counts_figure({"cat": 1200, "dog": 30}, "images per class")
    ax = fig.axes[0]
    assert [bar.get_width() for bar in ax.patches] == [1200, 30]
    assert texts_of(ax) == ["1,200", "30"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog"]
    assert ax.get_xlabel() == "count"
    assert_png(save_figure(fig, tmp_path / "counts.png"))


def test_figure_to_uint8_shape_dtype_and_pixels() -> None:
    fig = Figure(figsize=(2, 1), dpi=72, facecolor=(1.0, 0.0, 0.0))
    image = figure_to_uint8(fig, dpi=50)
    assert image.shape == (3, 50, 100) and image.dtype == torch.uint8
    assert image[0].eq(255).all() and image[1:].eq(0).all()  # the red face colour, RGB order
    assert fig.dpi == 72  # the figure's own resolution is restored


def test_save_figure_creates_folders(tmp_path: Path) -> None:
    fig = counts_figure({"a": 1}, "one")
    out = save_figure(fig, tmp_path / "deep" / "er" / "fig.png", dpi=50)
    assert out == tmp_path / "deep" / "er" / "fig.png"
    with Image.open(out) as image:
        width, height = fig.get_size_inches()
        assert image.size == (round(width * 50), round(height * 50))


RUNS = {
    "exp/version_0": {
        "train/loss": [(0.0, 2.0), (10.0, 1.5), (20.0, 1.0)],
        "val/acc1": [(9.0, 0.4), (19.0, 0.6)],
        "lr": [(0.0, 0.1)],
    },
    "exp/version_1": {
        "train/loss": [(0.0, 2.5), (10.0, 2.0)],
        "train/acc1": [(10.0, 0.3)],
    },
}


def test_order_metrics() -> None:
    assert order_metrics(["lr", "val/b", "train/z", "val/a", "epoch_time", "train/a", "lr"]) == [
        "train/a", "train/z", "val/a", "val/b", "epoch_time", "lr"]


def test_metric_curves_one_axes_per_metric_one_line_per_run(tmp_path: Path) -> None:
    fig = metric_curves_figure(RUNS)
    assert [ax.get_title() for ax in fig.axes] == ["train/acc1", "train/loss", "val/acc1", "lr"]
    by_title = {ax.get_title(): ax for ax in fig.axes}
    for title, ax in by_title.items():
        runs_with_metric = [label for label, series in RUNS.items() if title in series]
        assert [line.get_label() for line in ax.lines] == runs_with_metric
        for line in ax.lines:
            points = RUNS[line.get_label()][title]
            assert list(line.get_xdata()) == [p[0] for p in points]
            assert list(line.get_ydata()) == [p[1] for p in points]
        assert ax.get_xlabel() == "step"
    # a run has one colour on every subplot, and the runs differ
    colours = {(ax.get_title(), line.get_label()): line.get_color() for ax in fig.axes for line in ax.lines}
    assert colours[("train/loss", "exp/version_0")] == colours[("val/acc1", "exp/version_0")]
    assert colours[("train/loss", "exp/version_1")] == colours[("train/acc1", "exp/version_1")]
    assert colours[("train/loss", "exp/version_0")] != colours[("train/loss", "exp/version_1")]
    # one figure legend, no per-axes legends; a 3-column grid (the 4th metric starts row 2)
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["exp/version_0", "exp/version_1"]
    spec = by_title["lr"].get_subplotspec()
    assert (spec.rowspan.start, spec.colspan.start) == (1, 0)
    assert_png(save_figure(fig, tmp_path / "curves.png"))


def test_metric_curves_selected_metrics_and_x_label() -> None:
    fig = metric_curves_figure(RUNS, metrics=["val/acc1"], x="epoch")
    assert len(fig.axes) == 1 and fig.axes[0].get_xlabel() == "epoch"
    (line,) = fig.axes[0].lines
    assert list(line.get_ydata()) == [0.4, 0.6]
    assert math.isclose(line.get_xdata()[-1], 19.0)
