"""Stops: SIGINT / SIGTERM end the run promptly (children killed, claims released, partial files
removed, the summary and "re-run the same command to resume" printed, exit 130 / 143, no
traceback); what a ``kill -9`` leaves is cleaned by the next run; a closed stdout ends quietly."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.reliability.reliability_helpers import make_clip
from tests.helpers import write_test_video
from tests.trust.trust_helpers import (ENV, MODEL, cli_args, features, features_folder,
                                       leftovers, main_command, processes_mentioning, run_in_process)
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def slow_clip(tmp_path_factory) -> Path:
    """Big enough that its re-encode (or its 60 windows on the model) takes a few seconds on a busy CPU."""
    return make_clip(tmp_path_factory.mktemp("slow") / "slow.mp4", size="640x360", frames=240)


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(main_command(args), cwd=REPO_ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace")


def wait_for(condition, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.05)


def partial_folders(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "tmp").glob(f"r21d/{MODEL}/.*.partial"))


def report_lines(tmp_path: Path) -> int:
    path = features_folder(tmp_path) / "run_report.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("signum, when", [
    (signal.SIGINT, "re-encode"), (signal.SIGTERM, "re-encode"),
    pytest.param(signal.SIGINT, "model", marks=pytest.mark.slow),  # the same unwinding, from the model loop
])
@pytest.mark.slow
def test_signal_stops_cleanly_and_the_same_command_resumes(tmp_path, slow_clip, signum, when):
    small = write_test_video(tmp_path / "small.mp4")
    if when == "re-encode":  # ffmpeg is running when the signal comes
        args = cli_args(tmp_path, f"video_paths=[{slow_clip},{small}]", "extraction_fps=12")
        ready = lambda: partial_folders(tmp_path)  # noqa: E731
    else:  # the first video is saved and the slow one is on the model
        args = cli_args(tmp_path, f"video_paths=[{small},{slow_clip}]", "batch_size=2")
        ready = lambda: report_lines(tmp_path) >= 1  # noqa: E731
    proc = start(args)
    wait_for(ready)
    proc.send_signal(signum)
    sent = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 20, "not a prompt stop"
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr + stdout, stderr
    assert "Summary:" in stderr and "re-run the same command to resume" in stderr, stderr
    assert leftovers(tmp_path) == []  # claims released, partial re-encode removed
    assert processes_mentioning(os.fspath(tmp_path)) == []  # ffmpeg gone too
    assert not (features_folder(tmp_path) / "slow_r21d.npy").exists()

    again = run_in_process(args)  # the same command (in this process: the stop above is what needs its own)
    assert again.returncode == 0, again.stderr
    features(tmp_path, "slow"), features(tmp_path, "small")
    assert ("1 skipped" in again.stderr) == (when == "model"), again.stderr
    assert leftovers(tmp_path) == [] and not (tmp_path / "tmp").exists()


@pytest.mark.slow
def test_kill_9_during_a_reencode_leaves_no_orphan_and_the_next_run_cleans_up(tmp_path, slow_clip):
    args = cli_args(tmp_path, f"video_paths=[{slow_clip}]", "extraction_fps=12")
    proc = start(args)
    wait_for(lambda: partial_folders(tmp_path))
    proc.kill()
    proc.communicate(timeout=30)
    wait_for(lambda: not processes_mentioning(os.fspath(tmp_path)), timeout_s=10)  # ffmpeg died with its parent
    assert partial_folders(tmp_path)  # what a kill -9 leaves ...

    again = run_in_process(args)  # ... the next run removes (and takes over the dead worker's claim)
    assert again.returncode == 0, again.stderr
    features(tmp_path, "slow")
    assert leftovers(tmp_path) == []
    assert not (tmp_path / "tmp" / "r21d").exists()  # tmp_path itself existed before this run: kept


@pytest.mark.slow
@pytest.mark.parametrize("keep_lines", [0, 2])
def test_closed_stdout_ends_the_run_quietly(tmp_path, keep_lines):
    clips = [write_test_video(tmp_path / f"c{i}.mp4") for i in range(3)]
    args = cli_args(tmp_path, "video_paths=[" + ",".join(map(str, clips)) + "]", "on_extraction=print")
    proc = start(args)
    for _ in range(keep_lines):  # like `| head -2`
        proc.stdout.readline()
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception ignored" not in stderr, stderr
    assert processes_mentioning(os.fspath(tmp_path)) == []
