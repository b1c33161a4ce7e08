"""Every notebook under notebooks/ executes top to bottom (they import lit_vision only)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    # The timeout only guards against a hung kernel: the detection notebook's 6-epoch training cell takes ~49 s on an
    # idle 2-core machine but ran past 600 s on one shared with two benchmarks (2026-12-02), hence 1200 s per cell.
    NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


def test_there_is_a_notebook() -> None:
    assert NOTEBOOKS
