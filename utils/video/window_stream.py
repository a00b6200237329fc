"""Cut a stream of preprocessed frames into windows without holding the video.

Frames arrive in order, in chunks, possibly with the frames of gaps left out
(see :func:`utils.video.windows.is_frame_used`). Each frame is stored once however
many windows share it; only the frames that a future window can still use are
kept, so memory is about one window plus one chunk.
"""

from __future__ import annotations

import numpy as np
import torch


class WindowStream:
    """Turns ``(frame_indices, frames_tchw)`` chunks into complete windows.

    ``push`` returns ``[(start_frame, window_tchw), ...]`` for every window that
    the frames seen so far complete, in order; ``window_tchw`` is
    ``stack_size x C x H x W`` (a view or copy of the stored frames).
    """

    def __init__(self, stack_size: int, step_size: int) -> None:
        self.stack_size = stack_size
        self.step_size = step_size
        self.next_window = 0
        self._indices = np.zeros((0,), dtype=np.int64)
        self._frames: torch.Tensor | None = None

    def push(self, frame_indices: np.ndarray, frames_tchw: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        frame_indices = np.asarray(frame_indices, dtype=np.int64)
        if len(frame_indices) != len(frames_tchw):
            raise ValueError(f"{len(frame_indices)} indices for {len(frames_tchw)} frames")
        if len(frame_indices) == 0:
            return []
        if self._frames is None or len(self._indices) == 0:
            self._indices, self._frames = frame_indices, frames_tchw
        else:
            self._indices = np.concatenate([self._indices, frame_indices])
            self._frames = torch.cat([self._frames, frames_tchw])

        windows = []
        last_seen = int(self._indices[-1])
        while True:
            start = self.next_window * self.step_size
            end = start + self.stack_size
            if end - 1 > last_seen:
                break
            pos = int(np.searchsorted(self._indices, start))
            if pos + self.stack_size > len(self._indices) or self._indices[pos + self.stack_size - 1] != end - 1:
                raise RuntimeError(f"frames {start}..{end - 1} of window {self.next_window} were not all pushed")
            windows.append((start, self._frames[pos : pos + self.stack_size]))
            self.next_window += 1

        # Forget frames that no later window starts at or after.
        keep_from = int(np.searchsorted(self._indices, self.next_window * self.step_size))
        if keep_from:
            self._indices = self._indices[keep_from:]
            self._frames = self._frames[keep_from:]
        return windows
