"""The R(2+1)D feature extractor: video file -> ``(num_windows, 512)`` features.

Pipeline for each video (SPEC §3-§5)::

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

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from utils.console import plural
from utils.ffmpeg import FFmpegError, find_ffmpeg, reencode_fps, reencoded_path
from utils.metadata import window_metadata
from utils.prefetch import DeadlinePassed, prefetch_in_order
from utils.video_decode import VideoDecodeError, VideoInfo, VideoReader, check_frame_count
from utils.window_stream import WindowStream
from utils.windows import is_frame_used

from .builders import build_network, fold_batchnorm, load_weights
from .preprocess import CropTaps, blend_taps, crop_taps, gather_taps
from .weights import load_state_dict, resolve_checkpoint
from .zoo import ModelRecord, get_record

log = logging.getLogger(__name__)

FEATURE_TYPE = "r21d"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Frames per decoded chunk. A chunk holds only the crop's taps (150 KB a frame, any
# frame size), so host memory stays flat for 4K and 240p alike.
CHUNK_FRAMES = 32
MAX_QUEUED_CHUNKS = 2
RANDOM_WEIGHTS_SEED = 0
# Default memory guard: 8192 x 8192 covers 8K (7680x4320, 8192x4320); a corrupt header
# claiming 60000 x 60000 would otherwise ask for gigabytes per frame.
DEFAULT_MAX_FRAME_PIXELS = 8192 * 8192


class ConfigError(ValueError):
    """A setting has a value that is not allowed; the message names key, value and choices."""


class VideoTimeoutError(RuntimeError):
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
    taps_nhwc: torch.Tensor  # n x 224 x 224 x 3 uint8, see models.r21d.preprocess.gather_taps
    crop_taps: CropTaps


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
                f"device={device!r} does not exist: this machine has {plural(torch.cuda.device_count(), 'CUDA device')}"
            )
    return dev


def default_decode_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) // 2))


class R21DExtractor:
    """Build once, then ``extract(path) -> {"r21d": (num_windows, 512) float32}``.

    >>> ex = R21DExtractor(model_name="r2plus1d_18_16_kinetics", device="cpu")  # doctest: +SKIP
    >>> ex.extract("sample/bbb_4x3_25fps.mp4")["r21d"].shape  # doctest: +SKIP
    (8, 512)
    """

    feature_type = FEATURE_TYPE

    def __init__(
        self,
        model_name: str = "r2plus1d_18_16_kinetics",
        stack_size: int | None = None,
        step_size: int | None = None,
        extraction_fps: float | None = None,
        device: str = "cuda:0",
        batch_size: int = 16,
        precision: str = "fp32",
        checkpoint_path: str | None = None,
        random_weights: bool = False,
        tmp_path: str = "./tmp",
        keep_tmp_files: bool = False,
        show_pred: bool = False,
        decode_workers: int | None = None,
        apply_rotation: bool = False,
        channels_last: bool | None = None,
        video_timeout_s: float | None = None,
        max_frame_pixels: int | None = DEFAULT_MAX_FRAME_PIXELS,
    ) -> None:
        try:
            self.record: ModelRecord = get_record(model_name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.model_name = model_name
        self.stack_size = self.record.stack_size if stack_size is None else int(stack_size)
        self.step_size = self.record.step_size if step_size is None else int(step_size)
        for key, value in (("stack_size", self.stack_size), ("step_size", self.step_size), ("batch_size", batch_size)):
            if value < 1:
                raise ConfigError(f"{key}={value} is invalid: it must be an integer >= 1 (or null for the default)")
        if extraction_fps is not None and not (extraction_fps > 0 and math.isfinite(extraction_fps)):
            raise ConfigError(f"extraction_fps={extraction_fps} is invalid: it must be > 0, or null to keep the video's fps")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision={precision!r} is unknown; allowed: {', '.join(PRECISIONS)}")
        if decode_workers is not None and decode_workers < 1:
            raise ConfigError(f"decode_workers={decode_workers} is invalid: it must be >= 1 (or null for automatic)")
        if video_timeout_s is not None and not (video_timeout_s > 0 and math.isfinite(video_timeout_s)):
            raise ConfigError(f"video_timeout_s={video_timeout_s} is invalid: it must be > 0 seconds, or null for no limit")
        if max_frame_pixels is not None and max_frame_pixels < 1:
            raise ConfigError(f"max_frame_pixels={max_frame_pixels} is invalid: it must be >= 1, or null for no limit")
        self.video_timeout_s = video_timeout_s
        self.max_frame_pixels = max_frame_pixels
        if extraction_fps is not None:
            find_ffmpeg()  # fail before any work when re-encoding is impossible
        self.extraction_fps = extraction_fps
        self.batch_size = int(batch_size)
        self.precision = precision
        self.tmp_dir = Path(tmp_path) / self.feature_type / model_name
        self.keep_tmp_files = keep_tmp_files
        self.show_pred = show_pred
        self.apply_rotation = apply_rotation
        self.decode_workers = decode_workers or default_decode_workers()
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type == "cpu":
            log.warning("precision=fp16 on cpu is slow and barely supported; bf16 is the CPU choice")
        # channels_last_3d feeds cuDNN's and oneDNN's fast NDHWC kernels. Measured on a 2-core
        # CPU at batch 8-16 (BENCHMARKS.md): about +25% for fp32 and 2x for bf16 on AMX.
        self.channels_last = True if channels_last is None else channels_last

        self.weights_source = self._build_model(checkpoint_path, random_weights)
        self.labels = self.record.labels()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed clip shapes: autotuning pays off at once

    # ------------------------------------------------------------------ model
    def _build_model(self, checkpoint_path: str | None, random_weights: bool) -> str:
        # A fixed seed makes random_weights=true the same network in every process (workers,
        # shards, reruns), without touching the caller's random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            network = build_network(self.record)
        if random_weights:
            if checkpoint_path is not None:
                raise ConfigError("random_weights=true and checkpoint_path are exclusive: drop one of them")
            log.warning(
                "random_weights=true: %s has RANDOM weights; these features are meaningless "
                "(for tests and benchmarks only)", self.model_name
            )
            source = "random"
        else:
            path = resolve_checkpoint(self.record, checkpoint_path)
            load_weights(network, load_state_dict(path), source=str(path))
            source = str(path)
        # The classifier is kept aside for predictions; the network itself ends at the pooled features.
        self.classifier: nn.Linear = network.fc
        network.fc = nn.Identity()
        network = fold_batchnorm(network).to(self.device)
        self.classifier.eval().to(self.device)
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last_3d)
        self.network = network
        return source

    @torch.inference_mode()
    def forward_clips(self, clips_bcthw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Clips ``B x 3 x T x 112 x 112`` float32 (normalised) -> features ``B x 512`` float32
        and logits ``B x 400`` float32 (None unless ``show_pred``)."""
        clips_bcthw = clips_bcthw.to(self.device, non_blocking=True)
        if self.channels_last:
            clips_bcthw = clips_bcthw.contiguous(memory_format=torch.channels_last_3d)
        if self.precision == "fp32":
            features = self.network(clips_bcthw)
        else:
            with torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision]):
                features = self.network(clips_bcthw)
        features = features.float()
        logits = self.classifier(features) if self.show_pred else None
        return features, logits

    # ------------------------------------------------------------------ decode side (worker threads)
    def _chunks(self, video_path: str) -> Iterator[_VideoStart | _Chunk]:
        """First a :class:`_VideoStart`, then frame chunks, for one video.

        Stops with :class:`VideoTimeoutError` past ``video_timeout_s``, so a slow
        file frees its decode thread for the next video.
        """
        deadline = self._deadline()
        decoded_path = video_path
        tmp_file: Path | None = None
        if self.extraction_fps is not None:
            tmp_file = reencode_fps(video_path, reencoded_path(self.tmp_dir, video_path), self.extraction_fps,
                                    timeout_s=self.video_timeout_s)
            decoded_path = str(tmp_file)
        try:
            reader = VideoReader(decoded_path, apply_rotation=self.apply_rotation, max_frame_pixels=self.max_frame_pixels)
            start = _VideoStart(info=reader.info, decoded_path=decoded_path)
            yield start
            taps: CropTaps | None = None
            frame_shape: tuple[int, ...] = ()
            indices: list[int] = []
            frames: list[np.ndarray] = []
            keep = lambda i: is_frame_used(i, self.stack_size, self.step_size)  # noqa: E731
            for index, frame in reader.frames(keep=keep):
                start.frames_decoded[0] = index + 1
                if deadline is not None and time.monotonic() > deadline:
                    raise self._timeout_error(index + 1)
                if frame is None:
                    continue
                if taps is None:
                    frame_shape = frame.shape
                    taps = crop_taps(frame.shape[0], frame.shape[1], self.record.preprocessing)
                elif frame.shape != frame_shape:
                    raise ValueError(
                        f"frame size changes mid-stream ({frame_shape} then {frame.shape} at frame {index}); "
                        "re-encode the video to one size"
                    )
                indices.append(index)
                frames.append(gather_taps(frame, taps))
                if len(frames) == CHUNK_FRAMES:
                    yield self._make_chunk(indices, frames, taps)
                    indices, frames = [], []
            if frames:
                yield self._make_chunk(indices, frames, taps)
        finally:
            if tmp_file is not None and not self.keep_tmp_files:
                tmp_file.unlink(missing_ok=True)

    def _make_chunk(self, indices: list[int], taps_hwc: list[np.ndarray], taps: CropTaps) -> _Chunk:
        taps_nhwc = torch.from_numpy(np.stack(taps_hwc))
        if self.device.type == "cuda":
            taps_nhwc = taps_nhwc.pin_memory()  # lets the copy to the GPU run asynchronously
        return _Chunk(np.asarray(indices), taps_nhwc, taps)

    # ------------------------------------------------------------------ model side (caller thread)
    def _deadline(self) -> float | None:
        """``time.monotonic()`` by which the video that starts now must be done (None: no limit).

        Both sides keep one: the decode thread from when it starts a video, the
        model side from when it starts waiting for it (which also bounds a
        decoder stuck inside one native call).
        """
        return None if self.video_timeout_s is None else time.monotonic() + self.video_timeout_s

    def _consume(self, video_path: str, chunks: Iterator[_VideoStart | _Chunk], deadline: float | None) -> VideoFeatures:
        started: list[_VideoStart] = []
        try:
            return self._consume_until(video_path, chunks, deadline, started)
        except DeadlinePassed:
            raise self._timeout_error(started[0].frames_decoded[0] if started else 0) from None

    def _timeout_error(self, frames_decoded: int) -> VideoTimeoutError:
        return VideoTimeoutError(
            f"took longer than video_timeout_s={self.video_timeout_s} s ({plural(frames_decoded, 'frame')} decoded by then); "
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
                if len(pending) == self.batch_size:
                    run_batch(pending)
                    pending = []
        if pending:
            run_batch(pending)

        num_frames = start.frames_decoded[0]
        if num_frames == 0:
            raise VideoDecodeError("no decodable video frames (audio-only, truncated or corrupt file)")
        warnings = []
        shortfall = check_frame_count(num_frames, start.info)
        if shortfall:
            warnings.append(shortfall)
        num_windows = stream.next_window
        if num_windows == 0:
            warnings.append(
                f"{plural(num_frames, 'frame')} is shorter than one window of {plural(self.stack_size, 'frame')}: "
                f"empty (0, {self.record.feature_dim}) features"
            )
        for warning in warnings:
            log.warning("%s: %s", video_path, warning)
        features = (
            torch.cat(feats).cpu().numpy().astype(np.float32, copy=False)
            if feats else np.zeros((0, self.record.feature_dim), dtype=np.float32)
        )
        return VideoFeatures(
            path=video_path,
            features=features,
            window_bounds=[(i * self.step_size, i * self.step_size + self.stack_size) for i in range(num_windows)],
            fps=start.info.fps,
            num_frames=num_frames,
            logits=torch.cat(logits).cpu().numpy() if logits else (
                np.zeros((0, self.record.num_classes), np.float32) if self.show_pred else None
            ),
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
        """``(path, result or exception)`` for each path, in order, decoding ahead in parallel.

        A failing video yields its exception and the others go on.
        """
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
