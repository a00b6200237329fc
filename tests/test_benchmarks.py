"""The benchmark tools: a deterministic video set, and the side-by-side benchmark run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.make_dataset import count_frames, make_dataset, preset_specs
from tests.conftest import REPO_ROOT


def test_tiny_set_is_deterministic_and_kept(tmp_path):
    first = make_dataset("tiny", tmp_path / "a")
    second = make_dataset("tiny", tmp_path / "b")
    specs = preset_specs("tiny")
    assert [p.name for p in first] == [f"{s.name}.mp4" for s in specs]
    for path_a, path_b, spec in zip(first, second, specs):
        assert path_a.read_bytes() == path_b.read_bytes()
        assert count_frames(path_a) == spec.num_frames
    mtimes = [p.stat().st_mtime_ns for p in first]
    assert make_dataset("tiny", tmp_path / "a") == first
    assert [p.stat().st_mtime_ns for p in first] == mtimes  # an existing set is not written again


def test_full_set_covers_the_resolutions_and_lengths_asked_for():
    specs = preset_specs("full")
    assert len(specs) >= 25
    assert {s.height for s in specs} == {240, 360, 720, 1080}
    assert min(s.duration_s for s in specs) == 10
    assert max(s.duration_s for s in specs if s.duration_s < 600) == 180
    assert any(s.height == 1080 and s.duration_s == 600 for s in specs)
    assert len({s.name for s in specs}) == len(specs)


@pytest.mark.slow
def test_benchmark_runs_both_modes_and_reports_matching_features(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_benchmark", "--preset", "tiny", "--device", "cpu",
         "--videos", str(tmp_path / "videos"), "--out", str(tmp_path / "out"), "--rounds", "1",
         "--batch-size", "2", "--model-seconds", "0.5"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert "naive fp32" in rows and "ours fp32" in rows
    cells = [c.strip() for c in rows["ours fp32"].split("|")[1:-1]]
    assert cells[-1] == "True"  # same windows as the naive mode
    assert float(cells[-2]) <= 1e-4  # max relative feature difference
    assert "| decode (default decoder), 1 stream |" in proc.stdout
    assert list((tmp_path / "out").glob("benchmark-*.md")) and list((tmp_path / "out").glob("benchmark-*.json"))
