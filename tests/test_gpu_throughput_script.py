"""benchmarks/gpu_throughput.py cannot rot: its CPU smoke mode runs every row end to end; without a GPU it exits 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"
PARTS = ["synthetic resnet18", "real JPEGs resnet18", "Faster R-CNN R50-FPN recipe", "DeepLabv3 R50 OS8 recipe"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would measure")
def test_without_a_gpu_the_script_says_so_and_exits_cleanly(tmp_path: Path) -> None:
    proc = run("--output", str(tmp_path / "out.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device here, nothing measured" in proc.stdout
    assert not (tmp_path / "out.json").exists()


@pytest.mark.slow
def test_cpu_smoke_run_measures_every_row(tmp_path: Path) -> None:
    proc = run("--device", "cpu", "--smoke", "--output", str(tmp_path / "out.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| part | side | data | batch | img/s | lit/plain | peak GiB |")
    for part in PARTS:
        assert any(line.startswith(f"| {part} |") for line in lines), part
    result = json.loads((tmp_path / "out.json").read_text())
    rows = result["rows"]
    assert [r["part"] for r in rows] == [PARTS[0]] * 2 + [PARTS[1]] * 4 + PARTS[2:]
    assert [r["side"] for r in rows[:6]] == ["plain PyTorch", "lit_vision"] + ["plain PyTorch"] + ["lit_vision"] * 3
    assert all(r["img_s"] > 0 and r["steps"] >= 1 and not r["note"] for r in rows)
    plain = rows[0]["img_s"]
    assert rows[1]["extra"]["ratio"] == pytest.approx(rows[1]["img_s"] / plain)
    assert result["goals"]["lit_over_plain_synthetic_min"] == pytest.approx(rows[1]["extra"]["ratio"])
    assert result["smoke"] and result["compile"] == "off" and result["sizes"]["bf16"] is False
