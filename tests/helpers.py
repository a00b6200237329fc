"""Shared by the tests: synthetic videos, the relative error of the parity tests, a quiet CLI run."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np

from r21d_features.main import run as run_cli

MODEL = "r2plus1d_18_16_kinetics"


def synthetic_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``T x H x W x 3`` uint8 RGB: smooth gradients plus a moving square, so resize and motion matter."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / max(width - 1, 1), yy / max(height - 1, 1), (xx + yy) / (width + height)], axis=-1)
    frames = []
    for t in range(num_frames):
        frame = (base * 200 + 20 * np.sin(t / 3.0 + rng.random())).clip(0, 255)
        size = max(2, min(height, width) // 4)
        top = (t * 3) % max(1, height - size)
        left = (t * 5) % max(1, width - size)
        frame[top : top + size, left : left + size] = (255, 60, 30)
        frames.append(frame.astype(np.uint8))
    return np.stack(frames)


def write_video(path: Path, frames_rgb: np.ndarray, fps: float = 25.0) -> Path:
    """Writes frames as an MJPG .avi (lossless enough and decodable everywhere) or mp4v .mp4."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix == ".avi" else "mp4v"))
    height, width = frames_rgb.shape[1:3]
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    assert writer.isOpened(), f"cannot write {path}"
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def write_test_video(path: Path, num_frames: int = 24, fps: float = 12.0, size_wh: tuple[int, int] = (80, 64)) -> Path:
    """An mp4 of :func:`synthetic_frames` (``size_wh`` = width, height); returns ``path``."""
    width, height = size_wh
    return write_video(path, synthetic_frames(num_frames, height, width), fps)


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """``max |got - want| / max |want|``: the relative error the parity tests bound."""
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


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
