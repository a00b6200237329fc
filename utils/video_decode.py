"""Streaming video decoding with OpenCV: RGB uint8 frames, one at a time.

Frames come in presentation order from the first video stream, at their stored
size. Display-rotation metadata is ignored unless asked for, as the
``video_features`` reference does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np


class VideoDecodeError(RuntimeError):
    """The file cannot be read as a video; the message is one line for the user."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the stream (``frame_count_hint`` may be wrong)."""

    path: str
    fps: float
    frame_count_hint: int
    width: int
    height: int


def check_readable_file(path: str | os.PathLike) -> None:
    """Raise :class:`VideoDecodeError` naming why ``path`` cannot be a video file."""
    p = Path(path)
    if not p.exists():
        raise VideoDecodeError("file not found")
    if p.is_dir():
        raise VideoDecodeError("is a directory, not a video file")
    if p.stat().st_size == 0:
        raise VideoDecodeError("empty file (0 bytes)")
    if not os.access(p, os.R_OK):
        raise VideoDecodeError("file is not readable (permission denied)")


class VideoReader:
    """Opens ``path`` and yields ``(frame_index, frame_hwc_rgb_uint8)`` pairs.

    ``keep(frame_index) -> bool`` lets the caller skip the colour conversion of
    frames it will not use (they are still demuxed and decoded: codecs need
    them as references). Skipped frames are yielded as ``(frame_index, None)``.
    """

    def __init__(self, path: str | os.PathLike, apply_rotation: bool = False) -> None:
        check_readable_file(path)
        self.path = str(path)
        self._cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            self._cap.release()
            raise VideoDecodeError(
                "cannot be opened as a video (not a video file, or a codec FFmpeg/OpenCV lacks)"
            )
        # OpenCV rotates frames by the container's display matrix by default;
        # the reference features were computed on frames as stored.
        self._cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1 if apply_rotation else 0)
        self.info = VideoInfo(
            path=self.path,
            fps=float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0),
            frame_count_hint=max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)),
            width=int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            height=int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        )

    def frames(
        self, keep: Callable[[int], bool] | None = None
    ) -> Iterator[tuple[int, np.ndarray | None]]:
        index = 0
        try:
            while True:
                if keep is None or keep(index):
                    ok, frame_bgr = self._cap.read()
                    if not ok:
                        break
                    if frame_bgr.ndim == 2:  # some backends hand back gray frames as HxW
                        frame_rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2RGB)
                    else:
                        frame_rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
                    yield index, frame_rgb
                else:
                    if not self._cap.grab():
                        break
                    yield index, None
                index += 1
        finally:
            self.close()

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_all_frames_rgb(path: str | os.PathLike, apply_rotation: bool = False) -> np.ndarray:
    """Whole video as one ``T x H x W x 3`` uint8 RGB array (for small clips and tests)."""
    reader = VideoReader(path, apply_rotation=apply_rotation)
    frames = [frame for _, frame in reader.frames()]
    if not frames:
        return np.zeros((0, reader.info.height, reader.info.width, 3), dtype=np.uint8)
    return np.stack(frames)
