"""Where each window sits in the video, so features can be aligned with annotations.

Saved (opt-in, ``save_metadata=true``) next to the features by the same sink,
one file per key: ``<stem>_fps``, ``<stem>_window_frames``,
``<stem>_window_times_s``, ``<stem>_stack_size`` and ``<stem>_step_size`` (``.npy``
or ``.pkl``; attributes of the video's dataset with ``save_hdf5``)::

    frames    0 1 2 3 4 5 6 7 8 9 ...          fps = 4, stack_size = 4, step_size = 4
    window 0  [0 1 2 3)                         window_frames[0]  = (0, 4)
    window 1          [4 5 6 7)                 window_frames[1]  = (4, 8)
    seconds   0       1       2                 window_times_s[1] = (1.0, 2.0)

Frame ``k`` is shown from ``k / fps`` to ``(k + 1) / fps`` seconds, so a window
of frames ``[start, end)`` spans ``[start / fps, end / fps)`` seconds.
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

METADATA_KEYS = ("fps", "window_frames", "window_times_s", "stack_size", "step_size")


def window_metadata(window_bounds: Sequence[tuple[int, int]], fps: float, stack_size: int | None = None,
                    step_size: int | None = None) -> dict[str, np.ndarray]:
    """Per-window frame and time spans of one video.

    ``window_bounds[i] = (start_frame, end_frame_exclusive)``; ``fps`` is the
    frame rate of the frames those indices count (after any re-encode);
    ``stack_size``/``step_size``, when given, are saved too (0-d int64): the
    window length and the feature stride in frames that downstream code needs.

    Returns ``fps``: 0-d float64; ``window_frames``: ``(num_windows, 2)`` int64
    ``[start, end)`` frame indices; ``window_times_s``: ``(num_windows, 2)``
    float64 seconds, ``window_frames / fps`` (NaN when the video states no
    usable frame rate).
    """
    frames = np.asarray(window_bounds, dtype=np.int64).reshape(-1, 2)
    fps = float(fps)
    if fps > 0 and math.isfinite(fps):
        times_s = frames / fps
    else:
        log.warning("the video states no usable frame rate (fps=%s): window times are NaN", fps)
        times_s = np.full(frames.shape, np.nan)
    out = {
        "fps": np.array(fps, dtype=np.float64),
        "window_frames": frames,
        "window_times_s": times_s.astype(np.float64),
    }
    for key, value in (("stack_size", stack_size), ("step_size", step_size)):
        if value is not None:
            out[key] = np.array(value, dtype=np.int64)
    return out
