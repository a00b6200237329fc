"""The benchmark report's figures: drawn from measured numbers by benchmarks/figures.py, the
same numbers giving the same files, and (slow) the whole measurement on tiny inputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from benchmarks.figures import FIGURE_NAMES, markdown_tables, write_figures
from tests.conftest import REPO_ROOT


def _report(scale: float = 1.0) -> dict:
    return {
        "machine": {"cpu": "Test CPU, 2 cores, flags avx2", "torch": "x"}, "date": "2026-01-01 00:00 UTC",
        "commit": "abc1234", "command": "python -m benchmarks.figures",
        "throughput": [{"precision": p, "batch": b, "frames_per_s": scale * b * (2 if p == "bf16" else 1),
                        "frames_per_cpu_s": 1.0} for p in ("fp32", "bf16") for b in (1, 2, 4)],
        "lengths": [{"video": f"v{s}.mp4", "length_s": s, "frames": 25 * s, "precision": p,
                     "wall_s": scale * s / (2 if p == "bf16" else 1), "peak_rss_mib": 900.0 + s}
                    for s in (10, 20) for p in ("fp32", "bf16")],
    }


def test_the_figures_are_drawn_from_the_numbers_and_are_reproducible(tmp_path):
    first = write_figures(_report(), tmp_path / "a")
    second = write_figures(_report(), tmp_path / "b")
    other = write_figures(_report(scale=3.0), tmp_path / "c")
    assert [p.name for p in first] == list(FIGURE_NAMES)
    for a, b, c in zip(first, second, other):
        svg = a.read_text()
        assert svg.startswith("<?xml") and "fp32" in svg and "bf16" in svg
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between two drawings of the same numbers"
        if a.name != "memory_vs_length.svg":  # scale changes throughput and time, not memory
            assert a.read_bytes() != c.read_bytes(), f"{a.name} ignores the numbers"


def test_the_tables_name_machine_date_and_commit_and_every_measurement():
    text = markdown_tables(_report())
    assert "Test CPU, 2 cores" in text and "2026-01-01" in text and "commit abc1234" in text
    assert "| bf16 | 4 | 8.0 |" in text
    assert "| `v20.mp4` | 500 | bf16 | 10.0 | 920 |" in text


@pytest.mark.slow
def test_the_figure_script_measures_and_draws_on_tiny_inputs(tmp_path):
    out, report = tmp_path / "img", tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.figures", "--out", str(out), "--json", str(report),
         "--batches", "1", "--rounds", "1", "--lengths", "1,2", "--resolution", "240p",
         "--videos", str(tmp_path / "videos"), "--work", str(tmp_path / "work")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(report.read_text())
    assert [(r["precision"], r["batch"]) for r in data["throughput"]] == [("fp32", 1), ("bf16", 1)]
    assert all(r["frames_per_s"] > 0 for r in data["throughput"])
    assert [(r["length_s"], r["frames"]) for r in data["lengths"]] == [(1, 25), (1, 25), (2, 50), (2, 50)]
    assert all(r["wall_s"] > 0 and r["peak_rss_mib"] > 100 for r in data["lengths"])
    assert sorted(p.name for p in out.iterdir()) == sorted(FIGURE_NAMES)
    assert re.search(r"^Machine: .+; commit \S+", proc.stdout, re.M)
