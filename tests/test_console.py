"""What the user reads on the console: nothing glued to the progress bar, every printed block
names its video, counts with the right plural."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.helpers import run_cli_quietly, write_test_video

BAR = re.compile(r"^ *\d+%\|.*\]$")  # a whole tqdm bar line: " 50%|#####     | 1/2 [00:01<00:01, ...]"
STATS_LINE = re.compile(r"^max: -?\d+\.\d{8}; mean: -?\d+\.\d{8}; min: -?\d+\.\d{8}$")


def terminal_lines(text: str) -> list[str]:
    """The lines a terminal shows for ``text``: a carriage return goes back to column 0, later
    characters overwrite earlier ones (how tqdm redraws its bar in place)."""
    shown = []
    for raw in text.split("\n"):
        row: list[str] = []
        col = 0
        for ch in raw:
            if ch == "\r":
                col = 0
                continue
            if col < len(row):
                row[col] = ch
            else:
                row.append(ch)
            col += 1
        shown.append("".join(row).rstrip())
    return shown


@pytest.mark.slow
def test_features_predictions_and_log_lines_are_never_glued_to_the_progress_bar(checkpoints, make_video, tmp_path):
    a, b = make_video("a.mp4", num_frames=32), make_video("b b.mp4", num_frames=16, seed=1)
    # stdout and stderr into one pipe, as both land in one terminal
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "main.py"), "feature_type=r21d", f"video_paths=[{a}, '{b}']",
         "device=cpu", f"checkpoint_path={checkpoints['r2plus1d_18_16_kinetics']}", "show_pred=true",
         "save_plots=true", "output_path=./out", "progress=true"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 0, proc.stdout
    lines = terminal_lines(proc.stdout)
    assert any(BAR.match(line) for line in lines), "expected a progress bar"
    glued = [line for line in lines if "%|" in line and not BAR.match(line)]
    assert not glued, glued

    # Each block starts on its own line with the video it belongs to, then the reference format.
    for video in (a, b):
        pred = lines.index(f"Predictions for {video}:")
        assert lines[pred + 1] == "At frames (0, 16)" and lines[pred + 2] == "  Logits | Prob. | Label"  # (trailing space stripped)
        feats = lines.index(f"Features for {video}:")
        assert lines[feats + 1] == "r21d"
        stats = next(i for i in range(feats, len(lines)) if lines[i].startswith("max: "))
        assert STATS_LINE.match(lines[stats]), lines[stats]
        assert any(line.startswith(f"INFO: plots of {video}: ") for line in lines)
    assert lines.index(f"Features for {a}:") < lines.index(f"Predictions for {b}:")
    assert "Summary: 2 done, 0 skipped, 0 failed, of 2 videos" in lines


def test_one_video_is_counted_in_the_singular(tmp_path):
    video = write_test_video(tmp_path / "clip.mp4", num_frames=16)
    code, _, err = run_cli_quietly(tmp_path, video)
    assert code == 0, err
    assert "Summary: 1 done, 0 skipped, 0 failed, of 1 video\n" in err + "\n"
    assert "videos" not in err
    code, _, err = run_cli_quietly(tmp_path, video, num_shards=2, shard_index=1)  # an empty shard
    assert code == 0 and "Summary: 0 done, 0 skipped, 0 failed, of 0 videos" in err, err


def test_a_printed_block_names_its_video_once_before_its_keys(tmp_path):
    video = write_test_video(tmp_path / "clip.mp4", num_frames=16)
    code, out, err = run_cli_quietly(tmp_path, video, on_extraction="print", save_metadata=True)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"Features for {video}:" and lines[1] == "r21d"
    assert out.count(str(video)) == 1  # one heading for the features and their metadata
    assert out.endswith("\n\n")  # a blank line after the block, as the reference prints
