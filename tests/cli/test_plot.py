"""``lit-vision plot``: curves from hand-written CSVLogger ``metrics.csv`` files.

The CSVs below have the layout Lightning's CSVLogger writes (sorted header, ``epoch`` and ``step`` columns,
each row filling only the metrics logged at that moment); the expected series are read off them by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import lit_vision.visualize.plots as plots
from lit_vision.cli import main
from lit_vision.cli.plot import plot, read_metrics, run_labels

RUN0 = """epoch,lr-SGD,step,train/loss_epoch,train/loss_step,val/acc1
0,0.1,0,,2.0,
0,,1,,1.5,
0,,1,,,0.25
0,,1,1.75,,
1,,2,,1.0,
1,,3,,0.5,
1,,3,,,n/a
1,,3,,,0.75
1,,3,0.75,,
"""
RUN1 = """epoch,step,train/loss_step,val/acc1
0,0,3.0,
0,1,,0.5
1,2,2.0,
1,3,nan,
1,3,,0.625
"""
RUN0_BY_STEP = {
    "lr-SGD": [(0.0, 0.1)],
    "train/loss_epoch": [(1.0, 1.75), (3.0, 0.75)],
    "train/loss_step": [(0.0, 2.0), (1.0, 1.5), (2.0, 1.0), (3.0, 0.5)],
    "val/acc1": [(1.0, 0.25), (3.0, 0.75)],  # the "n/a" cell is skipped
}
RUN1_BY_STEP = {"train/loss_step": [(0.0, 3.0), (2.0, 2.0)],  # the nan loss is skipped
                "val/acc1": [(1.0, 0.5), (3.0, 0.625)]}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """``runs/exp/version_{0,1}/metrics.csv``; returns ``runs/exp``."""
    for version, text in enumerate((RUN0, RUN1)):
        folder = tmp_path / "runs" / "exp" / f"version_{version}"
        folder.mkdir(parents=True)
        (folder / "metrics.csv").write_text(text)
    return tmp_path / "runs" / "exp"


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures ``plot`` saves, to read the plotted data back."""
    figures = []
    real_save = plots.save_figure

    def save(fig, path, dpi=100):
        figures.append(fig)
        return real_save(fig, path, dpi=dpi)

    monkeypatch.setattr(plots, "save_figure", save)
    return figures


def series_of(fig) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{run label: {metric: [(x, y), ...]}}`` as drawn."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for ax in fig.axes:
        for line in ax.lines:
            points = list(zip(map(float, line.get_xdata()), map(float, line.get_ydata()), strict=True))
            out.setdefault(line.get_label(), {})[ax.get_title()] = points
    return out


def test_read_metrics_by_step_and_epoch(runs: Path) -> None:
    assert read_metrics(runs / "version_0" / "metrics.csv") == RUN0_BY_STEP
    by_epoch = read_metrics(runs / "version_0" / "metrics.csv", x="epoch")
    assert by_epoch["val/acc1"] == [(0.0, 0.25), (1.0, 0.75)]
    assert by_epoch["train/loss_step"] == [(0.0, 2.0), (0.0, 1.5), (1.0, 1.0), (1.0, 0.5)]
    assert "epoch" not in by_epoch and "step" not in by_epoch


def test_parent_dir_overlays_both_runs(runs: Path, drawn: list, capsys: pytest.CaptureFixture) -> None:
    out = runs.parent / "figs" / "cmp.png"
    assert plot([str(runs), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    (fig,) = drawn
    assert series_of(fig) == {"exp/version_0": RUN0_BY_STEP, "exp/version_1": RUN1_BY_STEP}
    # train/* first, then val/*, then the rest
    assert [ax.get_title() for ax in fig.axes] == ["train/loss_epoch", "train/loss_step", "val/acc1", "lr-SGD"]
    stdout = capsys.readouterr().out
    assert f"Curves written to {out}" in stdout
    assert "train/loss_epoch, train/loss_step, val/acc1, lr-SGD" in stdout


def test_selected_metrics_by_epoch_default_output(runs: Path, drawn: list) -> None:
    version0 = runs / "version_0"
    assert plot([str(version0), str(runs / "version_1" / "metrics.csv"), "--metrics", "val/acc1",
                 "--x", "epoch"]) == 0
    assert (version0 / "curves.png").is_file()  # next to the first run
    (fig,) = drawn
    assert [ax.get_title() for ax in fig.axes] == ["val/acc1"] and fig.axes[0].get_xlabel() == "epoch"
    assert series_of(fig) == {"exp/version_0": {"val/acc1": [(0.0, 0.25), (1.0, 0.75)]},
                              "exp/version_1": {"val/acc1": [(0.0, 0.5), (1.0, 0.625)]}}


def test_a_csv_file_writes_to_the_current_dir(runs: Path, drawn: list, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert plot([str(runs / "version_1" / "metrics.csv")]) == 0
    assert (tmp_path / "curves.png").is_file()
    assert series_of(drawn[0]) == {"exp/version_1": RUN1_BY_STEP}


def test_run_labels_are_the_shortest_distinguishing_paths(tmp_path: Path) -> None:
    a = tmp_path / "a" / "x" / "version_0" / "metrics.csv"
    b = tmp_path / "b" / "x" / "version_0" / "metrics.csv"
    assert run_labels([a, b]) == ["a/x/version_0", "b/x/version_0"]
    assert run_labels([a]) == ["x/version_0"]


@pytest.mark.parametrize(("args", "expected"), [
    (["{exp}/nope"], "{exp}/nope does not exist"),
    (["{exp}", "--metrics", "val/acc1", "val/nope", "loss"], "metric(s) val/nope, loss not in any run"),
    (["{root}/empty"], "no metrics.csv found in {root}/empty"),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(runs: Path, args: list[str], expected: str, capsys) -> None:
    (runs.parent / "empty").mkdir()
    names = {"exp": runs, "root": runs.parent}
    assert plot([a.format(**names) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lit-vision plot: error: {expected.format(**names)}"), err
    assert err.count("\n") == 1


def test_through_the_lit_vision_command(runs: Path, capsys) -> None:
    out = runs / "all.png"
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(runs), "-o", str(out), "--metrics", "train/loss_step"])
    assert exit_info.value.code == 0 and out.is_file()
    assert f"Curves written to {out}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", "--help"])
    assert exit_info.value.code == 0 and "usage: lit-vision plot" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", str(runs / "missing")])
    assert exit_info.value.code == 2
    assert f"{runs / 'missing'} does not exist" in capsys.readouterr().err
