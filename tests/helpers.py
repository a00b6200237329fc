"""Shared by the tests of the extra outputs, the notebook and packaging: a tiny video, a quiet CLI run."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from utils.cli import run_cli

MODEL = "r2plus1d_18_16_kinetics"


def write_test_video(path: Path, num_frames: int = 24, fps: float = 12.0, size_wh: tuple[int, int] = (80, 64)) -> Path:
    """An mp4 whose frames differ (a bright square moving over a gradient); returns ``path``."""
    width, height = size_wh
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size_wh)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    ramp = np.linspace(0, 200, width, dtype=np.uint8)[None, :, None]
    for i in range(num_frames):
        frame = np.broadcast_to(ramp, (height, width, 3)).copy()
        x = (i * 3) % (width - 16)
        frame[20:36, x:x + 16] = (40, 220, 250)
        writer.write(frame)
    writer.release()
    return path


def run_cli_quietly(tmp_path: Path, video: Path, **overrides) -> tuple[int, str, str]:
    """``run_cli`` as the command line calls it: random weights, cpu, windows of 8 every 8 frames,
    save_numpy into ``<tmp_path>/out``; returns ``(exit code, stdout, stderr)``."""
    settings = {
        "feature_type": "r21d", "model_name": MODEL, "video_paths": [str(video)], "device": "cpu",
        "random_weights": True, "stack_size": 8, "step_size": 8, "on_extraction": "save_numpy",
        "output_path": str(tmp_path / "out"), "tmp_path": str(tmp_path / "tmp"), "progress": False,
        **overrides,
    }
    stdout, stderr = io.StringIO(), io.StringIO()
    code = run_cli(settings, stdout=stdout, stderr=stderr)
    return code, stdout.getvalue(), stderr.getvalue()
