"""Streaming video decoding with OpenCV: RGB uint8 frames, one at a time.

Frames come in presentation order from the first video stream, at their stored
size. Display-rotation metadata is ignored unless asked for, as the
``video_features`` reference does.

Broken files are told apart from short ones: a frame that fails to decode
while later frames still decode is an error (the reference's ``cap.read()``
loop would silently stop there), and in containers with a frame index (mp4,
mov, avi) :func:`check_frame_count` compares the frames decoded with the count
the index declares, which catches truncated files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from .errors import VideoError


# check_frame_count: missing frames tolerated with a warning (more is a failure).
MISSING_FRAMES_TOLERATED = 2
MISSING_FRACTION_TOLERATED = 0.01
# After a frame fails to decode, try this many more: if one decodes, the stream is corrupt mid-way.
GRABS_AFTER_FAILURE = 8
# First box types of an ISO base media file (mp4, mov, m4v, 3gp): their sample table counts every frame.
ISO_BMFF_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}


class VideoDecodeError(VideoError):
    """The file cannot be read as a video; the message is one line for the user."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the stream (``frame_count_hint`` may be wrong)."""

    path: str
    fps: float
    frame_count_hint: int
    width: int
    height: int
    frame_count_exact: bool = False  # the hint comes from a frame index (mp4/mov/avi), not a duration estimate


def has_frame_index(path: str | os.PathLike) -> bool:
    """True for containers whose header counts every frame: ISO BMFF (mp4, mov, 3gp) and AVI.

    For the others (mkv, webm, ts, flv, ...) OpenCV's frame count is duration x
    fps, which is far off for variable frame rate videos.
    """
    with open(path, "rb") as f:
        head = f.read(12)
    return head[4:8] in ISO_BMFF_FIRST_BOXES or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


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

    def __init__(
        self, path: str | os.PathLike, apply_rotation: bool = False, max_frame_pixels: int | None = None,
        threads: int | None = None,
    ) -> None:
        check_readable_file(path)
        self.path = str(path)
        # threads: FFmpeg's decoding threads for this capture (default: one per core, whatever
        # else decodes at the same time).
        params = [] if threads is None else [cv2.CAP_PROP_N_THREADS, int(threads)]
        self._cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, params)
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
            frame_count_exact=has_frame_index(self.path),
        )
        self.max_frame_pixels = max_frame_pixels
        try:
            self._check_frame_size(self.info.width, self.info.height)
        except VideoDecodeError:
            self._cap.release()
            raise

    def _check_frame_size(self, width: int, height: int) -> None:
        """Refuse frames over ``max_frame_pixels`` before one is decoded (memory guard)."""
        if self.max_frame_pixels is not None and width * height > self.max_frame_pixels:
            raise VideoDecodeError(
                f"frame size {width}x{height} ({width * height} pixels) is over max_frame_pixels="
                f"{self.max_frame_pixels}; downscale the video, or raise max_frame_pixels if memory allows"
            )

    def frames(
        self, keep: Callable[[int], bool] | None = None, rgb: bool = True
    ) -> Iterator[tuple[int, np.ndarray | None]]:
        """``(index, frame)``; ``rgb=False`` hands out OpenCV's BGR frames unconverted (the caller
        reorders the few pixels it keeps)."""
        index = 0
        try:
            while True:
                if keep is None or keep(index):
                    ok, frame_bgr = self._cap.read()
                else:
                    ok, frame_bgr = self._cap.grab(), None
                if not ok:
                    self._check_end_of_stream(index)
                    return
                if frame_bgr is None:
                    yield index, None
                else:
                    if index == 0:  # the container may not have said (0 x 0)
                        self._check_frame_size(frame_bgr.shape[1], frame_bgr.shape[0])
                    if frame_bgr.ndim == 2:  # some backends hand back gray frames as HxW
                        yield index, cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2RGB)
                    elif not rgb:
                        yield index, frame_bgr
                    else:
                        yield index, cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            self.close()

    def _check_end_of_stream(self, index: int) -> None:
        """Frame ``index`` did not decode: the end of the stream, unless later frames still do."""
        for _ in range(GRABS_AFTER_FAILURE):
            if self._cap.grab():
                raise VideoDecodeError(
                    f"frame {index} does not decode but later frames do (corrupt stream); re-encode the file "
                    "(e.g. ffmpeg -i IN -c:v libx264 OUT.mp4, which conceals such errors)"
                )

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_frame_count(decoded: int, info: VideoInfo) -> str | None:
    """Compare the frames decoded with the count in the container's frame index.

    Raises :class:`VideoDecodeError` when decoding stopped well short of it (a
    truncated file); returns a warning when a few frames are missing (up to
    ``MISSING_FRAMES_TOLERATED`` or ``MISSING_FRACTION_TOLERATED``: a damaged
    last frame, or a muxer that counts one that never decodes), else None.
    Containers without a frame index are not checked (their count is a guess).
    """
    declared = info.frame_count_hint
    missing = declared - decoded
    if not info.frame_count_exact or declared <= 0 or missing <= 0:
        return None
    if missing > max(MISSING_FRAMES_TOLERATED, MISSING_FRACTION_TOLERATED * declared):
        raise VideoDecodeError(
            f"only {decoded} of the {declared} frames the container declares decode (truncated file?); "
            "re-download or re-encode it"
        )
    return f"decoded {decoded} of the {declared} frames the container declares"


def quiet_decoder_logs(debug: bool) -> None:
    """Keep FFmpeg's and OpenCV's own messages off the console unless ``debug``.

    Our one-line reasons replace them. Call before the first video is opened:
    OpenCV reads ``OPENCV_FFMPEG_LOGLEVEL`` once, at its first FFmpeg capture.
    """
    if debug:
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

