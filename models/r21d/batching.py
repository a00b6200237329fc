"""The extractor's side of :class:`utils.batcher.WindowBatcher`: decode, preprocess, forward, finish.

- decode (decoder threads): ``R21DExtractor._chunks`` gathers each frame's taps (RGB, or Y, U, V
  as the decoder gave them) straight into a reused (pinned on a GPU) buffer of the pool, shaped
  by the crops' region (``R21DExtractor.tap_shape``);
- prepare (model thread): copy to the device, YUV -> RGB on the taps, blend + normalise, cut
  the crops; the buffer goes back to
  the pool once its copy has completed (a CUDA event; on a CPU at once);
- forward: every batch is padded to ``windows_per_batch`` windows (x crops: ``batch_size`` clips), so the network sees one shape
  (no cuDNN autotuning per new shape, and a window's features never depend on how many
  windows share its batch: bit-identical whatever the interleaving of videos);
- finish: the video's rows are copied to (pinned) host memory asynchronously; the result is
  handed out once that copy is done (``ready``), so the model thread never waits on the device.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch

from r21d_features.utils.batcher import BufferPool, VideoState, WindowBatcher

from . import device_errors
from r21d_features.utils.decoders.yuv import yuv_taps_to_rgb

from .crops import cut_crops
from .preprocess import blend_taps

if TYPE_CHECKING:
    from .extractor import R21DExtractor, VideoFeatures

# Pool buffers per decoder thread: one being filled, one queued, one being read on the device.
BUFFERS_PER_DECODER = 3


class R21DBatchModel:
    """Adapts an :class:`~models.r21d.extractor.R21DExtractor` to :class:`~utils.batcher.BatchModel`."""

    def __init__(self, extractor: "R21DExtractor", workers: int) -> None:
        self.ex = extractor
        self.stack_size, self.step_size = extractor.stack_size, extractor.step_size
        self.batch_size = extractor.windows_per_batch  # windows; each is num_crops clips
        self.cuda = extractor.device.type == "cuda"
        from .extractor import CHUNK_FRAMES  # noqa: PLC0415 (the extractor imports this module)

        self.pool = BufferPool((CHUNK_FRAMES, *extractor.tap_shape),
                               count=BUFFERS_PER_DECODER * workers + 2, pin=self.cuda)
        self._copies: dict[int, Any] = {}  # id(result) -> CUDA event of its copy to the host

    # ------------------------------------------------------------------ decoder threads
    def decode(self, path: str, cancelled: Callable[[], bool]) -> Iterator[Any]:
        return self.ex._chunks(path, self.pool, cancelled)

    def drop(self, chunk: Any) -> None:
        if chunk.buffer is not None:
            self.pool.release(chunk.buffer)

    # ------------------------------------------------------------------ model thread
    def prepare(self, video: VideoState, chunk: Any) -> tuple[np.ndarray, torch.Tensor]:
        if video.context is None:  # the blend constants, copied to the device once per video
            video.context = chunk.crop_taps.to(self.ex.device)
        taps = chunk.taps_nhwc.to(self.ex.device, non_blocking=True)
        event = None
        if chunk.buffer is not None and self.cuda:
            event = torch.cuda.Event()
            event.record()
        if chunk.yuv is not None:  # YUV -> RGB on the taps only, as swscale would on the whole frame
            taps = yuv_taps_to_rgb(taps, chunk.yuv)
        region = blend_taps(taps, video.context)
        if chunk.buffer is not None:
            self.pool.release(chunk.buffer, event)  # on a CPU the taps have been read already
        frames_nkchw = cut_crops(region, self.ex.crop_boxes, self.ex.record.preprocessing)
        return chunk.frame_indices, frames_nkchw

    def forward(self, windows_tchw: list[torch.Tensor]) -> list[torch.Tensor | None]:
        n, k = len(windows_tchw), self.ex.num_crops
        windows_btkchw = torch.stack(windows_tchw)
        if n < self.batch_size:  # one shape for the whole run; padded rows are thrown away
            pad = windows_btkchw.new_zeros((self.batch_size - n, *windows_btkchw.shape[1:]))
            windows_btkchw = torch.cat([windows_btkchw, pad])
        # B x T x K x C x H x W -> (B * K) x C x T x H x W: the crops are more clips.
        clips = windows_btkchw.permute(0, 2, 3, 1, 4, 5).flatten(0, 1)
        features, logits = self.ex.forward_clips(clips)
        features = features.view(self.batch_size, k, -1)[:n]
        if logits is not None:  # show_pred and plots: the centre crop
            logits = logits.view(self.batch_size, k, -1)[:n, self.ex.centre_crop or 0]
        return [features, logits]

    def finish(self, video: VideoState, outputs: list[torch.Tensor | None]) -> "VideoFeatures":
        features, logits = (outputs + [None, None])[:2]
        host_features, host_logits = self._to_host(features), self._to_host(logits)
        start = video.start
        if start is None:
            raise RuntimeError("the decoder ended without starting the video")
        result = self.ex._result(video.path, start, video.windows_cut, host_features, host_logits)
        if self.cuda and features is not None:
            event = torch.cuda.Event()
            event.record()
            self._copies[id(result)] = event
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
        return self.ex._timeout_error(video.start.frames_decoded[0] if video.start is not None else 0)

    def classify(self, exc: BaseException) -> str:
        return device_errors.classify(exc)

    def free_memory(self) -> None:
        if self.cuda:
            torch.cuda.empty_cache()


def run_batched(extractor: "R21DExtractor", paths: Any) -> Iterator[tuple[str, Any]]:
    """``(path, result or exception)`` in completion order; a fatal device error is raised as
    :class:`~utils.errors.DeviceFailure`."""
    workers = extractor.decode_workers
    batcher = WindowBatcher(R21DBatchModel(extractor, workers), workers, extractor.settings.video_timeout_s)
    try:
        yield from batcher.run(os.fspath(p) for p in paths)
    except Exception as exc:
        if device_errors.classify(exc) == "fatal":
            raise device_errors.device_failure(exc, extractor.device) from None
        raise
