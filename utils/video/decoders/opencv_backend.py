"""Decoding with OpenCV's bundled FFmpeg (``decoder=opencv``): RGB uint8 frames, one at a time.

Kept as a fallback: its FFmpeg has no AV1 decoder, it hands the file name to FFmpeg as a
URL (so ``concat:``, ``http:`` ... names are interpreted), and it counts an mp4's samples,
not the frames an edit list presents.

Frames come in presentation order from the first video stream, at their stored
size. Display-rotation metadata is ignored unless asked for, as the
``video_features`` reference does.

Broken files are told apart from short ones: a frame that fails to decode
while later frames still decode is an error (the reference's ``cap.read()``
loop would silently stop there), and in containers with a frame index (mp4,
mov, avi) :func:`utils.video.decoders.base.check_frame_count` compares the frames decoded
with the count the index declares, which catches truncated files.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import cv2

from r21d_features.utils.core.safe_fs import utf8_openable
from r21d_features.utils.video.sources import Source, as_source, read_head
from .base import HEAD_BYTES, Planes, VideoDecodeError, VideoInfo, check_frame_size, has_frame_index


# After a frame fails to decode, try this many more: if one decodes, the stream is corrupt mid-way.
GRABS_AFTER_FAILURE = 8


class OpenCVReader:
    """Opens ``path`` and yields ``(frame_index, Planes)`` pairs (RGB planes).

    ``keep(frame_index) -> bool`` lets the caller skip the colour conversion of
    frames it will not use (they are still demuxed and decoded: codecs need
    them as references). Skipped frames are yielded as ``(frame_index, None)``.
    """

    def __init__(
        self, video: str | os.PathLike | Source, apply_rotation: bool = False, max_frame_pixels: int | None = None,
        threads: int | None = None,
    ) -> None:
        source = as_source(video)
        path = source.local_path()
        if path is None:
            raise VideoDecodeError(f"decoder=opencv opens local files only and {source.name!r} is not one; "
                                   "use decoder=pyav")
        source.check()
        self.path = source.name
        with utf8_openable(path) as openable:  # a Linux name of raw bytes would crash OpenCV
            # threads: FFmpeg's decoding threads for this capture (default: OpenCV's, one per core).
            params = [] if threads is None else [cv2.CAP_PROP_N_THREADS, max(1, int(threads))]
            self._cap = cv2.VideoCapture(openable, cv2.CAP_FFMPEG, params)
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
            frame_count_exact=has_frame_index(read_head(source, HEAD_BYTES)),
            codec=_fourcc(self._cap.get(cv2.CAP_PROP_FOURCC)),
        )
        self.max_frame_pixels = max_frame_pixels
        try:
            self._check_frame_size(self.info.width, self.info.height)
        except VideoDecodeError:
            self._cap.release()
            raise

    def _check_frame_size(self, width: int, height: int) -> None:
        check_frame_size(width, height, self.max_frame_pixels)

    def frames(
        self, keep: Callable[[int], bool] | None = None
    ) -> Iterator[tuple[int, Planes | None]]:
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
                    self._check_frame_size(frame_bgr.shape[1], frame_bgr.shape[0])
                    if frame_bgr.ndim == 2:  # some backends hand back gray frames as HxW
                        yield index, Planes((cv2.cvtColor(frame_bgr, cv2.COLOR_GRAY2RGB),))
                    else:  # BGR as decoded: no whole-frame conversion, the taps are read in RGB order
                        yield index, Planes((frame_bgr,), bgr=True)
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

    def __enter__(self) -> "OpenCVReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fourcc(value: float) -> str:
    code = int(value)
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ")


def quiet_opencv_logs() -> None:
    """Keep OpenCV's FFmpeg messages off the console. Call before the first video is opened:
    OpenCV reads ``OPENCV_FFMPEG_LOGLEVEL`` once, at its first FFmpeg capture."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

