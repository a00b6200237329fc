"""Per-video cost that does not grow with the run: no step done per video scans a folder.

A run over a list of a million entries only finishes if each video's steps (resume check,
claim, leftovers of killed writes, failure marks, provenance, report) look things up by name.
These tests count the folder scans (``os.scandir``, ``os.listdir``) a run makes and require the
same count for a short list and a list four times longer, for missing files, for finished
videos on resume, and for new ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import run_here


@pytest.fixture
def count_scans(monkeypatch):
    """The number of folder scans made so far, through every path that lists a folder."""
    calls = {"n": 0}
    real_scandir, real_listdir = os.scandir, os.listdir

    def scandir(*args, **kwargs):
        calls["n"] += 1
        return real_scandir(*args, **kwargs)

    def listdir(*args, **kwargs):
        calls["n"] += 1
        return real_listdir(*args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    return lambda: calls["n"]


def _run(paths: list[Path], out: Path, tmp_path: Path):
    listed = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    return run_here("feature_type=r21d", "device=cpu", "progress=false", "random_weights=true",
                    "on_extraction=save_numpy", "stack_size=4", "step_size=4", f"video_paths={listed}",
                    f"output_path={out}", f"tmp_path={tmp_path / 'tmp'}")


def _scans(count_scans, paths: list[Path], out: Path, tmp_path: Path, expect: str) -> int:
    """The scans of one run (after a first run in this process, which pays the one-time costs:
    imports, compiled kernels' caches)."""
    _run(paths[:1], tmp_path / "warm-up", tmp_path)
    before = count_scans()
    proc = _run(paths, out, tmp_path)
    assert expect in proc.stderr, proc.stderr
    return count_scans() - before


def test_missing_files_cost_the_same_scans_in_a_short_and_a_long_list(count_scans, tmp_path):
    short = [tmp_path / f"gone {i}.mp4" for i in range(5)]
    long = [tmp_path / f"missing {i}.mp4" for i in range(20)]
    short_scans = _scans(count_scans, short, tmp_path / "a", tmp_path, "0 done, 0 skipped, 5 failed")
    long_scans = _scans(count_scans, long, tmp_path / "b", tmp_path, "0 done, 0 skipped, 20 failed")
    assert long_scans == short_scans


def test_new_and_finished_videos_cost_the_same_scans_in_a_short_and_a_long_list(count_scans, tmp_path,
                                                                                make_video):
    videos = [make_video(f"v{i}.mp4", num_frames=8, height=32, width=32, seed=i) for i in range(8)]
    new_short = _scans(count_scans, videos[:2], tmp_path / "a", tmp_path, "2 done")
    new_long = _scans(count_scans, videos, tmp_path / "b", tmp_path, "8 done")
    assert new_long == new_short
    # Resume: the finished outputs sit in the folder being written to.
    done_short = _scans(count_scans, videos[:2], tmp_path / "b", tmp_path, "0 done, 2 skipped")
    done_long = _scans(count_scans, videos, tmp_path / "b", tmp_path, "0 done, 8 skipped")
    assert done_long == done_short
