"""What every decoder backend shares: the frame record, the video's info, the checks and the error type."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from r21d_features.utils.core.console import plural
from r21d_features.utils.core.errors import VideoDecodeError
from .yuv import YuvForm

# check_frame_count: missing frames tolerated with a warning (more is a failure).
MISSING_FRAMES_TOLERATED = 2
MISSING_FRACTION_TOLERATED = 0.01
# First box types of an ISO base media file (mp4, mov, m4v, 3gp): their sample table counts every frame.
HEAD_BYTES = 12  # what has_frame_index looks at
ISO_BMFF_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the stream.

    ``frame_count_hint``: the frames the container should present (for an mp4 with an
    edit list, its samples minus those the edit list discards); a backend may refine it
    once the stream has been read. It is a guess unless ``frame_count_exact`` (the count
    comes from a frame index: mp4/mov/avi, not from duration x fps).
    """

    path: str
    fps: float
    frame_count_hint: int
    width: int
    height: int
    frame_count_exact: bool = False
    codec: str = ""


@dataclass(frozen=True)
class Planes:
    """One decoded frame in the form its crop taps are gathered from.

    ``yuv is None``: ``arrays == (rgb,)``, ``H x W x 3`` uint8 RGB, or BGR when ``bgr`` (OpenCV's
    order, left as decoded: the tap gathering reverses the channels of the few pixels it reads).
    Otherwise ``arrays == (y, u, v)``, 8-bit planes: ``y`` is ``H x W``, ``u``/``v`` are
    ``ceil(H / 2**yuv.chroma_vshift) x ceil(W / 2)``; the chroma sample of luma pixel
    ``(r, c)`` is ``(r >> chroma_vshift, c >> 1)`` and ``yuv`` says how to turn it into RGB.
    The arrays may be views of the decoder's buffers: gather from them before the next frame.
    """

    arrays: tuple[np.ndarray, ...]
    yuv: YuvForm | None = None
    bgr: bool = False

    def rgb(self) -> np.ndarray:
        """The whole frame as ``H x W x 3`` RGB (a view where possible; for checks and tools, not
        the extraction path). Only for frames without ``yuv``."""
        if self.yuv is not None:
            raise ValueError("rgb() is for RGB/BGR frames; this one is Y, U, V planes")
        return self.arrays[0][..., ::-1] if self.bgr else self.arrays[0]

    @property
    def height(self) -> int:
        return self.arrays[0].shape[0]

    @property
    def width(self) -> int:
        return self.arrays[0].shape[1]


def has_frame_index(head: bytes) -> bool:
    """True for containers whose header counts every frame: ISO BMFF (mp4, mov, 3gp) and AVI;
    ``head``: the file's first :data:`HEAD_BYTES` bytes.

    For the others (mkv, webm, ts, flv, ...) a frame count is duration x fps, which is
    far off for variable frame rate videos.
    """
    return head[4:8] in ISO_BMFF_FIRST_BOXES or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


def check_frame_size(width: int, height: int, max_frame_pixels: int | None) -> None:
    """Refuse a frame over ``max_frame_pixels`` (memory guard against corrupt or hostile headers)."""
    if max_frame_pixels is not None and width * height > max_frame_pixels:
        raise VideoDecodeError(
            f"frame size {width}x{height} ({width * height} pixels) is over max_frame_pixels="
            f"{max_frame_pixels}; downscale the video, or raise max_frame_pixels if memory allows"
        )


def check_frame_count(decoded: int, info: VideoInfo) -> str | None:
    """Compare the frames decoded with the count the container should present.

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
            f"only {decoded} of the {plural(declared, 'frame')} the container declares decode (truncated file?); "
            "re-download or re-encode it"
        )
    return f"decoded {decoded} of the {plural(declared, 'frame')} the container declares"
