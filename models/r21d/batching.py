"""The extractor's side of :class:`utils.pipeline.batcher.WindowBatcher`: decode, preprocess, forward, finish.

- decode (decoder threads): ``R21DExtractor.decode_chunks`` writes each frame straight into a reused
  (pinned on a GPU) buffer of the pool (``R21DExtractor.chunk_layout``): on a GPU its taps (RGB,
  or Y, U, V as the decoder gave them), on a CPU its finished region (``host_blend.py``);
- prepare (model thread): ``R21DExtractor.chunk_frames`` (GPU: copy to the device, YUV -> RGB on
  the taps, blend + normalise; both: cut the crops); the buffer goes back to the pool once its
  copy has completed (a CUDA event; on a CPU at once);
- forward: ``R21DExtractor.forward_windows``, every batch padded to ``windows_per_batch``
  windows (x crops: ``batch_size`` clips), so the network sees one shape (no cuDNN autotuning
  per new shape, and a window's features never depend on how many windows share its batch:
  bit-identical whatever the interleaving of videos);
- finish: the video's rows are copied to (pinned) host memory asynchronously; the result is
  handed out once that copy is done (``ready``), so the model thread never waits on the device.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from r21d_features.utils.pipeline.batcher import BufferPool, VideoState, WindowBatcher

from . import device_errors

if TYPE_CHECKING:
    from .extractor import R21DExtractor, VideoFeatures

# Pool buffers per decoder thread: one being filled, one queued, one being read on the device.
BUFFERS_PER_DECODER = 3


class R21DBatchModel:
    """Adapts an :class:`~models.r21d.extractor.R21DExtractor` to :class:`~utils.pipeline.batcher.BatchModel`."""

    def __init__(self, extractor: "R21DExtractor", workers: int) -> None:
        self.ex = extractor
        self.stack_size, self.step_size = extractor.stack_size, extractor.step_size
        self.batch_size = extractor.windows_per_batch  # windows; each is num_crops clips
        self.cuda = extractor.device.type == "cuda"
        shape, dtype = extractor.chunk_layout
        # Reused (pinned) tap buffers on a GPU; a CPU's finished frames live on in the windows.
        self.pool = (None if extractor.blend_on_host else
                     BufferPool(shape, count=BUFFERS_PER_DECODER * workers + 2, dtype=dtype, pin=self.cuda))
        self._copies: dict[int, Any] = {}  # id(result) -> CUDA event of its copy to the host

    # ------------------------------------------------------------------ decoder threads
    def decode(self, path: str, cancelled: Callable[[], bool]) -> Iterator[Any]:
        return self.ex.decode_chunks(path, self.pool, cancelled)

    def drop(self, chunk: Any) -> None:
        if chunk.buffer is not None:
            self.pool.release(chunk.buffer)

    # ------------------------------------------------------------------ model thread
    def prepare(self, video: VideoState, chunk: Any) -> tuple[np.ndarray, torch.Tensor]:
        try:
            if video.context is None:  # the blend constants, copied to the device once per video
                video.context = chunk.crop_taps.to(self.ex.device)
            frames_nkhwc = self.ex.chunk_frames(chunk, video.context)
        finally:  # given back even when this chunk failed: a lost buffer would starve the decoders
            if chunk.buffer is not None:
                self.pool.release(chunk.buffer, self._event() if self.cuda else None)  # reused once copied
        return chunk.frame_indices, frames_nkhwc

    def _event(self) -> Any:
        """A CUDA event recorded on the extractor's device's stream (not the current device's:
        with device=cuda:1 those differ, and an event on cuda:0 would say done at once)."""
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.ex.device))
        return event

    def forward(self, windows_tchw: list[torch.Tensor]) -> list[torch.Tensor | None]:
        return list(self.ex.forward_windows(windows_tchw))

    def finish(self, video: VideoState, outputs: list[torch.Tensor | None]) -> "VideoFeatures":
        features, logits = (outputs + [None, None])[:2]
        host_features, host_logits = self._to_host(features), self._to_host(logits)
        start = video.start
        if start is None:
            raise RuntimeError("the decoder ended without starting the video")
        result = self.ex.video_result(video.path, start, video.windows_cut, host_features, host_logits)
        if self.cuda and features is not None:
            self._copies[id(result)] = self._event()
        return result

    def _to_host(self, rows: torch.Tensor | None) -> np.ndarray | None:
        if rows is None:
            return None
        if not self.cuda:
            return rows.numpy()
        host = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
        host.copy_(rows, non_blocking=True)
        return host.numpy()

    def ready(self, result: Any) -> bool:
        event = self._copies.get(id(result))
        if event is None:
            return True
        if event.query():
            del self._copies[id(result)]
            return True
        return False

    def timed_out(self, video: VideoState) -> Exception:
        return self.ex.timeout_error(video.start.frames_decoded[0] if video.start is not None else 0)

    def classify(self, exc: BaseException) -> str:
        return device_errors.classify(exc)

    def free_memory(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()


def run_batched(extractor: "R21DExtractor", paths: Any) -> Iterator[tuple[str, Any]]:
    """``(path, result or exception)`` in completion order; a fatal device error is raised as
    :class:`~utils.core.errors.DeviceFailure`."""
    workers = extractor.decode_workers
    batcher = WindowBatcher(R21DBatchModel(extractor, workers), workers, extractor.settings.video_timeout_s)
    try:
        yield from batcher.run(os.fspath(p) for p in paths)
    except Exception as exc:
        if device_errors.classify(exc) == "fatal":
            raise device_errors.device_failure(exc, extractor.device) from None
        raise
