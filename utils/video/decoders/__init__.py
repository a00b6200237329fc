"""Video decoding behind one small protocol: ``open_video(source, backend, ...) -> reader``.

A reader has ``info`` (:class:`VideoInfo`) and ``frames(keep) -> Iterator[(index, Planes | None)]``
(frames in presentation order from the first video stream, at their stored size), and
``close()``. Backends:

- ``pyav`` (default): PyAV's FFmpeg (AV1 through dav1d), streamed from the source's file
  object (a name is never parsed as a URL), edit lists honoured, 8-bit 4:2:0 / 4:2:2 frames handed out as YUV
  planes (converted to RGB only where the caller gathers, exactly as swscale would).
- ``opencv``: OpenCV's bundled FFmpeg, RGB frames, local files only; the pipeline before PyAV.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Iterator, Protocol

from r21d_features.utils.video.sources import Source
from .base import Planes, VideoDecodeError, VideoInfo, check_frame_count, check_frame_size
from .yuv import YuvForm

DECODERS = ("pyav", "opencv")

__all__ = ["DECODERS", "Planes", "VideoDecodeError", "VideoInfo", "VideoReader", "YuvForm", "check_frame_count",
           "check_frame_size", "open_video", "quiet_decoder_logs"]


class VideoReader(Protocol):
    info: VideoInfo

    def frames(self, keep: Callable[[int], bool] | None = None) -> Iterator[tuple[int, Planes | None]]: ...

    def close(self) -> None: ...


def open_video(video: str | os.PathLike | Source, backend: str = "pyav", apply_rotation: bool = False,
               max_frame_pixels: int | None = None, threads: int | None = None) -> VideoReader:
    """Open ``video`` (a :class:`~utils.video.sources.Source`, or a name :func:`~utils.video.sources.open_source`
    turns into one) with ``backend`` (one of :data:`DECODERS`); raises :class:`VideoDecodeError`.
    ``threads``: FFmpeg decoding threads for this file (None: the backend's default)."""
    if backend == "pyav":
        from .pyav_backend import PyAVReader

        return PyAVReader(video, apply_rotation=apply_rotation, max_frame_pixels=max_frame_pixels, threads=threads)
    if backend == "opencv":
        from .opencv_backend import OpenCVReader

        return OpenCVReader(video, apply_rotation=apply_rotation, max_frame_pixels=max_frame_pixels, threads=threads)
    raise ValueError(f"decoder={backend!r} is unknown; allowed: {', '.join(DECODERS)}")


def quiet_decoder_logs(debug: bool) -> None:
    """Keep FFmpeg's and OpenCV's own messages off the console unless ``debug`` (our one-line
    reasons replace them); with ``debug``, FFmpeg's warnings go to the ``libav`` logger."""
    if debug:
        import av.logging

        av.logging.set_level(av.logging.WARNING)
        logging.getLogger("libav").setLevel(logging.WARNING)
        return
    from .opencv_backend import quiet_opencv_logs

    quiet_opencv_logs()
