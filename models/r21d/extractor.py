"""The R(2+1)D feature extractor: video file -> ``(num_windows, 512)`` features.

Pipeline for each video (the steps are explained in docs/architecture.md, "The pipeline, thread by thread")::

    [decode thread]  (optional ffmpeg fps re-encode) -> decoded frames (utils.video.decoders:
                        PyAV by default; 8-bit 4:2:0 / 4:2:2 frames as Y, U, V planes,
                        others as RGB uint8)
                     -> per frame, the 2 x 2 bilinear taps of the 112 x 112 crop:
                        224 x 224 x 3 uint8 whatever the frame size (frames in
                        window gaps are not even converted)
                     -> chunks of taps (pinned when the device is a GPU), each saying
                        whether its taps are RGB or YUV
    [caller thread]  -> copy to the device; YUV taps -> RGB there, exactly as swscale
                        converts whole frames; blend + normalise (float32)
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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from r21d_features.utils.pipeline.batcher import BufferPool
from r21d_features.utils.core.console import plural
from r21d_features.utils.core.cpu import cpu_info
from r21d_features.utils.core.errors import SettingsError, VideoError
from r21d_features.utils.core.shard_names import shown_name
from r21d_features.utils.video.ffmpeg import find_ffmpeg, private_reencoded_path, reencode_fps, reencoded_path
from r21d_features.utils.outputs.metadata import window_metadata
from r21d_features.utils.video.decoders import VideoDecodeError, VideoInfo, check_frame_count, open_video
from r21d_features.utils.video.decoders.yuv import YuvForm, yuv_taps_to_rgb
from r21d_features.utils.video.sources import open_source
from r21d_features.utils.pipeline.prefetch import default_decode_workers
from r21d_features.utils.video.windows import is_frame_used, window_bounds

from . import device_errors
from .batching import run_batched
from .builders import build_model
from .cudnn import tuned_convolutions
from .device_defaults import default_batch_clips, slow_bf16_warning
from .threads import network_threads

try:
    from .host_blend import HostBlender
except ImportError as _no_numba:  # numba missing or broken: the CPU runs the GPU's chunk path
    HostBlender = None
    HOST_BLEND_MISSING = f"{_no_numba}"
from .crops import crop_boxes, crop_region, cut_crops
from .crops import centre_index as crops_centre_index
from .preprocess import CropTaps, blend_taps, crop_taps, gather_planes_into
from .settings import PRECISIONS as PRECISION_NAMES
from .settings import R21DSettings
from .zoo import ModelRecord, get_record

log = logging.getLogger(__name__)

FEATURE_TYPE = "r21d"
PRECISIONS = dict(zip(PRECISION_NAMES, (torch.float32, torch.bfloat16, torch.float16)))
# Frames per decoded chunk. A chunk holds only the crop's taps (150 KB a frame, any
# frame size), so host memory stays flat for 4K and 240p alike.
CHUNK_FRAMES = 32

# Device types the pipeline is written and tested for (pinned memory, autocast, cuDNN).
USABLE_DEVICE_TYPES = ("cpu", "cuda")

# The name the Python API has always used for a bad setting.
ConfigError = SettingsError


class VideoTimeoutError(VideoError):
    """One video took longer than ``video_timeout_s``; the message is one line for the user."""


@dataclass
class VideoFeatures:
    """What one video gave.

    ``features``: ``(num_windows, feature_dim)`` float32, or ``(num_windows, num_crops,
    feature_dim)`` with ``crops=five|ten``; ``logits``: ``(num_windows, num_classes)``
    float32 of the centre crop when predictions were asked for;
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
    stack_size: int | None = None
    step_size: int | None = None
    centre_crop: int | None = None  # index of the centre crop in a multi-crop ``features``

    @property
    def centre_features(self) -> np.ndarray:
        """``(num_windows, feature_dim)``: the centre crop's features (all of them without multi-crop)."""
        return self.features if self.centre_crop is None else self.features[:, self.centre_crop]

    def as_dict(self, metadata: bool = False) -> dict[str, np.ndarray]:
        """``{"r21d": features}``; with ``metadata`` also the window spans of
        :func:`utils.outputs.metadata.window_metadata` (``fps``, ``window_frames``, ``window_times_s``,
        ``stack_size``, ``step_size``)."""
        out = {self.feature_type: self.features}
        if metadata:
            out.update(window_metadata(self.window_bounds, self.fps, self.stack_size, self.step_size))
        return out


@dataclass(frozen=True)
class Chunk:
    """Consecutive used frames of one video, as the decode thread leaves them.

    ``data``: on a GPU each frame's gathered taps, ``n x 2h x 2w x 3`` uint8 (``h x w``: the
    crops' region; RGB, or Y, U, V when ``yuv`` is set), finished on the device; on a CPU
    (``blended``) each frame's normalised region already, ``n x h x w x 3`` float32.
    """

    frame_indices: np.ndarray  # (n,) int64
    data: torch.Tensor
    crop_taps: CropTaps
    yuv: YuvForm | None = None
    blended: bool = False
    buffer: torch.Tensor | None = None  # the pool buffer `data` lives in, given back once read


@dataclass
class VideoStart:
    info: VideoInfo
    decoded_path: str
    frames_decoded: list[int] = field(default_factory=lambda: [0])


def resolve_device(device: str) -> torch.device:
    """``torch.device(device)``; CUDA asked for but absent gives cpu with one warning."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device!r} is not a PyTorch device string; use e.g. cuda:0, cuda, or cpu") from None
    if dev.type not in USABLE_DEVICE_TYPES:
        raise ConfigError(
            f"device={device!r} cannot be used by this build ({dev.type} is not supported here); "
            "allowed: cpu, cuda, cuda:N"
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            log.warning("device=%s asked for but CUDA is not available: running on cpu", device)
            return torch.device("cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device={device!r} does not exist: torch sees {plural(torch.cuda.device_count(), 'CUDA device')}"
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
        # Multi-crop: the crops (docs/guides/crops.md) are a batch dimension; only their bounding
        # box of the resized frame is computed, and every frame is decoded once.
        self.crop_boxes = crop_boxes(settings.crops, self.record.preprocessing)
        self.crop_region = crop_region(self.crop_boxes, self.record.preprocessing)
        self.num_crops = len(self.crop_boxes)
        self.centre_crop = None if settings.crops == "center" else crops_centre_index(settings.crops)
        self.feature_shape = ((self.feature_dim,) if settings.crops == "center"
                              else (self.num_crops, self.feature_dim))
        # What a saved file says about how it was made (HDF5 attributes).
        self.output_attrs = {"model": settings.model_name, "crops": settings.crops}
        self.device = resolve_device(settings.device)
        # batch_size counts clips (windows x crops): the memory of a forward pass.
        self.batch_size = settings.batch_size or default_batch_clips(self.device, self.num_crops, self.stack_size)
        self.windows_per_batch = max(1, self.batch_size // self.num_crops)
        if settings.extraction_fps is not None:
            find_ffmpeg()  # fail before any work when re-encoding is impossible
        self.tmp_dir = Path(settings.tmp_path) / self.feature_type / settings.model_name
        self.decode_workers = settings.decode_workers or default_decode_workers()
        # On a CPU each decode thread finishes its own frames (host_blend.py); on a GPU the
        # decode threads only gather taps and the device does the arithmetic.
        self.blend_on_host = self.device.type == "cpu" and HostBlender is not None
        if self.device.type == "cpu" and HostBlender is None:
            log.warning("numba cannot be imported (%s): CPU preprocessing runs as array passes on one thread, "
                        "same numbers, slower; pip install numba", HOST_BLEND_MISSING)
        self._batch_buffer: torch.Tensor | None = None  # forward_windows' input, reused
        self._batch_lock = threading.Lock()
        if settings.precision == "fp16" and self.device.type == "cpu":
            log.warning("precision=fp16 on cpu is slow and barely supported; bf16 is the CPU choice")
        if settings.precision == "bf16" and self.device.type == "cpu":
            warning = slow_bf16_warning(cpu_info())
            if warning:
                log.warning(warning)
        # channels_last_3d feeds cuDNN's and oneDNN's fast NDHWC kernels. Measured on a 2-core
        # CPU at batch 8-16 (docs/benchmarks.md): about +25% for fp32 and 2x for bf16 on AMX.
        self.channels_last = True if channels_last is None else channels_last
        model = build_model(self.record, settings.checkpoint_path, settings.random_weights,
                            self.device, self.channels_last)
        self.network, self.classifier, self.weights_source = model.network, model.classifier, model.weights_source
        self.weights_id = model.weights_id
        self.labels = self.record.labels()
        if self.device.type == "cuda":
            # Every batch has one shape (padded to batch_size, see batching.py): cuDNN tunes once,
            # in the start-up probe, which also catches a GPU this torch has no kernels for.
            clips = torch.zeros(self.windows_per_batch * self.num_crops, 3, self.stack_size,
                                *self.record.preprocessing.crop_hw)
            device_errors.probe(lambda: self.forward_clips(clips), self.device)

    def provenance(self) -> dict[str, Any]:
        """What the numbers depend on, recorded next to every saved output (:mod:`utils.outputs.provenance`).

        One entry per setting that changes the features; a new one is one more key here. ``batch_size``, ``device`` and the worker counts change only
        float rounding, so they are not entries.
        """
        return {
            "feature_type": self.feature_type,
            "model_name": self.model_name,
            "weights": self.weights_id,
            "stack_size": self.stack_size,
            "step_size": self.step_size,
            "extraction_fps": self.settings.extraction_fps,
            "precision": self.settings.precision,
            "apply_rotation": self.settings.apply_rotation,
            "crops": self.settings.crops,
            "decoder": self.settings.decoder,
        }

    @torch.inference_mode()
    def forward_clips(self, clips_bcthw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Clips ``B x 3 x T x 112 x 112`` float32 (normalised) -> features ``B x 512`` float32
        and logits ``B x 400`` float32 (None unless ``show_pred``)."""
        with tuned_convolutions(self.device), network_threads(self.device, self.settings.num_threads):
            return self._forward_clips(clips_bcthw)

    def _forward_clips(self, clips_bcthw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
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
    # What models/r21d/batching.py runs for utils/pipeline/batcher.py: decode_chunks on the decoder
    # threads; chunk_frames, forward_windows, video_result and timeout_error on the model thread.
    def decode_chunks(self, video_path: str, pool: BufferPool | None = None,
                cancelled: Callable[[], bool] = lambda: False) -> Iterator[VideoStart | Chunk]:
        """First a :class:`VideoStart`, then frame chunks, for one video.

        Each frame goes straight into a chunk buffer from ``pool`` (reused, pinned on a GPU;
        without a pool a new one per chunk) as :class:`Chunk` says: its taps (GPU) or its
        finished region (CPU, :class:`HostBlender`). Stops with
        :class:`VideoTimeoutError` past ``video_timeout_s``, so a slow file frees its decode thread for the next video, and quietly once ``cancelled()``.
        """
        deadline = self._deadline()
        if self.blend_on_host:
            pool = None  # the finished frames outlive a chunk (windows are views): new buffers
        source = open_source(video_path)
        decoded_path = video_path
        tmp_file: Path | None = None
        buffer: torch.Tensor | None = None
        if self.settings.extraction_fps is not None:
            local = source.local_path()
            url = None
            if local is None:
                source.check()  # a missing object is named as such, not as ffmpeg's HTTP error
                url = source.ffmpeg_url()
            if local is None and url is None:
                raise VideoDecodeError(f"extraction_fps re-encodes files ffmpeg can open and {video_path!r} is not "
                                       "one; set extraction_fps=null")
            # A name of its own: same-named videos of different folders (video_root) may be
            # re-encoded at the same time; the reference's name is given when it is kept.
            tmp_file = reencode_fps(local or shown_name(video_path), private_reencoded_path(self.tmp_dir, video_path),
                                    self.settings.extraction_fps,
                                    timeout_s=self.settings.video_timeout_s, url=url)
            decoded_path = str(tmp_file)
            source = open_source(tmp_file)
        try:
            reader = open_video(source, self.settings.decoder, apply_rotation=self.settings.apply_rotation,
                                max_frame_pixels=self.settings.max_frame_pixels, threads=self._decoder_threads())
            start = VideoStart(info=reader.info, decoded_path=decoded_path)
            yield start
            taps: CropTaps | None = None
            frame_shape: tuple[int, ...] = ()
            indices: list[int] = []
            yuv: YuvForm | None = None  # the colour form of the taps in `buffer`
            blender: HostBlender | None = None
            keep = lambda i: is_frame_used(i, self.stack_size, self.step_size)  # noqa: E731
            for index, planes in reader.frames(keep=keep):
                start.frames_decoded[0] = index + 1
                if deadline is not None and time.monotonic() > deadline:
                    raise self.timeout_error(index + 1)
                if planes is None:
                    continue
                if taps is None:
                    frame_shape = (planes.height, planes.width)
                    taps = crop_taps(planes.height, planes.width, self.record.preprocessing, self.crop_region)
                    blender = HostBlender(taps) if self.blend_on_host else None
                elif (planes.height, planes.width) != frame_shape:
                    raise ValueError(
                        f"frame size changes mid-stream ({frame_shape} then {(planes.height, planes.width)} at "
                        f"frame {index}); re-encode the video to one size"
                    )
                if indices and blender is None and planes.yuv != yuv:  # one colour form of taps per chunk
                    chunk, buffer, indices = self._make_chunk(indices, buffer, taps, yuv, pool), None, []
                    yield chunk
                yuv = planes.yuv
                if buffer is None:
                    buffer = self._chunk_buffer(pool, cancelled)
                    if buffer is None:  # cancelled while waiting for a free buffer
                        return
                if blender is not None:
                    blender.blend_into(planes, buffer.numpy()[len(indices)])
                else:
                    gather_planes_into(planes, taps, buffer.numpy()[len(indices)])
                indices.append(index)
                if len(indices) == CHUNK_FRAMES:
                    chunk, buffer, indices = self._make_chunk(indices, buffer, taps, yuv, pool), None, []
                    yield chunk
            if indices:
                chunk, buffer = self._make_chunk(indices, buffer, taps, yuv, pool), None
                yield chunk
            start.info = reader.info  # the backend may have refined the count the container presents
        finally:
            if buffer is not None and pool is not None and tuple(pool.shape) == tuple(buffer.shape):
                pool.release(buffer)
            if tmp_file is not None and not self.settings.keep_tmp_files:
                tmp_file.unlink(missing_ok=True)
            elif tmp_file is not None and tmp_file.exists():
                os.replace(tmp_file, reencoded_path(self.tmp_dir, video_path))

    def _decoder_threads(self) -> int:
        """FFmpeg threads per open video: the cores shared by the decoders running at once."""
        return max(1, (os.cpu_count() or 1) // max(1, self.decode_workers))

    @property
    def chunk_layout(self) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape and dtype of a chunk buffer (see :class:`Chunk`): ``CHUNK_FRAMES x h x w x 3``
        float32 on a CPU, ``CHUNK_FRAMES x 2h x 2w x 3`` uint8 on a GPU (``h x w``: the crops' region)."""
        _, _, h, w = self.crop_region
        if self.blend_on_host:
            return (CHUNK_FRAMES, h, w, 3), torch.float32
        return (CHUNK_FRAMES, 2 * h, 2 * w, 3), torch.uint8

    def _chunk_buffer(self, pool: BufferPool | None, cancelled: Callable[[], bool]) -> torch.Tensor | None:
        """A chunk buffer: from ``pool`` (reused, pinned on a GPU), else a new one; None once
        ``cancelled()`` while waiting for a free one."""
        if pool is not None:
            return pool.acquire(cancelled)
        shape, dtype = self.chunk_layout
        buffer = torch.empty(shape, dtype=dtype)
        return buffer.pin_memory() if self.device.type == "cuda" else buffer

    def _make_chunk(self, indices: list[int], buffer: torch.Tensor, taps: CropTaps, yuv: YuvForm | None,
                    pool: BufferPool | None) -> Chunk:
        return Chunk(np.asarray(indices), buffer[: len(indices)], taps, None if self.blend_on_host else yuv,
                      self.blend_on_host, buffer if pool is not None else None)

    # ------------------------------------------------------------------ model side (caller thread)
    def chunk_frames(self, chunk: Chunk, device_taps: CropTaps) -> torch.Tensor:
        """A chunk's frames as the windows take them: ``n x K x 112 x 112 x 3`` float32 on the
        device (``K`` crops); ``device_taps``: the chunk's taps on the device. Once this returns,
        the chunk's buffer may be reused (on a GPU: once the copy queued here has run)."""
        data = chunk.data.to(self.device, non_blocking=True)
        if not chunk.blended:  # (a blended chunk never lives in a pool buffer: see decode_chunks)
            if chunk.yuv is not None:  # YUV -> RGB on the taps only, as swscale would on the whole frame
                data = yuv_taps_to_rgb(data, chunk.yuv)
            data = blend_taps(data, device_taps)
        return cut_crops(data, self.crop_boxes, self.record.preprocessing)

    def forward_windows(self, windows_tkhwc: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Windows (each ``T x K x 112 x 112 x 3``) -> features ``n x K x D`` and the centre crop's
        logits ``n x classes`` (None unless ``show_pred``), on the device.

        The batch is padded to ``windows_per_batch`` windows: the network always sees one
        shape (no cuDNN autotuning per new shape), so a window's features are the same bit
        for bit whichever windows share its batch. The windows are copied once, straight
        into the network's ``(B * K) x C x T x H x W`` clips, channels last (``T x H x W x C``
        in memory, the frames' own layout: a plain copy).
        """
        n, size, k = len(windows_tkhwc), self.windows_per_batch, self.num_crops
        t, _, h, w, c = windows_tkhwc[0].shape
        with self._batch_lock:
            clips = self._batch_buffer
            if clips is None or clips.shape != (size * k, c, t, h, w) or clips.device != windows_tkhwc[0].device:
                # One buffer for the run, in the layout forward_clips wants (no second copy there).
                memory_format = torch.channels_last_3d if self.channels_last else torch.contiguous_format
                clips = torch.empty((size * k, c, t, h, w), device=windows_tkhwc[0].device, memory_format=memory_format)
                self._batch_buffer = clips
            clips_bkcthw = clips.view(size, k, c, t, h, w)
            on_cpu = clips.device.type == "cpu"
            for clip_kcthw, window_tkhwc in zip(clips_bkcthw, windows_tkhwc):
                window_kcthw = window_tkhwc.permute(1, 4, 0, 2, 3)
                if on_cpu:  # numpy copies on this thread: waking torch's thread team, whose cores
                    np.copyto(clip_kcthw.numpy(), window_kcthw.numpy())  # are decoding, costs more
                else:
                    clip_kcthw.copy_(window_kcthw)
            if n < size:  # padding rows (their outputs are dropped)
                if on_cpu:
                    clips_bkcthw[n:].numpy().fill(0.0)
                else:
                    clips_bkcthw[n:].zero_()
            features, logits = self.forward_clips(clips)
        features = features.view(size, k, -1)[:n]
        if logits is not None:  # show_pred and plots: the centre crop
            logits = logits.view(size, k, -1)[:n, self.centre_crop or 0]
        return features, logits

    def _deadline(self) -> float | None:
        """``time.monotonic()`` by which the video that starts now must be done (None: no limit).

        Both sides keep one: the decode thread from when it starts a video, the
        model side from when it starts waiting for it (which also bounds a
        decoder stuck inside one native call).
        """
        timeout_s = self.settings.video_timeout_s
        return None if timeout_s is None else time.monotonic() + timeout_s

    def timeout_error(self, frames_decoded: int) -> VideoTimeoutError:
        return VideoTimeoutError(
            f"took longer than video_timeout_s={self.settings.video_timeout_s} s ({plural(frames_decoded, 'frame')} decoded "
            "by then); "
            "raise video_timeout_s, or set it to null for no limit"
        )

    def video_result(self, video_path: str, start: VideoStart, num_windows: int, features: np.ndarray | None,
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
                f"{plural(num_frames, 'frame')} is shorter than one window of {plural(self.stack_size, 'frame')}: "
                f"empty {(0, *self.feature_shape)} features"
            )
        for warning in warnings:
            log.warning("%s: %s", video_path, warning)
        if features is None:
            features = np.zeros((0, *self.feature_shape), dtype=np.float32)
        features = features.reshape(-1, *self.feature_shape)
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
            stack_size=self.stack_size,
            step_size=self.step_size,
            centre_crop=self.centre_crop,
        )

    # ------------------------------------------------------------------ public API
    def extract_video(self, video_path: str | os.PathLike) -> VideoFeatures:
        """Features (and predictions if ``show_pred``) of one video; raises on a bad file.

        A run of length one through :meth:`extract_many`: the same decoder threads, batches
        and forward passes as every other entry point."""
        for _, result in self.extract_many([os.fspath(video_path)]):
            if isinstance(result, BaseException):
                raise result
            return result
        raise RuntimeError(f"no result for {os.fspath(video_path)!r}")  # (extract_many yields one per path)

    def extract(self, video_path: str | os.PathLike) -> dict[str, np.ndarray]:
        """``{"r21d": float32 array (num_windows, 512)}`` for one video."""
        return self.extract_video(video_path).as_dict()

    def extract_many(self, video_paths: Iterable[str]) -> Iterator[tuple[str, VideoFeatures | Exception]]:
        """``(path, result or exception)`` for each path, **in completion order**.

        ``decode_workers`` videos decode at once, each on its own thread; batches take windows
        from all of them (utils/pipeline/batcher.py), padded to ``batch_size``, so features are the same
        bit for bit whatever the interleaving. A failing video yields its exception and the
        others go on; a fatal device error raises :class:`~utils.core.errors.DeviceFailure`.
        """
        return run_batched(self, video_paths)
