"""Settings of the R(2+1)D extractor: one frozen record, checked when it is made.

Each field is also a command-line key of the same name (the command line's
schema is this record combined with the run loop's and the Ray runner's); its
default and its help text are written here and nowhere else.
"""

import math
import re
from dataclasses import dataclass, field
from typing import Optional

from r21d_features.utils.video.decoders import DECODERS
from r21d_features.utils.core.errors import SettingsError

from .crops import CROP_CHOICES
from .zoo import MODEL_ZOO

PRECISIONS = ("fp32", "bf16", "fp16")
# 8192 x 8192 covers 8K (7680x4320, 8192x4320); a corrupt header claiming 60000 x 60000
# would otherwise ask for gigabytes per frame.
DEFAULT_MAX_FRAME_PIXELS = 8192 * 8192
# Devices this build runs on (mps, xpu, meta, ... are PyTorch devices, but the pipeline is
# written and tested for these two: pinned memory, autocast, cuDNN).
DEVICE_PATTERN = re.compile(r"(cpu|cuda)(:[0-9]+)?")


def _key(default, help: str):  # noqa: A002, ANN001, ANN202 (a dataclass field with its help text)
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class R21DSettings:
    """What the extractor computes and how; every value is checked in ``__post_init__``."""

    model_name: str = _key("r2plus1d_18_16_kinetics", " | ".join(MODEL_ZOO))
    stack_size: Optional[int] = _key(None, "frames per window (null: the model's default)")
    step_size: Optional[int] = _key(None, "frames between window starts (null: the model's default)")
    extraction_fps: Optional[float] = _key(None, "re-encode to this fps with ffmpeg first (null: keep the video's fps)")
    device: str = _key("cuda:0", "cuda:0, cuda:1, cpu, ... (cpu with a warning when CUDA is absent)")
    tmp_path: str = _key("./tmp", "folder for re-encoded videos")
    keep_tmp_files: bool = _key(False, "keep the re-encoded videos")
    show_pred: bool = _key(False, "print the top-5 Kinetics-400 classes of every window")
    batch_size: Optional[int] = _key(
        None, "clips per forward pass: windows x crops (null: the device's fastest: the fewest "
              "windows of 16 frames in all on a CPU, 16 clips on a GPU; speed and memory, not results)")
    crops: str = _key("center", "center (N, 512) | five | ten (N, crops, 512): torchvision's five_crop/ten_crop order")
    precision: str = _key("fp32", "fp32 (default, reference numbers) | bf16 | fp16")
    checkpoint_path: Optional[str] = _key(None, "local weights file in the upstream format (offline use)")
    random_weights: bool = _key(False, "random network, for tests and benchmarks only")
    decode_workers: Optional[int] = _key(None, "videos decoded ahead in parallel (null: automatic)")
    num_threads: Optional[int] = _key(
        None, "threads of the network on a CPU (null: every core this process may use)")
    apply_rotation: bool = _key(False, "rotate phone videos upright (the reference does not)")
    video_timeout_s: Optional[float] = _key(
        None, "give up on a video after this many seconds, with a reason (null: no limit)")
    max_frame_pixels: Optional[int] = _key(
        DEFAULT_MAX_FRAME_PIXELS, "refuse frames over width x height pixels (default 8192x8192; null: no limit)")

    decoder: str = _key("pyav", " | ".join(DECODERS) + " (pyav: as the reference, AV1 and cuts included; see docs/reference/preprocessing.md)")

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise SettingsError(f"decoder={self.decoder!r} is unknown; allowed: {', '.join(DECODERS)}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise SettingsError(
                f"device={self.device!r} cannot be used by this build; allowed: cpu, cuda, cuda:N (N = GPU index)")
        if self.model_name not in MODEL_ZOO:
            raise SettingsError(f"model_name={self.model_name!r} is unknown; allowed: {', '.join(MODEL_ZOO)}")
        for key in ("stack_size", "step_size", "batch_size", "num_threads"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise SettingsError(f"{key}={value} is invalid: it must be an integer >= 1 (or null for the default)")
        fps = self.extraction_fps
        if fps is not None and not (fps > 0 and math.isfinite(fps)):
            raise SettingsError(f"extraction_fps={fps} is invalid: it must be > 0, or null to keep the video's fps")
        if self.crops not in CROP_CHOICES:
            raise SettingsError(f"crops={self.crops!r} is unknown; allowed: {', '.join(CROP_CHOICES)}")
        if self.precision not in PRECISIONS:
            raise SettingsError(f"precision={self.precision!r} is unknown; allowed: {', '.join(PRECISIONS)}")
        if self.decode_workers is not None and self.decode_workers < 1:
            raise SettingsError(
                f"decode_workers={self.decode_workers} is invalid: it must be >= 1 (or null for automatic)")
        timeout = self.video_timeout_s
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise SettingsError(
                f"video_timeout_s={timeout} is invalid: it must be > 0 seconds, or null for no limit")
        if self.max_frame_pixels is not None and self.max_frame_pixels < 1:
            raise SettingsError(
                f"max_frame_pixels={self.max_frame_pixels} is invalid: it must be >= 1, or null for no limit")
        if self.random_weights and self.checkpoint_path is not None:
            raise SettingsError("random_weights=true and checkpoint_path are exclusive: drop one of them")

    @property
    def window(self) -> tuple[int, int]:
        """``(stack_size, step_size)`` with the model's defaults filled in."""
        record = MODEL_ZOO[self.model_name]
        return (record.stack_size if self.stack_size is None else self.stack_size,
                record.step_size if self.step_size is None else self.step_size)
