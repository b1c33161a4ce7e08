"""``lit-vision plot``: training and validation curves of one or more runs, from CSVLogger's ``metrics.csv``.

A dashboard is not always at hand (a cluster without port forwarding, a run copied home); the CSV every
run writes is. Several runs are overlaid in the same colours on every subplot, to compare recipes. Only the
``csv`` module and matplotlib are used: no pandas, no torch, so the command starts quickly.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

METRICS_FILE = "metrics.csv"
X_COLUMNS = ("epoch", "step")
DEFAULT_OUTPUT = "curves.png"


class PlotError(Exception):
    """A bad input, reported as one line and exit code 2."""


def _number(text: str | None) -> float | None:
    """``text`` as a finite float, or None for an empty cell, a non-numeric value, NaN or infinity."""
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_metrics(path: str | Path, x: str = "step") -> dict[str, list[tuple[float, float]]]:
    """``{metric: [(x, value), ...]}`` from a CSVLogger ``metrics.csv``, in file order.

    CSVLogger writes one column per metric plus ``epoch`` and ``step``, and each row fills only the
    metrics logged at that moment, so a metric's series is the rows where its cell is non-empty (and
    numeric, and the ``x`` cell too). Metrics without a single value are left out.
    """
    if x not in X_COLUMNS:
        raise ValueError(f"x must be one of {X_COLUMNS}, got {x!r}")
    series: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise PlotError(f"{path} is empty (no header row)")
        if x not in reader.fieldnames:
            raise PlotError(f"{path} has no '{x}' column (columns: {', '.join(reader.fieldnames)})")
        names = [name for name in reader.fieldnames if name and name not in X_COLUMNS]
        for row in reader:
            x_value = _number(row.get(x))
            if x_value is None:
                continue
            for name in names:
                value = _number(row.get(name))
                if value is not None:
                    series.setdefault(name, []).append((x_value, value))
    return series


def find_metric_files(run_dir: str | Path) -> list[Path]:
    """The ``metrics.csv`` files a RUN_DIR argument names: the file itself, the version dir holding it, or
    every ``metrics.csv`` below a parent dir (sorted, so the colours do not change between calls)."""
    path = Path(run_dir)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise PlotError(f"{run_dir} does not exist")
    if (path / METRICS_FILE).is_file():
        return [path / METRICS_FILE]
    found = sorted(p for p in path.rglob(METRICS_FILE) if p.is_file())
    if not found:
        raise PlotError(f"no {METRICS_FILE} found in {run_dir} (expected a CSVLogger run dir such as "
                        f"runs/<name>/version_0)")
    return found


def run_labels(files: list[Path]) -> list[str]:
    """The shortest distinguishing trailing path of each run (at least ``name/version_N``), e.g.
    ``quickstart/version_0`` and ``quickstart/version_1``; the same depth for every run."""
    runs = [(f.parent if f.name == METRICS_FILE else f.with_suffix("")).resolve() for f in files]
    parts = [r.parts[1:] or r.parts for r in runs]  # without the filesystem root
    longest = max(len(p) for p in parts)
    for depth in range(min(2, longest), longest + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(r) for r in runs]


def _default_output(first: str) -> Path:
    path = Path(first)
    return Path(DEFAULT_OUTPUT) if path.is_file() else path / DEFAULT_OUTPUT


def _collect(run_dirs: list[str], x: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{label: {metric: points}}`` of every run the arguments name; a file named twice counts once."""
    files: list[Path] = []
    for run_dir in run_dirs:
        for file in find_metric_files(run_dir):
            if file.resolve() not in {f.resolve() for f in files}:
                files.append(file)
    runs = {}
    for label, file in zip(run_labels(files), files, strict=True):
        try:
            runs[label] = read_metrics(file, x=x)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise PlotError(f"cannot read {file}: {' '.join(str(err).split())}") from err
    return runs


def plot(argv: list[str], debug: bool = False) -> int:
    """``lit-vision plot``: draw the curves of the runs to a PNG; 0 on success, 2 with one line on stderr."""
    parser = argparse.ArgumentParser(
        prog="lit-vision plot",
        description="Draw training/validation curves of runs from CSVLogger's metrics.csv to a PNG. "
                    "Several runs are overlaid, one colour each.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="a run's version dir (runs/quickstart/version_0), its metrics.csv, or a parent "
                             "dir (runs/quickstart: every metrics.csv below it)")
    parser.add_argument("-o", "--output", help=f"PNG to write (default: <first RUN_DIR>/{DEFAULT_OUTPUT})")
    parser.add_argument("--metrics", nargs="+", metavar="METRIC",
                        help="metrics to draw, e.g. val/acc1 train/loss_step (default: all)")
    parser.add_argument("--x", choices=X_COLUMNS, default="step", help="x axis (default: step)")
    parser.add_argument("--dpi", type=int, default=100, help="resolution of the PNG (default: 100)")
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        print(f"lit-vision plot: error: {message}", file=sys.stderr)
        return 2

    try:
        runs = _collect(args.run_dirs, args.x)
        found = {name for series in runs.values() for name in series}
        if not found:
            raise PlotError(f"no numeric metric values in {', '.join(args.run_dirs)}")
        if args.metrics:
            missing = [m for m in args.metrics if m not in found]
            if missing:
                raise PlotError(f"metric(s) {', '.join(missing)} not in any run (available: "
                                f"{', '.join(sorted(found))})")
        from lit_vision.visualize.plots import (
            metric_curves_figure,
            order_metrics,
            save_figure,
        )

        metrics = list(dict.fromkeys(args.metrics)) if args.metrics else order_metrics(found)
        output = Path(args.output) if args.output else _default_output(args.run_dirs[0])
        figure = metric_curves_figure(runs, metrics=metrics, x=args.x)
        try:
            save_figure(figure, output, dpi=args.dpi)
        except OSError as err:
            raise PlotError(f"cannot write {output}: {' '.join(str(err).split())}") from err
    except PlotError as err:
        if debug:
            raise
        return fail(str(err))
    print(f"Curves written to {output}")
    print(f"  runs:    {', '.join(runs)}")
    print(f"  metrics: {', '.join(metrics)}")
    return 0
