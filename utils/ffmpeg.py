"""ffmpeg calls: finding the binary and re-encoding a video to another frame rate.

Every call is an argument list, never a shell string, so paths with spaces,
quotes or leading dashes are passed through untouched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

from .errors import SettingsError, VideoError


class FFmpegError(VideoError):
    """ffmpeg failed on one video; the message is one line for the user."""


class FFmpegNotFoundError(SettingsError):
    """No ffmpeg binary: re-encoding (``extraction_fps``) is impossible."""


def find_ffmpeg() -> str:
    """Path of an ffmpeg binary: ``$PATH`` first, else the one ``imageio-ffmpeg`` ships."""
    on_path = shutil.which("ffmpeg")
    if on_path:
        return on_path
    try:
        import imageio_ffmpeg
    except ImportError:
        imageio_ffmpeg = None
    if imageio_ffmpeg is not None:
        try:
            return imageio_ffmpeg.get_ffmpeg_exe()
        except RuntimeError:
            pass
    raise FFmpegNotFoundError(
        "ffmpeg not found: install it (apt install ffmpeg / conda install ffmpeg) "
        "or `pip install imageio-ffmpeg`, which ships a binary"
    )


def reencoded_path(tmp_dir: str | os.PathLike, video_path: str | os.PathLike) -> Path:
    """``<tmp_dir>/<stem>_new_fps.mp4``, the file name the reference uses."""
    return Path(tmp_dir) / f"{Path(video_path).stem}_new_fps.mp4"


def private_reencoded_path(tmp_dir: str | os.PathLike, video_path: str | os.PathLike) -> Path:
    """A hidden name in ``tmp_dir`` that no other re-encode uses (this process, a random part)."""
    return Path(tmp_dir) / f".{Path(video_path).stem}_new_fps.{os.getpid()}.{uuid.uuid4().hex[:8]}.mp4"


def reencode_fps(
    video_path: str | os.PathLike,
    out_path: str | os.PathLike,
    fps: float,
    timeout_s: float | None = None,
) -> Path:
    """Re-encode ``video_path`` with ffmpeg's fps filter into ``out_path`` (mp4).

    Same filter as the reference (``-filter:v fps=fps=<fps>``) and ffmpeg's
    default auto-rotation. Writes to a temporary name first, so a killed run
    never leaves a half-written file under the final name.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.stem}.{os.getpid()}.partial.mp4")
    # "file:" keeps a name that starts with "-" or holds ":" from being read as an option/protocol.
    cmd = [
        find_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
        "-i", f"file:{os.fspath(video_path)}",
        "-filter:v", f"fps=fps={fps}",
        f"file:{os.fspath(partial)}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        partial.unlink(missing_ok=True)
        raise FFmpegError(f"ffmpeg re-encode took longer than {timeout_s} s") from exc
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        last = (proc.stderr or "").strip().splitlines()
        reason = last[-1] if last else f"exit status {proc.returncode}"
        raise FFmpegError(f"ffmpeg could not re-encode to {fps} fps: {reason}")
    os.replace(partial, out_path)
    return out_path
