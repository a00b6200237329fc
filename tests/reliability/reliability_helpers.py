"""Helpers of the reliability tests: making small clips, running the CLI, reading its outputs."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import torch

from tests.conftest import REPO_ROOT
from r21d_features.utils.video.ffmpeg import find_ffmpeg

MODEL = "r2plus1d_18_16_kinetics"
# 16-frame clips give one 2-frame window each: the network runs, but only once per video.
STACK, STEP = 2, 16
FEATURE_DIM = 512
# Most of these videos have one window: two rows per forward pass instead of the default 16 padded
# rows keep the folder fast. The in-process reference uses the same size, so features match bit for bit.
BATCH = 2


def ffmpeg(*args: str) -> None:
    subprocess.run([find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_clip(path: Path, size: str = "64x48", frames: int = 16, rate: int = 25, pattern: str = "testsrc",
              codec_args: tuple[str, ...] = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
              extra: tuple[str, ...] = ()) -> Path:
    """A synthetic clip from ffmpeg's test sources (``pattern`` picks which, so clips differ)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg("-f", "lavfi", "-i", f"{pattern}=size={size}:rate={rate}", "-frames:v", str(frames),
           *codec_args, *extra, str(path))
    return path


def mjpeg_frame_starts(data: bytes) -> list[int]:
    """Byte offsets of the JPEG images (SOI markers) in an MJPEG AVI."""
    starts, i = [], data.find(b"\xff\xd8\xff")
    while i != -1:
        starts.append(i)
        i = data.find(b"\xff\xd8\xff", i + 3)
    return starts


def corrupt_jpeg_frame(src: Path, dst: Path, frame: int) -> Path:
    """Copy of an MJPEG AVI whose ``frame``-th image is overwritten with junk (fails to decode)."""
    data = bytearray(src.read_bytes())
    start = mjpeg_frame_starts(bytes(data))[frame]
    data[start: start + 400] = b"\x55" * 400
    dst.write_bytes(bytes(data))
    return dst


# One torch thread per worker process: several run at once on 2 cores, and the in-process
# reference uses one thread too, so features match bit for bit.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def cli_args(checkpoint: Path, output: Path, *extra: str) -> list[str]:
    """The ``key=value`` arguments of ``python main.py`` shared by these tests."""
    batch = [] if any(a.startswith("batch_size=") for a in extra) else [f"batch_size={BATCH}"]
    return ["feature_type=r21d", f"model_name={MODEL}", "device=cpu", f"stack_size={STACK}", f"step_size={STEP}",
            f"checkpoint_path={checkpoint}", "on_extraction=save_numpy", f"output_path={output}", "progress=false",
            "decode_workers=1", *batch, *extra]


def main_command(args: list[str]) -> list[str]:
    """``[python, main.py, *args]``, for starting workers with ``subprocess.Popen``."""
    return [sys.executable, str(REPO_ROOT / "main.py"), *args]


def feature_folder(output: Path) -> Path:
    return output / "r21d" / MODEL


def read_report(output: Path) -> list[dict]:
    path = feature_folder(output) / "run_report.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def leftovers(folder: Path) -> list[str]:
    """Claim files and temporary files left in an output folder (a clean finish leaves none)."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".lock", ".tmp", ".break")))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch's CPU ops on ``n`` threads inside the block (results depend on the count in the last bits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
