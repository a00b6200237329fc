"""Decoding with PyAV (FFmpeg's libraries, dav1d for AV1): the default backend.

- Read from the source's file object (:mod:`utils.video.sources`): FFmpeg never sees a
  name, so none is parsed as a URL: ``concat:a.mp4|b.mp4``, ``pipe:0``,
  ``cam:1.mp4`` or a folder named ``http:`` are plain file names here, as they are to
  ``open()``. Files the demuxer itself refers to (an HLS playlist's segments, a dash
  manifest) may be opened from the local disk only (``protocol_whitelist=file``).
- The frames are those FFmpeg presents: decoding honours mp4 edit lists (a stream-copied
  cut presents fewer frames than its sample table holds), as the reference does.
- Frame threading on up to ``os.cpu_count()`` threads (capped at :data:`MAX_DECODE_THREADS`).
- 8-bit 4:2:0 and 4:2:2 frames are handed out as their Y, U, V planes (see
  :mod:`utils.video.decoders.yuv`), so only the pixels a caller gathers are ever converted to
  RGB; any other format is converted with swscale (``to_ndarray(format="rgb24")``), as the
  reference does.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from typing import Callable, Iterator

import av
import numpy as np

from r21d_features.utils.video.sources import Source, as_source
from .base import HEAD_BYTES, Planes, VideoDecodeError, VideoInfo, check_frame_size, has_frame_index
from .yuv import matches_swscale, yuv_form

MAX_DECODE_THREADS = 16
# Bytes per read from the Python file object: big reads keep Python calls rare (about 1 per 1 MiB).
READ_BUFFER_BYTES = 1 << 20
_ATTACHED_PIC = int(av.stream.Disposition.attached_pic)


def decode_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DECODE_THREADS, cores))


def _plane_array(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """The plane's pixels as an ``height x width`` uint8 view (line padding dropped)."""
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


class PyAVReader:
    """Opens ``path`` and yields ``(frame_index, Planes | None)`` (None for frames ``keep`` rejects).

    Frames ``keep(frame_index)`` rejects are still decoded (codecs need them as
    references) but never converted. ``info.frame_count_hint`` becomes the count the
    container should present once :meth:`frames` has run (edit-list discards removed).
    """

    def __init__(self, video: str | os.PathLike | Source, apply_rotation: bool = False,
                 max_frame_pixels: int | None = None, threads: int | None = None) -> None:
        source = as_source(video)
        source.check()
        self.path = source.name
        # FFmpeg decoding threads for this file (default: one per core, up to MAX_DECODE_THREADS);
        # the pipeline passes the cores shared by the videos decoding at once.
        self._threads = decode_threads() if threads is None else max(1, min(MAX_DECODE_THREADS, int(threads)))
        self.apply_rotation = apply_rotation
        self.max_frame_pixels = max_frame_pixels
        self._file = source.open()
        try:
            self._frame_index = has_frame_index(self._file.read(HEAD_BYTES))
            self._file.seek(0)
            self._container = av.open(self._file, mode="r", buffer_size=READ_BUFFER_BYTES,
                                      options={"protocol_whitelist": "file"})
        except (av.FFmpegError, ValueError, OSError) as exc:
            self._file.close()
            raise VideoDecodeError(f"cannot be opened as a video ({_reason(exc)})") from None
        try:
            self._stream = self._video_stream()
            self.info = self._read_info()
            check_frame_size(self.info.width, self.info.height, max_frame_pixels)
        except BaseException:
            self.close()
            raise

    def _video_stream(self) -> av.video.stream.VideoStream:
        # Cover art (an mp3's or m4a's picture) is a one-frame "video" stream: not a video.
        streams = [s for s in self._container.streams.video if not int(s.disposition) & _ATTACHED_PIC]
        if not streams:
            raise VideoDecodeError("cannot be opened as a video: it has no video stream (audio-only file?)")
        stream = streams[0]
        if stream.codec_context is None:
            name = stream.codec.name if getattr(stream, "codec", None) else "unknown"
            raise VideoDecodeError(f"video codec {name!r} cannot be decoded by this FFmpeg build; "
                                   "re-encode the file (e.g. to H.264)")
        stream.thread_type = "AUTO"
        stream.thread_count = self._threads
        return stream

    def _read_info(self) -> VideoInfo:
        s = self._stream
        rate = s.average_rate or s.guessed_rate or s.base_rate
        return VideoInfo(
            path=self.path, fps=float(rate) if rate else 0.0, frame_count_hint=max(0, int(s.frames or 0)),
            width=int(s.codec_context.width or 0), height=int(s.codec_context.height or 0),
            frame_count_exact=self._frame_index, codec=s.codec_context.name,
        )

    def frames(self, keep: Callable[[int], bool] | None = None) -> Iterator[tuple[int, Planes | None]]:
        index = 0
        discarded = 0
        failed_at: int | None = None
        try:
            for packet in self._container.demux(self._stream):
                if packet.size and packet.is_discard:
                    discarded += 1  # before an edit list's start: decoded as a reference, never presented
                try:
                    decoded = packet.decode()
                except av.FFmpegError:
                    failed_at = index if failed_at is None else failed_at
                    continue
                for frame in decoded:
                    if failed_at is not None:
                        raise VideoDecodeError(
                            f"frame {failed_at} does not decode but later frames do (corrupt stream); re-encode "
                            "the file (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4, which conceals such errors)")
                    check_frame_size(frame.width, frame.height, self.max_frame_pixels)
                    yield index, (self._planes(frame) if keep is None or keep(index) else None)
                    index += 1
            self.info = replace(self.info, frame_count_hint=self._presented_count(discarded))
        except av.FFmpegError as exc:
            raise VideoDecodeError(f"decoding failed at frame {index} ({_reason(exc)})") from None
        finally:
            self.close()

    def _presented_count(self, discarded: int) -> int:
        """The frames the container should present: its sample count, less the samples an edit list
        hides. The demuxer marks some hidden samples (``discarded``: before a cut's start, decoded
        as references only) and drops others from its index without a trace (before an edit that
        starts on a keyframe, e.g. after ``-output_ts_offset``), which the edited duration x frame
        rate bounds (rounded down: a cut may end mid-frame; mp4/mov only, whose duration comes
        from the header, not from the data present)."""
        count = self.info.frame_count_hint
        if count <= 0:
            return 0
        count -= discarded
        s = self._stream
        rate = s.average_rate or s.guessed_rate
        # Only ISO BMFF has edit lists; elsewhere (AVI) the duration may shrink with a truncated file.
        if self._container.format.name.startswith("mov,mp4") and s.duration and s.time_base and rate:
            count = min(count, math.floor(float(s.duration * s.time_base * rate) + 1e-6))
        return max(0, count)

    def _planes(self, frame: av.VideoFrame) -> Planes:
        rotation = frame.rotation if self.apply_rotation else 0
        fmt = frame.format
        if not rotation:
            form = yuv_form(fmt.name, frame.colorspace, frame.color_range)
            if form is not None and matches_swscale(fmt.name, frame.width, frame.height, frame.colorspace,
                                                    frame.color_range):
                return Planes(tuple(_plane_array(p) for p in frame.planes[:3]), form)
        try:
            rgb = frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise VideoDecodeError(
                f"frames in pixel format {fmt.name} (colorspace {frame.colorspace}) cannot be converted to RGB "
                f"({_reason(exc)}); re-encode the file (e.g. ffmpeg -i IN -pix_fmt yuv420p OUT.mp4)") from None
        if rotation:
            # rotation is counterclockwise in degrees; np.rot90 turns counterclockwise too.
            rgb = np.ascontiguousarray(np.rot90(rgb, k=round(rotation / 90) % 4))
        return Planes((rgb,))

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            container.close()
        self._file.close()

    def __enter__(self) -> "PyAVReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    """FFmpeg's own words for an error, on one line, without the file name PyAV appends."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split()) or type(exc).__name__
