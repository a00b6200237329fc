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
         "--model-seconds", "0.5"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert "reference fp32" in rows and "ours fp32" in rows
    cells = [c.strip() for c in rows["ours fp32"].split("|")[1:-1]]
    assert cells[-1] == "True"  # same windows as the reference flow
    assert float(cells[-2]) <= 1e-4  # max relative feature difference
    assert "| decode (default decoder), 1 stream |" in proc.stdout
    assert "| ours fp32 x reference |" in proc.stdout  # the ratio per video
    assert list((tmp_path / "out").glob("benchmark-*.md")) and list((tmp_path / "out").glob("benchmark-*.json"))


def test_short_set_is_twenty_short_videos_with_their_own_names():
    specs = preset_specs("short-set")
    assert len(specs) == 20 and len({s.name for s in specs}) == 20
    assert {s.height for s in specs} == {240, 360} and {s.fps for s in specs} == {25, 30}
    assert all(4 <= s.duration_s <= 6 for s in specs)


def _run(seconds_by_path: dict[str, float], features: dict, reference: bool = False) -> dict:
    videos = {p: {"seconds": s, "frames": 100, "windows": 6, **({"peak_rss": 2 * 1024**3} if reference else {})}
              for p, s in seconds_by_path.items()}
    return {"seconds": sum(seconds_by_path.values()), "cpu_s": 1.0, "peak_rss": 1024**3, "peak_gpu": None,
            "videos": videos, "features": features}


def test_report_gives_the_ratio_per_video_and_for_the_set():
    import numpy as np

    from benchmarks.run_benchmark import markdown_report, parse_args, summarize

    feats = {p: np.ones((6, 512), np.float32) for p in ("a.mp4", "b.mp4")}
    result = {
        "model_name": "r2plus1d_18_16_kinetics", "reference_skipped_gb": {},
        "runs": {"reference fp32": [_run({"a.mp4": 6.0, "b.mp4": 2.0}, feats, reference=True)] * 3,
                 "ours fp32": [_run({"a.mp4": 2.0, "b.mp4": 2.0}, feats)] * 3},
        "decode_ceiling": {1: 1000.0}, "model_ceiling": {"ours fp32": {"frames_per_s": 60.0, "batch": 1}},
        "stages": {"decode_s_per_frame": 1e-3, "gather_s_per_frame": 1e-4, "blend_s_per_frame": 1e-4},
    }
    rows = summarize(result)
    assert rows["ours fp32"]["speedup"] == pytest.approx(2.0)  # 8 s against 4 s for the set
    report = markdown_report([result], {"cpu": "Test CPU", "native_bf16": "no", "memory": "1 GiB", "torch": "x"},
                             "cmd", ("0", "0"), parse_args(["--device", "cpu", "--rounds", "3"]))
    per_video = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
                 for line in report.splitlines() if line.startswith("| a.mp4") or line.startswith("| b.mp4")}
    assert per_video["a.mp4"][-2] == "3.00" and per_video["b.mp4"][-2] == "1.00"
    assert "| model only, ours fp32, batch 1 | 60.0 |" in report
    assert "Machine: Test CPU; native bf16 no" in report
