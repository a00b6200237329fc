"""The R(2+1)D feature extractor: video file -> ``(num_windows, 512)`` features.

Pipeline for each video (the steps are explained in README.md, "How it works")::

    [decode thread]  (optional ffmpeg fps re-encode) -> OpenCV frames, RGB uint8
                     -> per frame, the 2 x 2 bilinear taps of the 112 x 112 crop:
                        224 x 224 x 3 uint8 whatever the frame size (frames in
                        window gaps are not even converted)
                     -> chunks of taps (pinned when the device is a GPU)
    [caller thread]  -> copy to the device, blend + normalise there (float32)
                     -> WindowStream: each frame stored once, windows cut from it
                     -> batches of windows -> network under inference_mode
                     -> features (B, 512) and, if asked, logits (B, 400)

Several videos are decoded ahead at once (``decode_workers``), so the device
does not wait for the decoder between videos.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from utils.batcher import BufferPool
from utils.errors import SettingsError, VideoError
from utils.ffmpeg import find_ffmpeg, reencode_fps, reencoded_path
from utils.metadata import window_metadata
from utils.prefetch import DeadlinePassed, default_decode_workers, prefetch_in_order
from utils.video_decode import VideoDecodeError, VideoInfo, VideoReader, check_frame_count
from utils.window_stream import WindowStream
from utils.windows import is_frame_used, window_bounds

from . import device_errors
from .batching import run_batched
from .builders import build_model
from .preprocess import CropTaps, blend_taps, crop_taps, gather_taps_into, tap_columns
from .settings import PRECISIONS as PRECISION_NAMES
from .settings import R21DSettings
from .zoo import ModelRecord, get_record

log = logging.getLogger(__name__)

FEATURE_TYPE = "r21d"
PRECISIONS = dict(zip(PRECISION_NAMES, (torch.float32, torch.bfloat16, torch.float16)))
# Frames per decoded chunk. A chunk holds only the crop's taps (150 KB a frame, any
# frame size), so host memory stays flat for 4K and 240p alike.
CHUNK_FRAMES = 32
MAX_QUEUED_CHUNKS = 2

# The name the Python API has always used for a bad setting.
ConfigError = SettingsError


class VideoTimeoutError(VideoError):
    """One video took longer than ``video_timeout_s``; the message is one line for the user."""


@dataclass
class VideoFeatures:
    """What one video gave.

    ``features``: ``(num_windows, feature_dim)`` float32; ``logits``:
    ``(num_windows, num_classes)`` float32 when predictions were asked for;
    ``window_bounds[i] = (start_frame, end_frame_exclusive)``; ``fps`` and
    ``num_frames`` describe the frames the windows index (after any re-encode);
    ``warnings`` are one-line notes for the run report (e.g. too short for a window).
    """

    path: str
    features: np.ndarray
    window_bounds: list[tuple[int, int]]
    fps: float
    num_frames: int
    logits: np.ndarray | None = None
    feature_type: str = FEATURE_TYPE
    warnings: list[str] = field(default_factory=list)

    def as_dict(self, metadata: bool = False) -> dict[str, np.ndarray]:
        """``{"r21d": features}``; with ``metadata`` also the window spans of
        :func:`utils.metadata.window_metadata` (``fps``, ``window_frames``, ``window_times_s``)."""
        out = {self.feature_type: self.features}
        if metadata:
            out.update(window_metadata(self.window_bounds, self.fps))
        return out


@dataclass(frozen=True)
class _Chunk:
    frame_indices: np.ndarray  # (n,) int64
    taps_nhwc: torch.Tensor  # n x 224 x 224 x 3 uint8 RGB, see models.r21d.preprocess.gather_taps
    crop_taps: CropTaps
    buffer: torch.Tensor | None = None  # the pool buffer taps_nhwc lives in, given back once read


@dataclass
class _VideoStart:
    info: VideoInfo
    decoded_path: str
    frames_decoded: list[int] = field(default_factory=lambda: [0])


def resolve_device(device: str) -> torch.device:
    """``torch.device(device)``; CUDA asked for but absent gives cpu with one warning."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not a PyTorch device string; use e.g. cuda:0, cuda, or cpu") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            log.warning("device=%s asked for but CUDA is not available: running on cpu", device)
            return torch.device("cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


class R21DExtractor:
    """Build once, then ``extract(path) -> {"r21d": (num_windows, 512) float32}``.

    Takes an :class:`~models.r21d.settings.R21DSettings`, or its fields as keywords
    (a first positional string is the ``model_name``)::

        R21DExtractor(R21DSettings(device="cpu"))
        R21DExtractor("r2plus1d_18_16_kinetics", device="cpu", stack_size=8)

    ``channels_last`` (default: on) is a layout switch for benchmarks, not a setting.

    >>> ex = R21DExtractor(model_name="r2plus1d_18_16_kinetics", device="cpu")  # doctest: +SKIP
    >>> ex.extract("sample/bbb_4x3_25fps.mp4")["r21d"].shape  # doctest: +SKIP
    (8, 512)
    """

    feature_type = FEATURE_TYPE
    Settings = R21DSettings

    def __init__(self, settings: R21DSettings | str | None = None, /, *, channels_last: bool | None = None,
                 **overrides: Any) -> None:
        if isinstance(settings, str):
            overrides = {"model_name": settings, **overrides}
            settings = None
        if settings is None:
            settings = R21DSettings(**overrides)
        elif overrides:
            settings = dataclasses.replace(settings, **overrides)
        self.settings = settings
        self.record: ModelRecord = get_record(settings.model_name)
        self.model_name = settings.model_name
        self.feature_dim = self.record.feature_dim
        self.stack_size, self.step_size = settings.window
        if settings.extraction_fps is not None:
            find_ffmpeg()  # fail before any work when re-encoding is impossible
        self.tmp_dir = Path(settings.tmp_path) / self.feature_type / settings.model_name
        self.decode_workers = settings.decode_workers or default_decode_workers()
        self.device = resolve_device(settings.device)
        if settings.precision == "fp16" and self.device.type == "cpu":
            log.warning("precision=fp16 on cpu is slow and barely supported; bf16 is the CPU choice")
        # channels_last_3d feeds cuDNN's and oneDNN's fast NDHWC kernels. Measured on a 2-core
        # CPU at batch 8-16 (BENCHMARKS.md): about +25% for fp32 and 2x for bf16 on AMX.
        self.channels_last = True if channels_last is None else channels_last
        model = build_model(self.record, settings.checkpoint_path, settings.random_weights,
                            self.device, self.channels_last)
        self.network, self.classifier, self.weights_source = model.network, model.classifier, model.weights_source
        self.labels = self.record.labels()
        if self.device.type == "cuda":
            # Every batch has one shape (padded to batch_size, see batching.py): cuDNN tunes once,
            # in the start-up probe, which also catches a GPU this torch has no kernels for.
            torch.backends.cudnn.benchmark = True
            clips = torch.zeros(settings.batch_size, 3, self.stack_size, *self.record.preprocessing.crop_hw)
            device_errors.probe(lambda: self.forward_clips(clips), self.device)

    @torch.inference_mode()
    def forward_clips(self, clips_bcthw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Clips ``B x 3 x T x 112 x 112`` float32 (normalised) -> features ``B x 512`` float32
        and logits ``B x 400`` float32 (None unless ``show_pred``)."""
        clips_bcthw = clips_bcthw.to(self.device, non_blocking=True)
        if self.channels_last:
            clips_bcthw = clips_bcthw.contiguous(memory_format=torch.channels_last_3d)
        if self.settings.precision == "fp32":
            features = self.network(clips_bcthw)
        else:
            with torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.settings.precision]):
                features = self.network(clips_bcthw)
        features = features.float()
        logits = self.classifier(features) if self.settings.show_pred else None
        return features, logits

    # ------------------------------------------------------------------ decode side (worker threads)
    def _chunks(self, video_path: str, pool: BufferPool | None = None,
                cancelled: Callable[[], bool] = lambda: False) -> Iterator[_VideoStart | _Chunk]:
        """First a :class:`_VideoStart`, then frame chunks, for one video.

        Each frame's taps are gathered straight into a chunk buffer from ``pool`` (reused,
        pinned on a GPU; without a pool a new one per chunk), in RGB order from the decoder's
        BGR frame. Stops with :class:`VideoTimeoutError` past ``video_timeout_s``, so a slow
        file frees its decode thread for the next video, and quietly once ``cancelled()``.
        """
        deadline = self._deadline()
        decoded_path = video_path
        tmp_file: Path | None = None
        buffer: torch.Tensor | None = None
        if self.settings.extraction_fps is not None:
            tmp_file = reencode_fps(video_path, reencoded_path(self.tmp_dir, video_path), self.settings.extraction_fps,
                                    timeout_s=self.settings.video_timeout_s)
            decoded_path = str(tmp_file)
        try:
            reader = VideoReader(decoded_path, apply_rotation=self.settings.apply_rotation,
                                 max_frame_pixels=self.settings.max_frame_pixels, threads=self._decoder_threads())
            start = _VideoStart(info=reader.info, decoded_path=decoded_path)
            yield start
            taps: CropTaps | None = None
            columns = np.zeros(0, np.int64)
            frame_shape: tuple[int, ...] = ()
            indices: list[int] = []
            keep = lambda i: is_frame_used(i, self.stack_size, self.step_size)  # noqa: E731
            for index, frame in reader.frames(keep=keep, rgb=False):
                start.frames_decoded[0] = index + 1
                if deadline is not None and time.monotonic() > deadline:
                    raise self._timeout_error(index + 1)
                if frame is None:
                    continue
                if taps is None:
                    frame_shape = frame.shape
                    taps = crop_taps(frame.shape[0], frame.shape[1], self.record.preprocessing)
                    columns = tap_columns(taps, bgr=True)
                elif frame.shape != frame_shape:
                    raise ValueError(
                        f"frame size changes mid-stream ({frame_shape} then {frame.shape} at frame {index}); "
                        "re-encode the video to one size"
                    )
                if buffer is None:
                    buffer = self._chunk_buffer(pool, cancelled)
                    if buffer is None:  # cancelled while waiting for a free buffer
                        return
                gather_taps_into(frame, taps, columns, buffer.numpy()[len(indices)])
                indices.append(index)
                if len(indices) == CHUNK_FRAMES:
                    chunk, buffer, indices = self._make_chunk(indices, buffer, taps, pool), None, []
                    yield chunk
            if indices:
                chunk, buffer = self._make_chunk(indices, buffer, taps, pool), None
                yield chunk
        finally:
            if buffer is not None and pool is not None:
                pool.release(buffer)
            if tmp_file is not None and not self.settings.keep_tmp_files:
                tmp_file.unlink(missing_ok=True)

    def _chunk_buffer(self, pool: BufferPool | None, cancelled: Callable[[], bool]) -> torch.Tensor | None:
        if pool is not None:
            return pool.acquire(cancelled)
        crop_h, crop_w = self.record.preprocessing.crop_hw
        buffer = torch.empty((CHUNK_FRAMES, 2 * crop_h, 2 * crop_w, 3), dtype=torch.uint8)
        return buffer.pin_memory() if self.device.type == "cuda" else buffer

    def _decoder_threads(self) -> int:
        """FFmpeg threads per open video: the cores shared by the decoders running at once."""
        return max(1, (os.cpu_count() or 1) // max(1, self.decode_workers))

    @staticmethod
    def _make_chunk(indices: list[int], buffer: torch.Tensor, taps: CropTaps, pool: BufferPool | None) -> _Chunk:
        return _Chunk(np.asarray(indices), buffer[: len(indices)], taps, buffer if pool is not None else None)

    # ------------------------------------------------------------------ model side (caller thread)
    def _deadline(self) -> float | None:
        """``time.monotonic()`` by which the video that starts now must be done (None: no limit).

        Both sides keep one: the decode thread from when it starts a video, the
        model side from when it starts waiting for it (which also bounds a
        decoder stuck inside one native call).
        """
        timeout_s = self.settings.video_timeout_s
        return None if timeout_s is None else time.monotonic() + timeout_s

    def _consume(self, video_path: str, chunks: Iterator[_VideoStart | _Chunk], deadline: float | None) -> VideoFeatures:
        started: list[_VideoStart] = []
        try:
            return self._consume_until(video_path, chunks, deadline, started)
        except DeadlinePassed:
            raise self._timeout_error(started[0].frames_decoded[0] if started else 0) from None

    def _timeout_error(self, frames_decoded: int) -> VideoTimeoutError:
        return VideoTimeoutError(
            f"took longer than video_timeout_s={self.settings.video_timeout_s} s ({frames_decoded} frames decoded by then); "
            "raise video_timeout_s, or set it to null for no limit"
        )

    def _consume_until(
        self, video_path: str, chunks: Iterator[_VideoStart | _Chunk], deadline: float | None,
        started: list[_VideoStart],
    ) -> VideoFeatures:
        start = next(chunks)
        assert isinstance(start, _VideoStart)
        started.append(start)
        stream = WindowStream(self.stack_size, self.step_size)
        pending: list[torch.Tensor] = []
        feats: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []

        def run_batch(windows_tchw: list[torch.Tensor]) -> None:
            clips_bcthw = torch.stack(windows_tchw).permute(0, 2, 1, 3, 4)
            f, lg = self.forward_clips(clips_bcthw)
            # Kept on the device until the video ends: a copy to the host here would make
            # the caller wait for every batch instead of queueing the next one.
            feats.append(f)
            if lg is not None:
                logits.append(lg)

        device_taps: CropTaps | None = None  # the blend constants, copied to the device once per video
        for chunk in chunks:
            assert isinstance(chunk, _Chunk)
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlinePassed
            if device_taps is None:
                device_taps = chunk.crop_taps.to(self.device)
            frames = blend_taps(chunk.taps_nhwc.to(self.device, non_blocking=True), device_taps)
            for _, window in stream.push(chunk.frame_indices, frames):
                pending.append(window)
                if len(pending) == self.settings.batch_size:
                    run_batch(pending)
                    pending = []
        if pending:
            run_batch(pending)
        return self._result(
            video_path, start, stream.next_window,
            torch.cat(feats).cpu().numpy() if feats else None,
            torch.cat(logits).cpu().numpy() if logits else None,
        )

    def _result(self, video_path: str, start: _VideoStart, num_windows: int, features: np.ndarray | None,
                logits: np.ndarray | None) -> VideoFeatures:
        """The :class:`VideoFeatures` of a decoded video from its ``num_windows`` rows (host arrays,
        None when there was no window); raises for a video with no frame or a window miscount."""
        num_frames = start.frames_decoded[0]
        if num_frames == 0:
            raise VideoDecodeError("no decodable video frames (audio-only, truncated or corrupt file)")
        warnings = []
        shortfall = check_frame_count(num_frames, start.info)
        if shortfall:
            warnings.append(shortfall)
        bounds = window_bounds(num_frames, self.stack_size, self.step_size)
        if num_windows != len(bounds):
            raise RuntimeError(f"{num_windows} windows were cut from {num_frames} frames, expected {len(bounds)}")
        if num_windows == 0:
            warnings.append(
                f"{num_frames} frames is shorter than one window of {self.stack_size} frames: "
                f"empty (0, {self.record.feature_dim}) features"
            )
        for warning in warnings:
            log.warning("%s: %s", video_path, warning)
        if features is None:
            features = np.zeros((0, self.record.feature_dim), dtype=np.float32)
        if logits is None and self.settings.show_pred:
            logits = np.zeros((0, self.record.num_classes), np.float32)
        return VideoFeatures(
            path=video_path,
            features=features.astype(np.float32, copy=False),
            window_bounds=bounds,
            fps=start.info.fps,
            num_frames=num_frames,
            logits=logits,
            warnings=warnings,
        )

    # ------------------------------------------------------------------ public API
    def extract_video(self, video_path: str | os.PathLike) -> VideoFeatures:
        """Features (and predictions if ``show_pred``) of one video; raises on a bad file."""
        deadline = self._deadline()
        return self._consume(os.fspath(video_path), iter(self._chunks(os.fspath(video_path))), deadline)

    def extract(self, video_path: str | os.PathLike) -> dict[str, np.ndarray]:
        """``{"r21d": float32 array (num_windows, 512)}`` for one video."""
        return self.extract_video(video_path).as_dict()

    def extract_many(self, video_paths: Iterable[str]) -> Iterator[tuple[str, VideoFeatures | Exception]]:
        """``(path, result or exception)`` for each path, **in completion order**.

        ``decode_workers`` videos decode at once, each on its own thread; batches take windows
        from all of them (utils/batcher.py), padded to ``batch_size``, so features are the same
        bit for bit whatever the interleaving. A failing video yields its exception and the
        others go on; a fatal device error raises :class:`~utils.errors.DeviceFailure`.
        """
        return run_batched(self, video_paths)

    def extract_many_in_order(self, video_paths: Iterable[str]) -> Iterator[tuple[str, VideoFeatures | Exception]]:
        """The previous pipeline, kept for side-by-side benchmarks: videos consumed strictly in
        order, each decoder at most ``MAX_QUEUED_CHUNKS`` ahead, batches within one video."""
        for path, producer in prefetch_in_order(
            video_paths, lambda p: self._chunks(p), self.decode_workers, MAX_QUEUED_CHUNKS
        ):
            try:
                deadline = self._deadline()
                yield path, self._consume(path, producer.items(deadline), deadline)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # reported per video by the caller
                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    torch.cuda.empty_cache()
                yield path, exc
